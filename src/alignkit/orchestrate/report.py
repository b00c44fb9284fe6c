"""The table and the self-contained HTML report of a self-rewarding run (``alignkit self-reward``).

Each iteration ``t = 1..T`` writes ``iter-t/summary.json``; ``iter-0/summary.json`` holds the evaluation
of the starting model (only ``iteration``, ``model``, ``eval``, ``mean_judge_score``, ``seconds``). The
functions here take those summaries as :class:`~alignkit.orchestrate.records.IterationSummary` records (parsed
once, by ``IterationSummary.from_json``). Any figure may be None when it was not measured (or is not finite):
it shows as "—" in the table, and a plot whose data are all missing is left out with a note.

The report (built from ``eval.html`` like ``eval.report``: inline CSS, matplotlib Agg PNGs as base64 data URIs,
all text HTML-escaped) holds the iteration table, four plots — judge score (and RM score) per iteration, win
rate against the previous iteration, response length next to the chosen/rejected lengths of the
training pairs (the length-bias check), pairs kept vs skipped by reason and the unparseable rate —
a "how to read this" paragraph, optional example pairs and the config.

Numbers in the table keep 3 significant digits (``3.10``, ``0.610``, ``44.0``); values of 100 or more
are rounded to an integer (``256``), counts are printed as integers.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

from alignkit.eval.html import e, figure, number, page, png, table
from alignkit.io_atomic import write_text
from alignkit.orchestrate.records import EvalFigures, ExamplePair, IterationSummary, JudgingStats, PairStats

MISSING = "—"

ITERATION_HEADERS = (
    "iteration",
    "pairs",
    "unparseable",  # judgments of the training candidates: count (% of judgments)
    "judge score [CI]",
    "RM score [CI]",
    "win rate vs prev [CI]",
    "judge agreement",
    "response words",  # mean, evaluation answers
    "train loss",
)

_EXTRA_CSS = """
table.examples td { max-width: 32em; }
.score { font-size: 0.85em; color: #555; margin-bottom: 0.3em; }
"""


# ------------------------------------------------------------------------------------------ values


def _eval(s: IterationSummary) -> EvalFigures:
    """The summary's evaluation (all None where it has none)."""
    return s.eval or EvalFigures()


def _pairs(s: IterationSummary) -> PairStats:
    return s.pairs or PairStats()


def _judging(s: IterationSummary) -> JudgingStats:
    return s.judging or JudgingStats()


def _ci(ci: list[float] | None) -> tuple[float, float] | None:
    """A finite ``(low, high)``, else None."""
    if ci is None:
        return None
    low, high = number(ci[0]), number(ci[1])
    return None if low is None or high is None else (low, high)


def _sorted(summaries: Sequence[IterationSummary]) -> list[IterationSummary]:
    """Summaries by iteration (ties in the given order)."""
    return sorted(summaries, key=lambda s: s.iteration)


def _judge_score(s: IterationSummary) -> float | None:
    v = number(_eval(s).mean_judge_score)
    return v if v is not None else number(s.mean_judge_score)


def _unparseable_rate(s: IterationSummary) -> float | None:
    return number(_judging(s).rate())


def _train_loss(s: IterationSummary) -> float | None:
    return number(s.train.train_loss) if s.train is not None else None


# ------------------------------------------------------------------------------------------ table


def fmt_number(x: float | None) -> str:
    """3 significant digits (``3.10``, ``0.610``), integers from 100 up, "—" for None."""
    if x is None:
        return MISSING
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:#.3g}"


def _fmt_count(x: float | None) -> str:
    if x is None:
        return MISSING
    return str(int(x)) if float(x).is_integer() else fmt_number(x)


def _fmt_with_ci(value: float | None, ci: tuple[float, float] | None) -> str:
    if value is None:
        return MISSING
    if ci is None:
        return fmt_number(value)
    return f"{fmt_number(value)} [{fmt_number(ci[0])}, {fmt_number(ci[1])}]"


def _fmt_unparseable(s: IterationSummary) -> str:
    count, rate = number(_judging(s).unparseable), _unparseable_rate(s)
    if count is None and rate is None:
        return MISSING
    if rate is None:
        return _fmt_count(count)
    pct = f"{fmt_number(100 * rate)}%"
    return pct if count is None else f"{_fmt_count(count)} ({pct})"


def iteration_table_rows(summaries: Sequence[IterationSummary]) -> tuple[list[str], list[list[str]]]:
    """Header and one row of display strings per iteration, sorted by iteration ("—" where missing).

    Columns: iteration, pairs, unparseable judgments (count and %), mean judge score [CI], mean RM
    score [CI], win rate vs previous [CI] ("—" for iteration 0), judge agreement, mean response words,
    train loss.
    """
    rows = []
    for s in _sorted(summaries):
        ev = _eval(s)
        win = None if s.iteration == 0 else number(ev.win_rate_vs_previous)
        rows.append(
            [
                str(s.iteration),
                _fmt_count(number(_pairs(s).pairs)),
                _fmt_unparseable(s),
                _fmt_with_ci(_judge_score(s), _ci(ev.judge_score_ci)),
                _fmt_with_ci(number(ev.mean_reward), _ci(ev.reward_ci)),
                _fmt_with_ci(win, _ci(ev.win_rate_ci)),
                fmt_number(number(ev.judge_agreement)),
                fmt_number(number(ev.mean_response_words)),
                fmt_number(_train_loss(s)),
            ]
        )
    return list(ITERATION_HEADERS), rows


def print_iteration_table(summaries: Sequence[IterationSummary], console=None) -> None:
    """The iteration table (``iteration_table_rows``) printed with rich."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    # a log file or pipe gets rich's 80 columns, which wraps every cell: give it the table's own width
    console = console or Console(width=None if Console().is_terminal else 160)
    headers, rows = iteration_table_rows(summaries)
    table = Table(
        title=f"Self-rewarding run: {len(rows)} iterations",
        caption="CI: 95% intervals; unparseable: judgments of the training candidates",
        box=box.SIMPLE_HEAD,
    )
    for i, h in enumerate(headers):
        # headers wrap to their column's widest value, so the values set the table's width
        width = max([8, *(len(r[i]) for r in rows)])
        header = "\n".join(textwrap.wrap(h, width, break_long_words=False))
        table.add_column(header, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


# ------------------------------------------------------------------------------------------ plots

Series = tuple[list[int], list[float]]  # (iterations, values), only the iterations that have a value


Value = Callable[[IterationSummary], float | None]


def _series(summaries: Sequence[IterationSummary], value: Value, *, skip_zero: bool = False) -> Series:
    xs, ys = [], []
    for s in summaries:
        v = number(value(s))
        if v is None or (skip_zero and s.iteration == 0):
            continue
        xs.append(s.iteration)
        ys.append(v)
    return xs, ys


def _yerr(
    summaries: Sequence[IterationSummary],
    xs: list[int],
    ys: list[float],
    ci_of: Callable[[EvalFigures], list[float] | None],
) -> list[list[float]]:
    """Asymmetric error bars ``[below, above]`` from each iteration's CI (``ci_of(its eval)``; 0 where there is none)."""
    by_it = {s.iteration: s for s in summaries}
    below, above = [], []
    for x, y in zip(xs, ys):
        ci = _ci(ci_of(_eval(by_it[x])))
        below.append(max(0.0, y - ci[0]) if ci else 0.0)
        above.append(max(0.0, ci[1] - y) if ci else 0.0)
    return [below, above]


def _iteration_axis(ax, xs: Sequence[int]) -> None:
    ax.set_xticks(sorted(set(xs)))
    ax.set_xlabel("iteration")
    ax.grid(alpha=0.3)
    ax.set_axisbelow(True)


def score_plot(summaries: Sequence[IterationSummary]) -> str | None:
    """Mean judge score per iteration with CI error bars; mean RM score in a second panel when present."""
    summaries = _sorted(summaries)
    judge = _series(summaries, _judge_score)
    reward = _series(summaries, lambda s: _eval(s).mean_reward)
    panels = [(name, series) for name, series in (("judge", judge), ("reward", reward)) if series[0]]
    if not panels:
        return None
    fig = figure(4.8 * len(panels), 3.6)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, (xs, ys)) in zip(axes, panels):
        ci_of = (lambda ev: ev.judge_score_ci) if name == "judge" else (lambda ev: ev.reward_ci)
        color = "#4c72b0" if name == "judge" else "#55a868"
        ax.errorbar(xs, ys, yerr=_yerr(summaries, xs, ys, ci_of), fmt="o-", capsize=5, color=color)
        ax.set_ylabel("mean judge score (95% CI)" if name == "judge" else "mean RM score (95% CI)")
        ax.set_title("Judge score per iteration" if name == "judge" else "Reward-model score per iteration")
        _iteration_axis(ax, xs)
    return png(fig, "mean judge score and reward-model score per iteration")


