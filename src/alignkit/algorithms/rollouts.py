"""What the RL stages (PPO, GRPO) share around their rollouts: prompts from any data source, and prompt +
response sequences collated padding-free for a forward pass."""

from __future__ import annotations


def load_prompts(source, tokenizer, *, fmt, split, max_length, on_error, max_rows, log):
    """Prompts of a data source (or a list of ``DataSource``; the part before the completion of each row), as
    message lists and token ids through the chat template with the generation prompt; a prompt over
    ``max_length`` tokens keeps its end. Returns ``(messages, ids, stats, source path of each prompt, reference of each prompt)``, the reference being
    the row's completion (its chosen reply for a preference row; None when the row has none)."""
    from alignkit.data.chat import encode_chat
    from alignkit.data.errors import DataError
    from alignkit.data.examples import as_messages
    from alignkit.data.formats import load_prompt_examples
    from alignkit.data.mixture import describe

    loaded = load_prompt_examples(
        source,
        fmt=fmt,
        split=split,
        on_error=on_error,
        max_rows=max_rows,
        log=log,
        no_prompt="no prompt: RL stages need chat prompts (rows with a prompt or a user turn)",
        no_prompt_field="prompt",
    )
    source = describe(source)
    messages, ids, truncated = [], [], 0
    for ex in loaded.examples:
        m = as_messages(ex.prompt)
        x = encode_chat(tokenizer, m, add_generation_prompt=True)  # content never becomes control tokens
        if len(x) > max_length:
            x, truncated = x[-max_length:], truncated + 1
        messages.append(m)
        ids.append(x)
    log(
        f"{source}: format {loaded.format}, {loaded.rows_read} rows read, {len(loaded.skipped)} skipped, "
        f"{truncated} prompts cut to their last {max_length} tokens -> {len(ids)} prompts"
    )
    if len(ids) < 2:
        raise DataError(source, f"RL stages need at least 2 prompts, found {len(ids)}")
    stats = {
        "rows_read": loaded.rows_read,
        "skipped": len(loaded.skipped),
        "truncated": truncated,
        "prompts": len(ids),
        "format": loaded.format,
    }
    return messages, ids, stats, [ex.ref.source for ex in loaded.examples], [ex.completion or None for ex in loaded.examples]


def collate_rollout(prompt_ids, response_ids, *, pad_token_id: int, max_row_tokens: int):
    """prompt + response sequences, only the response learned, packed padding-free; ``(batch, width)``."""
    from alignkit.data.collate import collate_packed
    from alignkit.data.tokenize import TokenizedExample

    seqs = [TokenizedExample(list(p) + list(r), [0] * len(p) + [1] * len(r), None) for p, r in zip(prompt_ids, response_ids)]
    width = max(len(r) for r in response_ids)
    return collate_packed(seqs, max_row_tokens=max_row_tokens, pad_token_id=pad_token_id), width


def eval_figures(rows: list[tuple], reference_lengths: list[int] | None, names: list[str] = ()) -> tuple[dict, list[int]]:
    """The held-out eval of an RL stage from its answers, gathered from every process: ``rows`` are
    ``(reward, [reward of each term in names], length in tokens, ended with EOS, text)``. Returns the figures
    (mean reward, per term, length, share cut at max_new_tokens, and the diversity figures of ``alignkit
    compare``, the length relative to ``reference_lengths``: the starting policy's answers) and the lengths."""
    from alignkit.eval.diversity import diversity

    n = len(rows)
    lengths = [r[2] for r in rows]
    div = diversity([r[4] for r in rows], lengths, reference_lengths)
    figures = {
        "eval_reward": sum(r[0] for r in rows) / n,
        **{f"eval_reward/{name}": sum(r[1][j] for r in rows) / n for j, name in enumerate(names)},
        "eval_response_length": sum(lengths) / n,
        "eval_no_eos_fraction": 1 - sum(r[3] for r in rows) / n,
        "eval_distinct_share": div.distinct_share,
        "eval_top_answer_share": div.top_answer_share,
        "eval_distinct_2": div.distinct_2,
        "eval_length_ratio": div.length_ratio,
        "eval_n": n,
    }
    return figures, lengths


def eval_line(label: str, e: dict) -> str:
    """One log line of ``eval_figures``."""
    ratio = "n/a" if e["eval_length_ratio"] is None else f"{e['eval_length_ratio']:.2f}x"
    per = ", ".join(f"{k.split('/', 1)[1]} {v:.3f}" for k, v in e.items() if k.startswith("eval_reward/"))
    return (
        f"{label}: mean reward {e['eval_reward']:.4f}{f' ({per})' if per else ''} on {e['eval_n']} held-out prompts; "
        f"{e['eval_distinct_share']:.0%} distinct answers, top answer {e['eval_top_answer_share']:.0%}, "
        f"distinct-2 {e['eval_distinct_2']:.2f}, length {ratio} the starting policy's"
    )
