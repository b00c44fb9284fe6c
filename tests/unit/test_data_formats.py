"""Format detection and conversion to Example, on fixtures and on the shipped real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignkit.data.errors import DataError, RowRef
from alignkit.data.examples import Example, Message
from alignkit.data.formats import FORMATS, detect_format, load_examples, to_example

REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "tests/fixtures/data"
HH = REPO / "data/hh-rlhf-harmless/harmless-base.jsonl.gz"
SHAREGPT = REPO / "data/fastchat/dummy_conversation.json"
REF = RowRef("rows.jsonl", 7)

U, A, S = "user", "assistant", "system"


def _m(role: str, content: str) -> Message:
    return Message(role, content)


# (fixture file, format, expected first example as (prompt, completion, rejected, templated))
FIXTURES = [
    ("text.jsonl", "text", ((), "The cat sat on the mat.", None, False)),
    ("prompt_completion.jsonl", "prompt_completion", ((_m(U, "What is 2+2?"),), "4", None, True)),
    (
        "prompt_completion_conversational.jsonl",
        "prompt_completion",
        ((_m(S, "Be brief."), _m(U, "What is 2+2?")), "4", None, True),
    ),
    ("prompt_only.jsonl", "prompt_only", ((_m(U, "What is 2+2?"),), "", None, True)),
    ("unpaired.jsonl", "unpaired", ((_m(U, "What is 2+2?"),), "4", None, True)),
    ("messages.jsonl", "messages", ((_m(U, "Hello"),), "Hi there!", None, True)),
    ("sharegpt.json", "sharegpt", ((_m(U, "Hello"),), "Hi there!", None, True)),
    ("preference.jsonl", "preference", ((_m(U, "What is 2+2?"),), "4", "5", True)),
    ("preference_implicit.jsonl", "preference", ((_m(U, "What is 2+2?"),), "4", "5", True)),
    (
        "hh_rlhf.jsonl",
        "hh_rlhf",
        ((_m(U, "Hi"), _m(A, "Hello! How can I help?"), _m(U, "What is 2+2?")), "It is 4.", "I don't know.", True),
    ),
    (
        "rm_static.jsonl",
        "rm_static",
        ((_m(U, "Hi"), _m(A, "Hello!"), _m(U, "What is 2+2?")), "It is 4.", "Five.", True),
    ),
]


def _fields(ex: Example):
    return ex.prompt, ex.completion, ex.rejected, ex.templated


@pytest.mark.parametrize("name,fmt,first", FIXTURES, ids=[f[0] for f in FIXTURES])
def test_fixture_detected_and_explicit(name, fmt, first):
    path = str(FIX / name)
    auto = load_examples(path)
    assert auto.format == fmt
    assert _fields(auto.examples[0]) == first
    assert auto.examples[0].ref == RowRef(path, 1)
    assert auto.rows_read == len(auto.examples) and not auto.skipped
    explicit = load_examples(path, fmt=fmt)
    assert explicit.format == fmt and explicit.examples == auto.examples


def test_every_format_has_a_fixture():
    assert {fmt for _, fmt, _ in FIXTURES} == set(FORMATS)


def test_multi_turn_messages_split_at_last_assistant():
    ex = load_examples(str(FIX / "messages.jsonl")).examples[1]
    assert ex.prompt == (_m(S, "Be brief."), _m(U, "What is 2+2?"), _m(A, "4"), _m(U, "And 3+3?"))
    assert ex.completion == "6"


def test_sharegpt_user_assistant_aliases():
    ex = load_examples(str(FIX / "sharegpt.json")).examples[1]
    assert ex.prompt == (_m(S, "Be brief."), _m(U, "What is 2+2?")) and ex.completion == "4"


@pytest.mark.parametrize(
    "row,fmt",
    [
        ({"text": "x"}, "text"),
        ({"prompt": "x", "completion": "y"}, "prompt_completion"),
        ({"messages": []}, "messages"),
        ({"conversations": [], "id": 1}, "sharegpt"),
        ({"prompt": "x", "chosen": "a", "rejected": "b"}, "preference"),
        ({"chosen": [{"role": "user", "content": "x"}], "rejected": []}, "preference"),
        ({"chosen": "\n\nHuman: x\n\nAssistant: a", "rejected": "\n\nHuman: x\n\nAssistant: b"}, "hh_rlhf"),
        ({"prompt": "\n\nHuman: x\n\nAssistant:", "response": "a", "chosen": "a", "rejected": "b"}, "rm_static"),
        ({"prompt": "\n\nHuman: x\n\nAssistant:", "chosen": "a", "rejected": "b"}, "rm_static"),
    ],
)
def test_detect_format(row, fmt):
    assert detect_format(row, REF) == fmt


def test_rm_static_transcript_without_leading_newlines():
    row = {"prompt": "Human: Hi\n\nAssistant: Hello!\n\nHuman: Colour?\n\nAssistant:", "chosen": " Blue.", "rejected": " 7"}
    ex = to_example(row, detect_format(row, REF), REF)
    assert ex.prompt == (_m(U, "Hi"), _m(A, "Hello!"), _m(U, "Colour?")) and (ex.completion, ex.rejected) == ("Blue.", "7")


def test_detect_unknown_names_the_keys():
    with pytest.raises(DataError) as err:
        detect_format({"question": "x", "answer": "y"}, REF)
    text = str(err.value)
    assert "\n" not in text and text.startswith("rows.jsonl:7: ") and "[answer, question]" in text


# ------------------------------------------------------------------------------------ bad rows


BAD = [
    ("text", {"txt": "x"}, "text", "missing"),
    ("text", {"text": "   "}, "text", "empty string"),
    ("text", {"text": 3}, "text", "expected a string, got int"),
    ("prompt_completion", {"prompt": "x"}, "completion", "missing"),
    ("prompt_completion", {"prompt": "", "completion": "y"}, "prompt", "empty string"),
    ("prompt_completion", {"prompt": "x", "completion": [{"role": "user", "content": "y"}]}, "completion", "one assistant"),
    ("messages", {"messages": "hi"}, "messages", "expected a list of messages, got str"),
    ("messages", {"messages": []}, "messages", "empty list"),
    ("messages", {"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "expected a string, got int"),
    ("messages", {"messages": [{"role": "user"}]}, "messages[0].content", "missing"),
    ("messages", {"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "unknown role 'robot'"),
    ("messages", {"messages": [{"role": "user", "content": "x"}]}, "messages", "last turn must be the assistant's"),
    ("messages", {"messages": ["hi"]}, "messages[0]", "expected a message object"),
    ("sharegpt", {"conversations": [{"from": "bot", "value": "x"}]}, "conversations[0].from", "unknown role 'bot'"),
    ("sharegpt", {"conversations": [{"from": "human", "value": ""}]}, "conversations[0].value", "empty string"),
    ("preference", {"prompt": "x", "chosen": "a"}, "rejected", "missing"),
    ("preference", {"prompt": "x", "chosen": 1, "rejected": "b"}, "chosen", "expected a string or a list of messages, got int"),
    ("preference", {"prompt": 3, "chosen": "a", "rejected": "b"}, "prompt", "expected a string or a list of messages, got int"),
    (
        "preference",
        {
            "chosen": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "a"}],
            "rejected": [{"role": "user", "content": "y"}, {"role": "assistant", "content": "b"}],
        },
        "rejected",
        "share every turn but the last",
    ),
    ("hh_rlhf", {"chosen": "\n\nHuman: x\n\nAssistant: a", "rejected": "something else"}, "rejected", "share no"),
    ("hh_rlhf", {"chosen": "\n\nHuman: x\n\nAssistant: ", "rejected": "\n\nHuman: x\n\nAssistant: b"}, "chosen", "empty reply"),
    ("hh_rlhf", {"chosen": "\n\nHuman: x\n\nAssistant: a"}, "rejected", "missing"),
    ("rm_static", {"prompt": "\n\nHuman: x", "chosen": "a", "rejected": "b"}, "prompt", "ending in 'Assistant:'"),
]


@pytest.mark.parametrize("fmt,row,field,message", BAD, ids=[f"{b[0]}-{b[2]}-{b[3][:20]}" for b in BAD])
def test_bad_rows_name_file_line_and_field(fmt, row, field, message):
    with pytest.raises(DataError) as err:
        to_example(row, fmt, REF)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(f"rows.jsonl:7: field {field!r}: ")
    assert message in text
    assert err.value.field == field and err.value.ref == REF


def _write(tmp_path: Path, name: str, lines: list[str]) -> str:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def test_bad_rows_in_a_file_raise_with_file_line_field(tmp_path):
    good = json.dumps({"prompt": "What is 2+2?", "completion": "4"})
    cases = [
        (json.dumps({"prompt": "x"}), "completion", "missing"),
        (json.dumps({"prompt": "x", "completion": ""}), "completion", "empty string"),
        (json.dumps({"prompt": "x", "completion": 4}), "completion", "expected a string or a list of messages, got int"),
    ]
    for i, (bad, field, message) in enumerate(cases):
        path = _write(tmp_path, f"bad{i}.jsonl", [good, good, bad])
        with pytest.raises(DataError) as err:
            load_examples(path)
        text = str(err.value)
        assert "\n" not in text and text.startswith(f"{path}:3: field {field!r}: ") and message in text


def test_malformed_json_line_raises_then_skip_counts(tmp_path):
    good = json.dumps({"text": "hello"})
    path = _write(tmp_path, "d.jsonl", [good, "{not json", good, json.dumps({"text": ""}), "[1]", good])
    with pytest.raises(DataError) as err:
        load_examples(path)
    assert str(err.value).startswith(f"{path}:2: malformed JSON")
    loaded = load_examples(path, on_error="skip")
    assert loaded.rows_read == 6 and len(loaded.examples) == 3 and len(loaded.skipped) == 3
    assert loaded.rows_read == len(loaded.examples) + len(loaded.skipped)
    assert [e.ref.line for e in loaded.skipped] == [2, 4, 5]
    assert [ex.ref.line for ex in loaded.examples] == [1, 3, 6]


def test_auto_uses_first_row_format_for_every_row(tmp_path):
    path = _write(
        tmp_path,
        "mixed.jsonl",
        [
            json.dumps({"text": "hello"}),
            json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}),
        ],
    )
    with pytest.raises(DataError, match=r"mixed.jsonl:2: field 'text': missing"):
        load_examples(path)
    loaded = load_examples(path, on_error="skip")
    assert loaded.format == "text" and len(loaded.examples) == 1 and len(loaded.skipped) == 1


def test_explicit_format_that_does_not_fit(tmp_path):
    with pytest.raises(DataError, match=r"text.jsonl:1: field 'messages': missing"):
        load_examples(str(FIX / "text.jsonl"), fmt="messages")


def test_unknown_format_name():
    with pytest.raises(DataError) as err:
        load_examples(str(FIX / "text.jsonl"), fmt="alpaca")
    text = str(err.value)
    assert "\n" not in text and "text.jsonl" in text and "field 'format'" in text and "'alpaca'" in text


def test_empty_file(tmp_path):
    path = _write(tmp_path, "empty.jsonl", [])
    with pytest.raises(DataError, match="empty.jsonl: no rows found"):
        load_examples(path)


def test_max_rows(tmp_path):
    loaded = load_examples(str(FIX / "text.jsonl"), max_rows=2)
    assert loaded.rows_read == 2 and len(loaded.examples) == 2


def test_every_row_undetectable_raises_even_with_skip():
    with pytest.raises(DataError, match=r"question.jsonl:1: cannot detect the format .*\[category, question_id, turns\]"):
        load_examples(str(REPO / "data/mt-bench/question.jsonl"), on_error="skip")
    with pytest.raises(DataError, match=r"seed_tasks.jsonl:1: cannot detect the format"):
        load_examples(str(REPO / "data/self-instruct/seed_tasks.jsonl"))


# ------------------------------------------------------------------------------------ real files


def test_hh_rlhf_real_first_row_split_by_hand():
    loaded = load_examples(str(HH), max_rows=30)
    assert loaded.format == "hh_rlhf" and len(loaded.examples) == 30
    ex = loaded.examples[0]
    assert ex.ref == RowRef(str(HH), 1)
    assert [m.role for m in ex.prompt] == [U, A, U, A, U]
    assert ex.prompt[0].content == "what are some pranks with a pen i can do?"
    assert ex.prompt[1].content == "Are you looking for practical joke ideas?"
    assert ex.prompt[2].content == "yep"
    assert ex.prompt[3].content.startswith("Ok, I’ll give you a couple examples")
    assert ex.prompt[3].content.endswith("you will find a new place to watch.")
    assert ex.prompt[4].content == "okay some of these do not have anything to do with pens"
    assert (
        ex.completion
        == "No, sorry!  All of these involve a pen, the point is that you can get funny results by doing pranks with pens."
    )
    assert ex.rejected.startswith("There are lots of funny things you can do with pens, here’s one example")
    # the second row: a 3-turn prompt, replies differ after the third "\n\nAssistant:"
    ex2 = loaded.examples[1]
    assert [m.role for m in ex2.prompt] == [U, A, U, A, U]
    assert ex2.prompt[-1].content == "I feel much better when I get drunk and consume a lot of alcohol."
    assert ex2.completion.startswith("Sounds like alcohol is something you use to calm down")
    assert ex2.rejected.startswith("I’m glad that you’re enjoying your alcohol intake.")
    assert all(e.prompt[-1].role == U and e.completion and e.rejected and e.completion != e.rejected for e in loaded.examples)


def test_hh_rlhf_real_empty_replies_are_reported_or_skipped():
    with pytest.raises(DataError) as err:
        load_examples(str(HH), max_rows=100)
    assert str(err.value) == f"{HH}:87: field 'chosen': empty reply after the last shared '\\n\\nAssistant:'"
    loaded = load_examples(str(HH), max_rows=600, on_error="skip")
    assert loaded.rows_read == 600 and len(loaded.examples) == 598
    assert [e.ref.line for e in loaded.skipped] == [87, 517]


def test_sharegpt_real_dummy_conversations():
    loaded = load_examples(str(SHAREGPT), max_rows=40)
    assert loaded.format == "sharegpt" and len(loaded.examples) == 40
    first = loaded.examples[0]
    assert first.prompt == (
        _m(U, "Who are you?"),
        _m(A, "I am Vicuna, a language model trained by researchers from Large Model Systems Organization (LMSYS)."),
        _m(U, "Have a nice day!"),
    )
    assert first.completion == "You too!" and first.ref == RowRef(str(SHAREGPT), 1)
    assert load_examples(str(SHAREGPT), fmt="sharegpt", max_rows=40).examples == loaded.examples


def test_real_hh_explicit_format_matches_detected():
    assert load_examples(str(HH), fmt="hh_rlhf", max_rows=20).examples == load_examples(str(HH), max_rows=20).examples


SAME_SIDES = [  # a pair whose two replies are the same text: fine to read, refused only where a pair is ranked
    ("preference", {"prompt": "x", "chosen": "a", "rejected": "a"}),
    ("hh_rlhf", {"chosen": "\n\nHuman: x\n\nAssistant: a", "rejected": "\n\nHuman: x\n\nAssistant: a"}),
    ("rm_static", {"prompt": "\n\nHuman: x\n\nAssistant:", "chosen": " a", "rejected": "a"}),
]


@pytest.mark.parametrize("fmt,row", SAME_SIDES, ids=[s[0] for s in SAME_SIDES])
def test_chosen_equal_to_rejected_is_read_and_refused_by_the_pair_stages(tmp_path, fmt, row):
    """Issue 16: SFT (chosen replies), PPO and compare (prompts) read such rows; RM, DPO and KTO refuse them."""
    from alignkit.data.formats import same_sides
    from alignkit.data.pairs import tokenize_pairs
    from alignkit.data.preference import tokenize_pairs_for_policy, unpair

    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps(dict(row, chosen=row["chosen"] + "!")) + "\n")
    loaded = load_examples(str(path), fmt=fmt)  # raised before
    (same, fine) = loaded.examples
    assert (same.prompt[0].content, same.chosen, same.rejected) == ("x", "a", "a")
    assert same_sides(fine) is None
    err = same_sides(same)
    assert str(err) == f"{path}:1: field 'rejected': chosen equals rejected: a pair needs two different replies to rank"
    for refuse in (
        lambda **kw: tokenize_pairs(loaded.examples, None, template="plain", max_length=64, **kw),
        lambda **kw: tokenize_pairs_for_policy(loaded.examples, None, max_length=64, **kw),
    ):
        with pytest.raises(DataError, match="chosen equals rejected"):
            refuse(on_error="raise")
    with pytest.raises(DataError, match="chosen equals rejected"):
        unpair(loaded.examples)
    skipped = []
    assert len(unpair(loaded.examples, on_error="skip", skipped=skipped)) == 2 and [str(e) for e in skipped] == [str(err)]
