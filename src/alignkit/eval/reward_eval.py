"""``alignkit rm-eval``: pairwise accuracy, margin and calibration of a saved reward model on a file."""

from __future__ import annotations

from alignkit.eval.reward_metrics import pairwise_metrics


def evaluate_reward_model(
    model_dir: str,
    data: str,
    *,
    fmt: str = "auto",
    split: str = "train",
    on_error: str = "raise",
    max_rows: int | None = None,
    batch_size: int = 16,
    out: str | None = None,
    device: str = "cpu",
) -> dict:
    """Score every pair of ``data`` with the reward model at ``model_dir``; ``out`` gets one JSON line per pair.

    Returns ``pairwise_metrics`` (accuracy with ties as half, n, ties, mean_margin, ece, per-subset
    accuracy when rows have a ``subset``) plus ``skipped`` and ``truncated`` counts.
    """
    from alignkit.data.formats import load_examples
    from alignkit.models.reward import RewardModel

    rm = RewardModel.load(model_dir, device=device)
    loaded = load_examples(data, fmt=fmt, split=split, on_error=on_error, max_rows=max_rows)
    from alignkit.data.errors import DataError

    pairs = [ex for ex in loaded.examples if ex.is_preference]
    if len(pairs) != len(loaded.examples):
        bad = next(ex for ex in loaded.examples if not ex.is_preference)
        raise DataError(bad.ref, "not a preference pair (no rejected response)", field="rejected")
    if not pairs:
        raise DataError(data, "no usable preference pairs")
    prompts = [ex.prompt for ex in pairs]
    enc = rm.encode(prompts + prompts, [ex.chosen for ex in pairs] + [ex.rejected for ex in pairs])
    scores = rm.score_encoded(enc, batch_size=batch_size)
    chosen, rejected = scores[: len(pairs)], scores[len(pairs) :]
    c_cut, r_cut = enc.truncated[: len(pairs)], enc.truncated[len(pairs) :]
    result = pairwise_metrics(chosen, rejected, subsets=[ex.meta.get("subset") for ex in pairs])
    result["skipped"] = len(loaded.skipped)
    result["truncated"] = sum(a or b for a, b in zip(c_cut, r_cut))
    if out:
        from alignkit.io_atomic import write_jsonl

        rows = []
        for ex, c, r in zip(pairs, chosen, rejected):
            row = {"ref": str(ex.ref), "chosen_score": c, "rejected_score": r, "margin": c - r}
            if "subset" in ex.meta:
                row["subset"] = ex.meta["subset"]
            rows.append(row)
        write_jsonl(out, rows)
    return result


def score_rows(model_dir: str, data: str, *, batch_size: int = 16, device: str = "cpu") -> list[dict]:
    """Score ``{prompt, response}`` rows (prompt: string or message list); returns rows with a ``score``."""
    from alignkit.data.errors import DataError
    from alignkit.data.sources import read_rows
    from alignkit.models.reward import RewardModel

    rows, prompts, responses = [], [], []
    for row, ref in read_rows(data):
        for key in ("prompt", "response"):
            if key not in row or row[key] is None:
                raise DataError(ref, "missing (expected prompt/response rows)", field=key)
        if not isinstance(row["response"], str):
            raise DataError(ref, f"expected a string, got {type(row['response']).__name__}", field="response")
        if not isinstance(row["prompt"], (str, list)):
            raise DataError(ref, "expected a string or a list of messages", field="prompt")
        rows.append(row)
        prompts.append(row["prompt"])
        responses.append(row["response"])
    rm = RewardModel.load(model_dir, device=device)
    scores = rm.score(prompts, responses, batch_size=batch_size)
    return [{**row, "score": s} for row, s in zip(rows, scores)]