def win_rate_plot(summaries: Sequence[IterationSummary]) -> str | None:
    """Win rate against the previous iteration, with CI error bars, around a dashed 0.5 line."""
    summaries = _sorted(summaries)
    xs, ys = _series(summaries, lambda s: _eval(s).win_rate_vs_previous, skip_zero=True)
    if not xs:
        return None
    fig = figure(max(4.8, 0.6 * len(xs) + 3), 3.6)
    ax = fig.add_subplot()
    yerr = _yerr(summaries, xs, ys, lambda ev: ev.win_rate_ci)
    ax.errorbar(xs, ys, yerr=yerr, fmt="o-", capsize=5, color="#dd8452")
    ax.axhline(0.5, color="#888", linestyle="--", linewidth=0.8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("win rate vs previous (95% CI)")
    ax.set_title("Win rate against the previous iteration")
    _iteration_axis(ax, xs)
    return png(fig, "win rate against the previous iteration")


def length_plot(summaries: Sequence[IterationSummary]) -> str | None:
    """Mean response words per iteration next to the mean chosen / rejected words of the training pairs."""
    summaries = _sorted(summaries)
    values: tuple[tuple[str, Value, str, str], ...] = (
        ("evaluation responses", lambda s: _eval(s).mean_response_words, "o-", "#4c72b0"),
        ("chosen (training pairs)", lambda s: _pairs(s).mean_chosen_words, "s--", "#55a868"),
        ("rejected (training pairs)", lambda s: _pairs(s).mean_rejected_words, "v--", "#c44e52"),
    )
    lines = [(label, _series(summaries, value), fmt, color) for label, value, fmt, color in values]
    lines = [line for line in lines if line[1][0]]
    if not lines:
        return None
    fig = figure(5.6, 3.6)
    ax = fig.add_subplot()
    for label, (xs, ys), fmt, color in lines:
        ax.plot(xs, ys, fmt, color=color, label=label)
    ax.set_ylabel("mean words")
    ax.set_title("Response length and training-pair lengths")
    ax.legend(fontsize="small")
    _iteration_axis(ax, [x for _, (xs, _), _, _ in lines for x in xs])
    return png(fig, "mean response length and chosen/rejected lengths per iteration")


def _skip_keys(summaries: Sequence[IterationSummary]) -> list[str]:
    """The skip reasons (``PairStats.SKIP_REASONS``, in that order) some summary has a count for."""
    return [k for k in PairStats.SKIP_REASONS if any(getattr(_pairs(s), k) is not None for s in summaries)]


def pairs_plot(summaries: Sequence[IterationSummary]) -> str | None:
    """Pairs kept and skipped (stacked by reason) per iteration, and the unparseable judgment rate."""
    summaries = _sorted(summaries)
    reasons = _skip_keys(summaries)
    stacks: dict[int, list[float]] = {}  # iteration -> [kept, *skipped by reason]
    for s in summaries:
        pairs = _pairs(s)
        values = [number(pairs.pairs), *(number(getattr(pairs, k)) for k in reasons)]
        if any(v is not None for v in values):
            stacks[s.iteration] = [v or 0.0 for v in values]
    rate = _series(summaries, _unparseable_rate)
    n_panels = bool(stacks) + bool(rate[0])
    if not n_panels:
        return None
    fig = figure(4.8 * n_panels, 3.6)
    axes = list(fig.subplots(1, n_panels, squeeze=False)[0])
    if stacks:
        ax = axes.pop(0)
        xs = sorted(stacks)
        labels = ["kept", *(f"skipped: {k.removeprefix('skipped_').replace('_', ' ')}" for k in reasons)]
        colors = ["#4c72b0", "#dd8452", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"]
        bottom = [0.0] * len(xs)
        for j, label in enumerate(labels):
            heights = [stacks[x][j] for x in xs]
            ax.bar(xs, heights, bottom=bottom, label=label, color=colors[j % len(colors)])
            bottom = [b + h for b, h in zip(bottom, heights)]
        ax.set_ylabel("pairs")
        ax.set_title("Pairs kept and skipped")
        ax.legend(fontsize="small")
        _iteration_axis(ax, xs)
    if rate[0]:
        ax = axes.pop(0)
        xs, ys = rate
        ax.plot(xs, [100 * y for y in ys], "o-", color="#c44e52")
        ax.set_ylim(0, max(1.0, 1.15 * 100 * max(ys)))
        ax.set_ylabel("unparseable judgments (%)")
        ax.set_title("Unparseable judgment rate")
        _iteration_axis(ax, xs)
    return png(fig, "pairs kept and skipped, and unparseable judgment rate per iteration")


# (title, drawing function, note when there is nothing to draw)
PLOTS: tuple[tuple[str, Callable[[Sequence[IterationSummary]], str | None], str], ...] = (
    ("Judge score and reward-model score", score_plot, "No judge or reward-model scores recorded."),
    ("Win rate against the previous iteration", win_rate_plot, "No win rates against the previous iteration recorded."),
    ("Length-bias check", length_plot, "No response or training-pair lengths recorded."),
    ("Pairs and unparseable judgments", pairs_plot, "No pair counts or unparseable judgment rates recorded."),
)


# ------------------------------------------------------------------------------------------ html


def _table_html(summaries: Sequence[IterationSummary]) -> str:
    return table(*iteration_table_rows(summaries))


def _answer_cell(text: str, score: float | None) -> str:
    v = number(score)
    head = "" if v is None else f'<div class="score">score {e(fmt_number(v))}</div>'
    return f"<td>{head}<pre>{e(text)}</pre></td>"


def _examples_html(examples: Sequence[ExamplePair]) -> str:
    rows = [
        f"<tr><td>{e(ex.iteration)}</td><td><pre>{e(ex.prompt)}</pre></td>"
        f"{_answer_cell(ex.chosen, ex.score_chosen)}"
        f"{_answer_cell(ex.rejected, ex.score_rejected)}</tr>"
        for ex in examples
    ]
    head = "<tr><th>iteration</th><th>prompt</th><th>chosen</th><th>rejected</th></tr>"
    return f'<table class="examples">{head}{"".join(rows)}</table>'


_HOW_TO_READ = (
    "The judge score is the model grading itself; the reward-model (RM) score and the win rate against the "
    "previous iteration are the outside checks. Judge scores rising while the RM score or the win rate do not "
    "is the sign of judge hacking: the model learns what its judge likes rather than better answers. A win rate "
    "whose interval lies above the dashed 0.5 line means the iteration beat the one before it. Chosen answers "
    "much longer than rejected ones is length bias: training on those pairs teaches the model to write more, "
    "which shows up as a rising mean response length. A high unparseable rate means many judgments were "
    "thrown away, so the pairs rest on fewer scores. Judge agreement is how often the judge's preference "
    "matches the reward model's on the same pairs."
)


def render_report_html(
    summaries: Sequence[IterationSummary],
    *,
    title: str = "Self-rewarding run",
    config_yaml: str | None = None,
    examples: Sequence[ExamplePair] | None = None,
) -> str:
    """The report as one self-contained HTML string (see the module doc)."""
    ordered = _sorted(summaries)
    iterations = [s.iteration for s in ordered]
    modes = sorted({s.mode for s in ordered if s.mode is not None})
    intro = f"{len(ordered)} summaries"
    if iterations:
        intro += f", iterations {min(iterations)}–{max(iterations)}"
    if modes:
        intro += f"; mode: {', '.join(modes)}"
    plots = []
    for heading, draw, note in PLOTS:
        img = draw(ordered)
        plots.append(f"<h3>{e(heading)}</h3>" + (img if img is not None else f'<p class="note">{e(note)}</p>'))
    examples_html = f"<h2>Examples</h2>\n{_examples_html(examples)}" if examples else ""
    config_html = f"<h2>Config</h2>\n<pre>{e(config_yaml)}</pre>" if config_yaml is not None else ""
    body = f"""<p>{e(intro)}.</p>
<h2>Iterations</h2>
{_table_html(ordered)}
<p class="note">CI: 95% intervals as recorded by the run. Win rate: against the previous iteration's model.
Unparseable: judgments of the training candidates whose score could not be read. Response words: mean
length of the evaluation answers.</p>
<h2>Plots</h2>
{"".join(plots)}
<h2>How to read this</h2>
<p>{e(_HOW_TO_READ)}</p>
{examples_html}
{config_html}"""
    return page(title, body, extra_css=_EXTRA_CSS)


def write_report_html(path: str | Path, summaries: Sequence[IterationSummary], **kwargs) -> Path:
    """Write the report to ``path`` atomically (a temp file beside it, then ``os.replace``); returns it."""
    return write_text(path, render_report_html(summaries, **kwargs), mode=0o644)  # a report is meant to be read
