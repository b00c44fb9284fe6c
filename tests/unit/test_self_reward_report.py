"""The iteration table and HTML report of a self-rewarding run, from hand-made summaries (no model), parsed
into records as the run's ``summary.json`` files are."""

import base64
import copy
import io
import json
import subprocess
import sys

import pytest
from rich.console import Console

from alignkit.orchestrate.records import ExamplePair, IterationSummary
from alignkit.orchestrate.report import (
    ITERATION_HEADERS,
    MISSING,
    fmt_number,
    iteration_table_rows,
    length_plot,
    pairs_plot,
    print_iteration_table,
    render_report_html,
    score_plot,
    win_rate_plot,
    write_report_html,
)

ITER0 = {
    "iteration": 0,
    "model": "base",
    "eval": {"prompts": 32, "mean_judge_score": 2.5, "judge_score_ci": [2.2, 2.8], "unparseable": 0, "mean_response_words": 30.0},
    "mean_judge_score": 2.5,
    "seconds": 10.0,
}

ITER1 = {
    "iteration": 1,
    "mode": "dpo",
    "model": "runs/x/iter-1/train/final",
    "prompts": {"total": 64, "from_dataset": 48, "self_instruct_new": 16, "duplicates_removed": 3},
    "candidates": {"prompts": 64, "samples": 256, "unique": 250, "duplicates_removed": 6},
    "judging": {"type": "self", "judgments": 250, "unparseable": 12, "unparseable_rate": 0.048},
    "pairs": {
        "pairs": 50,
        "skipped_few_scores": 4,
        "skipped_small_gap": 8,
        "skipped_length_ratio": 2,
        "mean_gap": 1.7,
        "mean_chosen_words": 41.0,
        "mean_rejected_words": 35.2,
    },
    "train": {"steps": 12, "train_loss": 0.61, "seconds": 30.1, "model": "runs/x/iter-1/train/final"},
    "eval": {
        "prompts": 32,
        "mean_judge_score": 3.1,
        "judge_score_ci": [2.8, 3.4],
        "unparseable": 1,
        "mean_reward": 0.42,
        "reward_ci": [0.3, 0.5],
        "win_rate_vs_previous": 0.61,
        "win_rate_ci": [0.52, 0.70],
        "judge_agreement": 0.58,
        "agreement_pairs": 40,
        "mean_response_words": 44.0,
    },
    "mean_judge_score": 3.1,
    "seconds": 120.0,
}

# best-of-n, no reward model: RM score, agreement and train loss missing; unparseable rate derived from counts
ITER2 = {
    "iteration": 2,
    "mode": "best-of-n",
    "model": "runs/x/iter-2/model",
    "judging": {"type": "self", "judgments": 200, "unparseable": 10},
    "pairs": {"pairs": 40, "skipped_few_scores": 1, "skipped_small_gap": None, "mean_chosen_words": None},
    "train": None,
    "eval": {
        "prompts": 32,
        "mean_judge_score": 3.456,
        "judge_score_ci": None,
        "mean_reward": None,
        "win_rate_vs_previous": 0.5,
        "win_rate_ci": [0.4, 0.6],
        "judge_agreement": None,
        "mean_response_words": 123.4,
    },
    "mean_judge_score": 3.456,
}


def _parse(*summaries: dict) -> list[IterationSummary]:
    return [IterationSummary.from_dict(s) for s in summaries]


SUMMARIES = _parse(ITER2, ITER0, ITER1)  # out of order on purpose


def _row(rows, iteration):
    return dict(zip(ITERATION_HEADERS, next(r for r in rows if r[0] == str(iteration))))


def test_fmt_number():
    assert fmt_number(None) == MISSING
    assert fmt_number(3.1) == "3.10"
    assert fmt_number(0.61) == "0.610"
    assert fmt_number(44.0) == "44.0"
    assert fmt_number(123.4) == "123"
    assert fmt_number(0.0) == "0.00"


def test_table_rows():
    headers, rows = iteration_table_rows(SUMMARIES)
    assert headers == list(ITERATION_HEADERS)
    assert [r[0] for r in rows] == ["0", "1", "2"]  # sorted by iteration
    assert all(len(r) == len(headers) for r in rows)

    r0 = _row(rows, 0)
    assert r0["judge score [CI]"] == "2.50 [2.20, 2.80]"
    assert r0["response words"] == "30.0"
    for col in ("pairs", "unparseable", "RM score [CI]", "win rate vs prev [CI]", "judge agreement", "train loss"):
        assert r0[col] == MISSING, col

    r1 = _row(rows, 1)
    assert r1["pairs"] == "50"
    assert r1["unparseable"] == "12 (4.80%)"
    assert r1["judge score [CI]"] == "3.10 [2.80, 3.40]"
    assert r1["RM score [CI]"] == "0.420 [0.300, 0.500]"
    assert r1["win rate vs prev [CI]"] == "0.610 [0.520, 0.700]"
    assert r1["judge agreement"] == "0.580"
    assert r1["response words"] == "44.0"
    assert r1["train loss"] == "0.610"

    r2 = _row(rows, 2)
    assert r2["unparseable"] == "10 (5.00%)"  # rate from the counts
    assert r2["judge score [CI]"] == "3.46"  # no CI recorded
    assert r2["RM score [CI]"] == MISSING
    assert r2["judge agreement"] == MISSING
    assert r2["train loss"] == MISSING
    assert r2["response words"] == "123"


