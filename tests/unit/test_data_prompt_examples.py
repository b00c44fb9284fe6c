"""load_prompt_examples: the one prompt loader of PPO/GRPO, self-reward and compare; each caller keeps its wording."""

import pytest

from alignkit.data.errors import DataError
from alignkit.data.formats import load_prompt_examples


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def test_rows_without_a_prompt_name_file_line_and_the_callers_message(tmp_path):
    src = _write(tmp_path / "t.jsonl", ['{"text": "hello"}'])
    with pytest.raises(DataError) as e:
        load_prompt_examples(src)
    assert str(e.value) == f"{src}:1: a 'text' row has no prompt (give prompts, chats or pairs)"
    with pytest.raises(DataError) as e:
        load_prompt_examples(src, no_prompt="no prompt: RL stages need chat prompts", no_prompt_field="prompt")
    assert str(e.value) == f"{src}:1: field 'prompt': no prompt: RL stages need chat prompts"


def test_skipped_rows_are_reported_to_log_and_options_reach_load_examples(tmp_path):
    src = _write(
        tmp_path / "p.jsonl",
        ['{"prompt": "hi", "completion": "a"}', "not json", '{"prompt": "yo", "completion": "b"}', '{"prompt": "z"}'],
    )
    lines = []
    loaded = load_prompt_examples(src, on_error="skip", max_rows=3, log=lines.append)
    assert loaded.rows_read == 3 and len(loaded.examples) == 2 and len(loaded.skipped) == 1
    assert lines == [f"  skipped: {src}:2: malformed JSON: Expecting value (column 1)"]
    with pytest.raises(DataError, match=r"p\.jsonl:2: malformed JSON"):
        load_prompt_examples(src)


def test_the_three_callers_keep_their_messages(tmp_path):
    from alignkit.algorithms.rollouts import load_prompts
    from alignkit.eval.compare import load_prompts as compare_prompts
    from alignkit.orchestrate.self_reward import load_prompt_set

    src = _write(tmp_path / "t.jsonl", ['{"text": "hello"}'])
    with pytest.raises(DataError) as e:
        load_prompts(src, None, fmt="auto", split="train", max_length=8, on_error="raise", max_rows=None, log=print)
    assert str(e.value) == (
        f"{src}:1: field 'prompt': no prompt: RL stages need chat prompts (rows with a prompt or a user turn)"
    )
    with pytest.raises(DataError) as e:
        load_prompt_set(src, fmt="auto", split="train", on_error="raise", max_rows=None, log=print)
    assert str(e.value) == f"{src}:1: a 'text' row has no prompt (give prompts, chats or pairs)"
    with pytest.raises(DataError) as e:
        compare_prompts(src)
    assert str(e.value) == f"{src}:1: a 'text' row has no prompt (give prompts, chats or pairs)"
