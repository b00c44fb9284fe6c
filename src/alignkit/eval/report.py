"""One self-contained HTML report of a comparison (built from ``eval.html``): no external CSS, scripts or
fonts; plots are PNGs drawn with matplotlib's Agg canvas (no pyplot, no global backend switch) and embedded
as base64.

Sections: a red warning box naming every model that looks collapsed or reward-hacked (when any does), the
summary table (rewards, win rates, lengths, and the diversity figures of ``eval.diversity``), a bar plot of mean reward per model with bootstrap CI error bars (mean
length when there is no reward model), win rates against the first model, the settings, the prompts
and every model's answer side by side (all text HTML-escaped), and the training curves of each run
found (``metrics.jsonl``: reward-like, KL and loss keys against ``step``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from alignkit.eval.compare import (
    REPORT_FILE,
    SUMMARY_HEADERS,
    WARNINGS_TITLE,
    CompareResult,
    display_prompt,
    summary_table_rows,
    write_results,
)
from alignkit.eval.html import e, figure, number, page, png, table, warning_box

# Curve panels: a metrics key goes to the first group one of whose words it contains
# (words: the key split at "/", "_", "." and "-"), e.g. "objective/kl" -> KL, "rewards/margins" -> reward.
CURVE_GROUPS: tuple[tuple[str, frozenset[str]], ...] = (
    ("loss", frozenset({"loss", "nll"})),
    ("KL", frozenset({"kl"})),
    ("reward / score / accuracy", frozenset({"reward", "rewards", "score", "scores", "accuracy", "margin", "margins"})),
)
# Counts and rates that share a word with a group are not curves of it (loss_tokens, eval_n, pairs_per_second).
_NOT_CURVES = frozenset({"tokens", "token", "n", "count", "counts", "seen", "per", "second", "seconds", "ties"})

# ------------------------------------------------------------------------------------------ plots


def reward_bar_plot(result: CompareResult) -> str:
    """Mean reward per model with its bootstrap CI as error bars (mean answer length without rewards)."""
    names = result.names
    fig = figure(max(4.0, 1.2 * len(names) + 2), 3.6)
    ax = fig.add_subplot()
    if result.has_rewards:
        means = [result.summary[n]["mean_reward"] for n in names]
        lows = [m - result.summary[n]["reward_ci_low"] for n, m in zip(names, means)]
        highs = [result.summary[n]["reward_ci_high"] - m for n, m in zip(names, means)]
        ax.bar(names, means, yerr=[lows, highs], capsize=6, color="#4c72b0")
        ax.axhline(0, color="#888", linewidth=0.8)
        ax.set_ylabel("mean reward (95% bootstrap CI)")
        ax.set_title("Mean reward per model")
    else:
        ax.bar(names, [result.summary[n]["mean_length_tokens"] for n in names], color="#4c72b0")
        ax.set_ylabel("mean answer length (tokens)")
        ax.set_title("Mean answer length per model (no reward model)")
    ax.set_xlabel("model")
    return png(fig, "mean reward per model")


def win_rate_plot(result: CompareResult) -> str | None:
    """Each model's win rate against the first, with its 95% CI, around the 0.5 line; None if nothing to plot."""
    others = [n for n in result.names[1:] if result.summary[n]["win_rate_vs_first"] is not None]
    if not others:
        return None
    fig = figure(6.0, 0.6 * len(others) + 1.6)
    ax = fig.add_subplot()
    rates = [result.summary[n]["win_rate_vs_first"] for n in others]
    err = [
        [r - result.summary[n]["win_rate_ci_low"] for n, r in zip(others, rates)],
        [result.summary[n]["win_rate_ci_high"] - r for n, r in zip(others, rates)],
    ]
    ax.errorbar(rates, others, xerr=err, fmt="o", capsize=6, color="#dd8452")
    ax.axvline(0.5, color="#888", linestyle="--", linewidth=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.5, len(others) - 0.5)
    ax.set_xlabel(f"win rate vs {result.reference} (ties = 1/2, 95% bootstrap CI)")
    ax.set_ylabel("model")
    ax.set_title(f"Win rate against {result.reference}")
    return png(fig, "win rate against the first model")


def curve_group(key: str) -> str | None:
    """The panel a metrics key belongs to (``CURVE_GROUPS``), or None if it is not plotted."""
    words = set(re.split(r"[/_.\-\s]+", key.lower()))
    if words & _NOT_CURVES:
        return None
    for group, names in CURVE_GROUPS:
        if words & names:
            return group
    return None