def test_table_survives_empty_and_odd_summaries():
    headers, rows = iteration_table_rows(_parse({"iteration": 3, "model": "m"}, {"iteration": 1, "model": "m", "eval": None}))
    assert [r[0] for r in rows] == ["1", "3"]
    assert all(c == MISSING for r in rows for c in r[1:])
    assert iteration_table_rows([]) == (list(ITERATION_HEADERS), [])


def test_print_iteration_table():
    buf = io.StringIO()
    print_iteration_table(SUMMARIES, console=Console(file=buf, width=250))
    out = buf.getvalue()
    assert "3.10 [2.80, 3.40]" in out and "12 (4.80%)" in out and MISSING in out


def _imgs(html):
    return html.count('<img alt="')


def test_report_has_table_values_and_one_image_per_plot():
    html = render_report_html(SUMMARIES, title="run <x>", config_yaml="iterations: 2\njudge: {type: self}\n")
    assert html.startswith("<!DOCTYPE html>")
    for cell in ("3.10 [2.80, 3.40]", "12 (4.80%)", "0.610 [0.520, 0.700]", "0.420 [0.300, 0.500]", MISSING):
        assert cell in html
    assert _imgs(html) == 4
    assert "run &lt;x&gt;" in html and "run <x>" not in html
    assert "<pre>iterations: 2\njudge: {type: self}\n</pre>" in html
    assert "How to read this" in html and "judge hacking" in html and "length bias" in html
    assert "http://" not in html and "https://" not in html  # self-contained
    # the plots are real PNGs
    src = html.split('src="data:image/png;base64,', 1)[1].split('"', 1)[0]
    assert base64.b64decode(src).startswith(b"\x89PNG")


def test_plots_with_all_missing_data_are_left_out():
    only0 = _parse(ITER0)  # judge score and response length, nothing else
    assert score_plot(only0) is not None and length_plot(only0) is not None
    assert win_rate_plot(only0) is None and pairs_plot(only0) is None
    html = render_report_html(only0)
    assert _imgs(html) == 2
    assert "No win rates against the previous iteration recorded." in html
    assert "No pair counts or unparseable judgment rates recorded." in html

    bare = _parse({"iteration": 0, "model": "m"}, {"iteration": 1, "model": "m", "eval": {}})
    html = render_report_html(bare)
    assert _imgs(html) == 0
    assert html.count('<p class="note">No ') == 4


def test_iteration0_win_rate_is_ignored():
    it0 = copy.deepcopy(ITER0)
    it0["eval"]["win_rate_vs_previous"] = 0.9
    assert win_rate_plot(_parse(it0)) is None
    assert _row(iteration_table_rows(_parse(it0))[1], 0)["win rate vs prev [CI]"] == MISSING


def test_examples_are_escaped():
    examples = [
        ExamplePair(
            iteration=1,
            prompt="<script>alert(1)</script>",
            chosen="a & b",
            rejected="<b>no</b>",
            score_chosen=4.5,
            score_rejected=None,
        )
    ]
    html = render_report_html(SUMMARIES, examples=examples)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "a &amp; b" in html and "&lt;b&gt;no&lt;/b&gt;" in html
    assert "score 4.50" in html
    assert "Examples" in html
    assert "<h2>Examples</h2>" not in render_report_html(SUMMARIES)
    assert "<h2>Config</h2>" not in render_report_html(SUMMARIES)


def test_write_report_html_is_atomic(tmp_path):
    out = tmp_path / "run" / "report.html"
    path = write_report_html(out, SUMMARIES, title="t", examples=[])
    assert path == out and out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]
    write_report_html(out, _parse(ITER0))  # overwrite in place
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]
    assert _imgs(out.read_text(encoding="utf-8")) == 2


def test_write_report_html_leaves_no_temp_file_on_error(tmp_path, monkeypatch):
    import alignkit.io_atomic as mod

    def fail(src, dst):
        raise OSError("disk full")

    out = tmp_path / "report.html"
    monkeypatch.setattr(mod.os, "replace", fail)
    try:
        write_report_html(out, SUMMARIES)
    except OSError:
        pass
    else:
        raise AssertionError("the error was swallowed")
    assert list(tmp_path.iterdir()) == []


def test_import_is_light():
    code = (
        "import sys, alignkit.orchestrate.report; "
        "print([m for m in ('matplotlib', 'rich', 'torch', 'transformers') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_examples_read_pairs_files_with_text_and_message_list_prompts(tmp_path):
    from alignkit.orchestrate.self_reward import _examples

    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}, {"role": "user", "content": "ok?"}]
    pair = {"chosen": "c", "rejected": "r", "score_chosen": 4.0, "score_rejected": 1.0}
    (tmp_path / "iter-1").mkdir()
    (tmp_path / "iter-1" / "pairs.jsonl").write_text(
        json.dumps({"prompt_id": 0, "prompt": "p0", **pair}) + "\n" + json.dumps({"prompt_id": 1, "prompt": msgs, **pair}) + "\n"
    )
    (tmp_path / "iter-2").mkdir()  # best-of-n: no chosen/rejected, not an example
    (tmp_path / "iter-2" / "pairs.jsonl").write_text(json.dumps({"prompt": "p", "response": "a"}) + "\n")
    examples = _examples(tmp_path, 3)
    assert [(ex.iteration, ex.prompt) for ex in examples] == [(1, "p0"), (1, json.dumps(msgs))]
    html = render_report_html(SUMMARIES, examples=examples)
    assert "[{&quot;role&quot;: &quot;user&quot;, &quot;content&quot;: &quot;hi&quot;}" in html
    with pytest.raises(ValueError):
        ExamplePair(iteration=1, prompt=msgs, chosen="c", rejected="r")
