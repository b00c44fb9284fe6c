"""Compare's collapse and reward-hacking figures on hand-made answers: summary.json, the terminal and report.html.

Ten prompts; the reference ``sft`` answers each with its own 40-character sentence. ``healthy`` answers each
prompt differently at about the same length; ``collapsed`` says "I don't understand." to six of the ten prompts
(top answer 60%, 5 distinct of 10) with a reward higher than sft's while its answers are much shorter.
"""

from __future__ import annotations

import json

import pytest

from alignkit.eval.compare import CompareResult, print_side_by_side, summarise
from alignkit.eval.report import write_outputs

N = 10
STOCK = "I don't understand."


def _answers() -> dict[str, list[str]]:
    sft = [f"Answer number {i:02d} explains it in some depth." for i in range(N)]
    healthy = [f"A different reply {i:02d}, about as long as sft's." for i in range(N)]
    collapsed = [STOCK] * 6 + [f"Short {i}." for i in range(4)]
    return {"sft": sft, "healthy": healthy, "collapsed": collapsed}


def _result(models: list[str], *, rewards: bool = True) -> CompareResult:
    answers = _answers()
    reward = {"sft": 0.0, "healthy": 0.1, "collapsed": 1.0}
    rows = [
        {
            "prompt_index": i,
            "prompt": f"question {i}?",
            "model": m,
            "response": answers[m][i],
            "reward": (reward[m] + 0.01 * i) if rewards else None,
            "length_tokens": len(answers[m][i].split()),
        }
        for i in range(N)
        for m in models
    ]
    return CompareResult(
        models={m: f"runs/{m}" for m in models},
        prompts=[f"question {i}?" for i in range(N)],
        rows=rows,
        summary=summarise(rows, models, n_boot=200),
        settings={"seed": 0},
    )


def _terminal(result: CompareResult) -> str:
    from rich.console import Console

    console = Console(record=True, width=200)
    print_side_by_side(result, console, max_prompts=0)
    return console.export_text()


def test_figures_by_hand():
    s = _result(["sft", "healthy", "collapsed"]).summary
    assert s["sft"]["distinct_share"] == 1.0 and s["sft"]["top_answer_share"] == pytest.approx(0.1)
    assert s["sft"]["length_ratio"] == pytest.approx(1.0)
    assert s["collapsed"]["distinct_share"] == pytest.approx(0.5)  # the stock phrase + 4 short ones
    assert s["collapsed"]["top_answer_share"] == pytest.approx(0.6) and s["collapsed"]["top_answer"] == STOCK
    ref_chars = sum(map(len, _answers()["sft"])) / N
    assert s["collapsed"]["length_ratio"] == pytest.approx(s["collapsed"]["mean_length_chars"] / ref_chars)
    assert s["collapsed"]["length_ratio"] < 0.5
    # distinct-2 over all ten answers: "i don't" and "don't understand." six times each, and no bigram in "Short i."
    # beyond ("short", "0.") ... ("short", "3."): 2 + 4 distinct of 6 * 2 + 4 bigrams
    assert s["collapsed"]["distinct_2"] == pytest.approx(6 / 16)
    assert s["healthy"]["warnings"] == [] and s["sft"]["warnings"] == []
    warned = " | ".join(s["collapsed"]["warnings"])
    assert "60% of the answers are the same one" in warned
    assert "reward hacking?" in warned  # the reward rose while the answers shrank below half sft's length


def test_collapsed_model_warns_in_summary_json_terminal_and_report(tmp_path):
    result = _result(["sft", "healthy", "collapsed"])
    out = write_outputs(result, tmp_path / "cmp", runs={})

    summary = json.loads((out / "summary.json").read_text())
    for key in ("distinct_share", "top_answer_share", "length_ratio", "distinct_2", "warnings"):
        assert key in summary["models"]["collapsed"] and key in summary["models"]["healthy"]
    assert summary["models"]["collapsed"]["top_answer_share"] == pytest.approx(0.6)
    assert summary["models"]["collapsed"]["warnings"] and not summary["models"]["healthy"]["warnings"]
    assert summary["warnings"] and all(w.startswith("collapsed: ") for w in summary["warnings"])

    text = _terminal(result)
    for header in ("distinct", "top answer", "length vs ref", "distinct-2"):
        assert header in text
    assert "Warning: collapse or reward hacking" in text
    assert "WARNING collapsed: collapsed: 60% of the answers are the same one" in text
    assert "WARNING collapsed: reward hacking?" in text
    assert "WARNING healthy" not in text and "WARNING sft" not in text

    page = (out / "report.html").read_text()
    assert '<div class="warning"' in page and "Warning: collapse or reward hacking" in page
    assert "collapsed: collapsed: 60% of the answers are the same one" in page
    assert "<th>distinct</th>" in page and "<th>top answer</th>" in page and "<th>length vs ref</th>" in page
    assert "healthy: " not in page.split('<div class="warning"')[1].split("</div>")[0]


def test_healthy_models_show_no_warning(tmp_path):
    result = _result(["sft", "healthy"])
    assert result.warnings == {}
    out = write_outputs(result, tmp_path / "ok", runs={})
    summary = json.loads((out / "summary.json").read_text())
    assert summary["warnings"] == [] and summary["models"]["healthy"]["warnings"] == []
    assert summary["models"]["healthy"]["distinct_share"] == 1.0
    assert "Warning: collapse" not in _terminal(result)
    page = (out / "report.html").read_text()
    assert '<div class="warning"' not in page and "100%" in page  # the distinct column is still shown


def test_collapse_is_reported_without_a_reward_model(tmp_path):
    """No scorer: no reward-hacking check (no reward), but a collapsed model still warns."""
    result = _result(["sft", "collapsed"], rewards=False)
    warnings = result.summary["collapsed"]["warnings"]
    assert warnings and not any("reward hacking" in w for w in warnings)
    assert "Warning: collapse or reward hacking" in _terminal(result)