def read_curves(metrics_path: str | Path) -> dict[str, dict[str, tuple[list[float], list[float]]]]:
    """``{group: {key: (steps, values)}}`` of the plottable numeric keys of a ``metrics.jsonl``.

    Rows without a numeric ``step`` and lines that do not parse (a run killed mid-write) are skipped;
    non-finite values (logged as strings) are left out of a curve.
    """
    curves: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for line in Path(metrics_path).read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(row, dict):
            continue
        step = number(row.get("step"))
        if step is None:
            continue
        for key, value in row.items():
            v = number(value)
            group = curve_group(key) if key != "step" else None
            if v is None or group is None:
                continue
            steps, values = curves.setdefault(group, {}).setdefault(key, ([], []))
            steps.append(step)
            values.append(v)
    return {g: curves[g] for g, _ in CURVE_GROUPS if g in curves}  # panels in a fixed order


def training_curves_plot(label: str, curves: dict[str, dict[str, tuple[list[float], list[float]]]]) -> str:
    """One figure per run: a panel per group (loss, KL, reward-like), each key a line against step."""
    fig = figure(4.6 * len(curves), 3.4)
    axes = fig.subplots(1, len(curves), squeeze=False)[0]
    for ax, (group, keys) in zip(axes, curves.items()):
        for key, (steps, values) in keys.items():
            ax.plot(steps, values, marker="o" if len(steps) < 20 else None, markersize=3, label=key)
        ax.set_xlabel("step")
        ax.set_ylabel(group)
        ax.set_title(group)
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    fig.suptitle(f"Training curves: {label}")
    return png(fig, f"training curves of {label}")


# ------------------------------------------------------------------------------------------ html


def _summary_html(result: CompareResult) -> str:
    return table(SUMMARY_HEADERS, summary_table_rows(result))


def _warnings_html(result: CompareResult) -> str:
    return warning_box(WARNINGS_TITLE, [f"{name}: {w}" for name, ws in result.warnings.items() for w in ws])


def _settings_html(result: CompareResult) -> str:
    rows = []
    for name, path in result.models.items():
        rows.append((f"model {name}", path))
    for key, value in result.settings.items():
        if key != "models":
            rows.append((key, json.dumps(value) if isinstance(value, dict) else value))
    return "<table>" + "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows) + "</table>"


def _side_by_side_html(result: CompareResult) -> str:
    names = result.names
    head = "<tr><th>#</th><th>prompt</th>" + "".join(f"<th>{e(n)}</th>" for n in names) + "</tr>"
    body = []
    for i, (prompt, cells) in enumerate(zip(result.prompts, result.by_prompt())):
        rewards = [cells[n]["reward"] for n in names if cells[n]["reward"] is not None]
        best = max(rewards) if len(rewards) > 1 and len(set(rewards)) > 1 else None
        tds = []
        for n in names:
            r = cells[n]
            reward = "" if r["reward"] is None else f'<div class="reward">reward {r["reward"]:+.3f}</div>'
            cls = ' class="best"' if best is not None and r["reward"] == best else ""
            tds.append(f"<td{cls}>{reward}<pre>{e(r['response'])}</pre></td>")
        body.append(f"<tr><td>{i + 1}</td><td><pre>{e(display_prompt(prompt))}</pre></td>{''.join(tds)}</tr>")
    return f'<table class="sxs">{head}{"".join(body)}</table>'


def _runs_html(runs: dict[str, Path]) -> str:
    by_path: dict[Path, list[str]] = {}
    for name, path in runs.items():
        by_path.setdefault(Path(path), []).append(name)
    if not by_path:
        return (
            '<p class="note">No training runs found (a model at RUN/final or RUN/checkpoints/step-N '
            "with RUN/metrics.jsonl, or --runs DIR).</p>"
        )
    parts = []
    for path, names in by_path.items():
        label = f"{', '.join(names)} ({path})"
        metrics = path / "metrics.jsonl"
        curves = read_curves(metrics) if metrics.is_file() else {}
        if not curves:
            parts.append(f'<p class="note">{e(label)}: no reward, KL or loss keys in {e(metrics)}; skipped.</p>')
            continue
        parts.append(f"<h3>{e(label)}</h3>{training_curves_plot(', '.join(names), curves)}")
    return "".join(parts)


def render_report_html(result: CompareResult, runs: dict[str, Path]) -> str:
    """The report as one HTML string (see the module doc)."""
    n = len(result.prompts)
    win = win_rate_plot(result)
    note = (
        "Win rate: per prompt 1 if the model's reward beats the first model's, 1/2 on a tie, 0 otherwise, averaged "
        "over prompts. Intervals: 95% percentile bootstrap over prompts "
        f"({e(result.settings.get('bootstrap', {}).get('n_boot', '?'))} resamples, seeded). "
        "Length: the answer re-encoded by each model's own tokenizer (tokens) / characters; length vs ref: mean "
        "characters / the reference's. Distinct: share of distinct answers (case and spacing ignored); top answer: "
        "share of the most frequent answer; distinct-2: distinct word bigrams / word bigrams over all answers. A model "
        "looks collapsed when its top answer is over 20% or fewer than 50% of its answers are distinct; a reward that "
        "rose while the answers fell below half the reference's length is flagged as possible reward hacking."
    )
    if not result.has_rewards:
        note = "No reward model was given: rewards and win rates are not computed. " + note
    body = f"""<p>{n} prompts, {len(result.names)} models; reference (first) model: <b>{e(result.reference)}</b>.</p>
{_warnings_html(result)}
<h2>Summary</h2>
{_summary_html(result)}
<p class="note">{note}</p>
{reward_bar_plot(result)}
{win or ""}
<h2>Settings</h2>
{_settings_html(result)}
<h2>Answers side by side</h2>
{_side_by_side_html(result)}
<h2>Training curves</h2>
{_runs_html(runs)}"""
    return page(f"alignkit compare: {', '.join(result.names)}", body)


def write_report_html(path: str | Path, result: CompareResult, runs: dict[str, Path] | None = None) -> Path:
    """Write the self-contained report to ``path``; returns it."""
    from alignkit.io_atomic import write_text

    return write_text(path, render_report_html(result, runs or {}))


def write_outputs(result: CompareResult, out_dir: str | Path, *, runs: dict[str, Path] | None = None) -> Path:
    """``out_dir``/compare.jsonl, summary.json (``compare.write_results``) and report.html.

    ``runs`` (``compare.find_runs``) adds the training curves of those runs to the report. Sets
    ``result.out_dir`` and returns it.
    """
    out = write_results(result, out_dir, runs=runs)
    write_report_html(out / REPORT_FILE, result, runs or {})
    return out


def compare_scorer(reward_model: str | None, reward_function: str | None, reward_kwargs: dict | None = None):
    """The scorer of a comparison and its label: a reward model directory, or a reward function (``file.py:fn`` /
    ``module:fn`` with ``reward_kwargs``), or neither (``(None, None)``: answers and lengths only)."""
    if reward_model:
        from alignkit.models.reward import RewardModel

        return RewardModel.load(reward_model), reward_model
    if reward_function:
        from alignkit.rl.rewards import RewardSource

        scorer = RewardSource(function=reward_function, kwargs=reward_kwargs or {})
        return scorer, scorer.name
    return None, None


def run_compare(
    models: dict[str, str],
    prompts_path: str,
    *,
    max_prompts: int | None,
    scorer=None,
    scorer_label: str | None = None,
    out: str | Path | None = None,
    extra_runs: list[str] | None = None,
    **generation,
) -> CompareResult:
    """What ``alignkit compare`` and a pipeline's ``compare`` section do: load the prompts of ``prompts_path`` (the
    first ``max_prompts``), generate every model's answers (``generation``: ``compare_models``' keywords), score
    them with ``scorer``, print the side-by-side table and, with ``out``, write compare.jsonl, summary.json and
    report.html (with the training curves of the models' runs and ``extra_runs``)."""
    from alignkit.eval.compare import compare_models, find_runs, load_prompts, print_side_by_side

    prompts = load_prompts(prompts_path, max_prompts=max_prompts)
    result = compare_models(models, prompts, scorer=scorer, scorer_label=scorer_label, **generation)
    print_side_by_side(result)
    if out is not None:
        written = write_outputs(result, out, runs=find_runs(models, extra=extra_runs or []))
        print(f"wrote {written}/compare.jsonl, summary.json, report.html", flush=True)
    return result
