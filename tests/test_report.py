"""reports/: frames, tables, exports and `harness report`, on hand-made and synthetic runs (fast tier)."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest

from cli.main import main
from harness.store import Run, load_run
from reports import data, export, plots, tables
from tests.fixtures.synthetic import ATTACKS, build_store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    runs_dir = tmp_path_factory.mktemp("report-store") / "runs"
    return runs_dir, build_store(runs_dir, n_large=200)


def _game(order: str, verdict, p=None, replies=None, reason=None) -> dict:
    raw = {"p": p} if p else {"replies": replies} if replies else {}
    return {"order": order, "verdict": verdict, "failure_reason": reason, "via": "x", "raw": raw}


def test_judge_prompts_map_verdicts_to_the_candidate_side_and_sort_by_regression():
    items = [
        {"item_id": "win", "outcome": 1.0, "games": [_game("candidate_first", "a"), _game("candidate_second", "b")]},
        {"item_id": "loss-sure", "outcome": 0.0, "games": [_game("candidate_first", "b", p={"a": .05, "b": .9, "tie": .05}),
                                                         _game("candidate_second", "a", p={"a": .9, "b": .05, "tie": .05})]},
        {"item_id": "loss-unsure", "outcome": 0.0, "games": [_game("candidate_first", "b", p={"a": .3, "b": .4, "tie": .3}),
                                                           _game("candidate_second", "a", p={"a": .4, "b": .3, "tie": .3})]},
        {"item_id": "invalid", "outcome": None, "games": [_game("candidate_first", None, reason="unparseable"),
                                                         _game("candidate_second", "tie", replies=["[[C]]"])]},
        {"item_id": "bare"},  # every optional key missing: still a row
    ]
    prompts = data.judge_prompts(Run(kind="judge", manifest={}, items=items))
    by_id = prompts.set_index("item_id")
    assert by_id.loc["win", "verdict_candidate_first"] == by_id.loc["win", "verdict_candidate_second"] == "candidate"
    assert by_id.loc["loss-sure", "verdict_candidate_second"] == "baseline"
    assert by_id.loc["loss-sure", "p_baseline"] == pytest.approx(0.9)
    assert by_id.loc["invalid", "verdict_candidate_first"] == "invalid: unparseable"
    assert by_id.loc["invalid", "rationale_candidate_second"] == "[[C]]"
    assert math.isnan(by_id.loc["bare", "outcome"])
    assert data.sort_by_regression(prompts)["item_id"].tolist() == ["loss-sure", "loss-unsure", "win", "bare", "invalid"]


def test_compare_results_read_either_candidate_key_convention():
    new = {"candidate": "m+a", "candidate_value": 0.4, "task": "t", "diff": {"value": -0.1, "lo": -0.2, "hi": 0.0}}
    old = {"candidate_ref": "m+a", "candidate": 0.4, "task": "t"}  # docs/run-format.md's duplicate-key shape
    df = data.compare_results(Run(kind="compare", manifest={}, aggregates={"results": [new, old]}))
    assert df["candidate"].tolist() == ["m+a", "m+a"]
    assert df["candidate_value"].tolist() == [0.4, 0.4]
    assert df.loc[0, "lo"] == -0.2 and math.isnan(df.loc[1, "diff"])


def test_filters_paginate_and_empty_store(tmp_path, store):
    assert data.runs_frame(tmp_path / "nothing").empty
    runs = data.runs_frame(store[0])
    assert len(runs) == 8
    assert data.filter_runs(runs, statuses=["failed"])["status"].tolist() == ["failed"]
    assert len(data.filter_runs(runs, model="lora-r16", kinds=["judge"])) == 1
    assert data.filter_runs(runs, since=pd.Timestamp.now().date() + pd.Timedelta(days=1)).empty
    page, n_pages = data.paginate(pd.DataFrame({"x": range(53)}), 9, 25)
    assert n_pages == 3 and page["x"].tolist() == [50, 51, 52]  # past the end: the last page


def test_training_manifests_and_losses_come_from_model_folders(store):
    runs = data.runs_frame(store[0])
    dirs = data.model_dirs([m for ms in runs["models"] for m in ms] + ["openai:gpt@http://x"])
    manifests = data.training_manifests(dirs)
    assert sorted(Path(d).name for d in manifests) == ["lora-r16", "lora-r8"]
    losses = data.loss_frame(next(iter(manifests.values())))
    assert set(losses["split"]) == {"train", "validation"} and losses["loss"].notna().all()
    assert data.loss_frame({}).empty


def test_tables_format_intervals_in_points_and_log_perplexity(store):
    compare = load_run(store[0], store[1]["compare"])
    summary = tables.summary_table(data.compare_results(compare))
    assert len(summary) == 4 and set(summary["verdict"]) <= {"pass", "fail"}
    acc = summary[summary["metric"] == "acc"].iloc[0]
    assert re.fullmatch(r"[+-]\d+\.\d\d \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\] pt", acc["difference [interval]"])
    assert acc["margin"] == "5.00 pt"  # the margin in the difference's unit, as `harness compare` prints it
    assert summary[summary["metric"] == "perplexity"]["margin"].iloc[0] == "0.05 logppl"
    assert tables.fmt_interval(float("nan"), 0, 0) == "—"
    assert tables.fmt_interval(0.56, 0.47, 0.65, scale=100, signed=False) == "56.0 [47.0, 65.0]"
    wins = tables.win_rate_table(data.win_rates(load_run(store[0], store[1]["judge"])))
    assert wins["level"].tolist() == ["95%"] and "/" in wins["W / T / L"].iloc[0]


def test_markdown_export_keeps_model_text_inert(store):
    runs_dir, ids = store
    compare = load_run(runs_dir, ids["compare"])
    md = export.export_run(compare, "markdown", [load_run(runs_dir, ids["judge"])])
    assert "## Forgetting by subject" in md and "## Win rate" in md and "## Checkpoint trend" in md
    # Outside fenced blocks no attack survives unescaped; inside, the fence is longer than any backtick run.
    outside = re.sub(r"(`{3,})text\n.*?\n\1", "", md, flags=re.S)
    for attack in ATTACKS:
        assert attack not in outside
    assert "````text\nSure! <script>alert(1)</script>" in md
    assert export.md_escape("a|b*c") == r"a\|b\*c"
    assert export.md_fence("x ```` y").startswith("`````text")


def test_html_export_escapes_everything_and_runs_no_script(store):
    runs_dir, ids = store
    html = export.export_run(load_run(runs_dir, ids["judge"]), "html")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<script" not in html.lower() and "<img src=x" not in html and "<a " not in html
    assert "default-src 'none'" in html
    with_plot = export.export_run(load_run(runs_dir, ids["compare"]), "html")
    assert "data:image/png;base64," in with_plot


def test_export_rejects_other_kinds_and_formats(store):
    runs_dir, ids = store
    with pytest.raises(Exception, match="supports compare and judge"):
        export.export_run(load_run(runs_dir, ids["eval_base"]), "markdown")
    with pytest.raises(Exception, match="choose markdown, html"):
        export.export_run(load_run(runs_dir, ids["compare"]), "pdf")


def test_cli_export_writes_the_file_and_errors_exit_2(store, tmp_path, monkeypatch, capsys):
    runs_dir, ids = store
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(runs_dir))
    out = tmp_path / "report.html"
    assert main(["report", "export", ids["compare"], "--format", "html", "--out", str(out)]) == 0
    text = out.read_text()
    assert "Largest regressions by prompt" in text  # judge source runs from the same store are included
    assert main(["report", "export", "no-such-run", "--out", str(out)]) == 2
    assert "not found" in capsys.readouterr().err


def test_report_argv_never_prompts_and_a_browser_opens_only_with_a_display(monkeypatch):
    from cli import report as cli

    argv = cli.streamlit_argv(port=8765, address="127.0.0.1")
    assert argv[1:4] == ["-m", "streamlit", "run"] and argv[4].endswith("app.py")
    pairs = dict(zip(argv[5::2], argv[6::2]))
    assert pairs == {"--server.address": "127.0.0.1", "--server.port": "8765", "--server.headless": "true",
                     "--browser.gatherUsageStats": "false"}
    monkeypatch.setattr(cli.sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert not cli.has_display()
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    assert cli.has_display()


def test_sigterm_stops_the_report_child_and_waits_for_it(store, monkeypatch, capsys):
    """SIGTERM to `harness report` ends its child before it returns (tests/test_report_cmd_slow.py does it
    with streamlit and a browser; here the child is a sleeping Python so the signal path runs fast)."""
    import os
    import signal
    import subprocess
    import sys
    import threading

    from cli import report as cli

    children = []
    real_popen = subprocess.Popen

    def popen(cmd, **kw):
        assert kw["stdin"] is subprocess.DEVNULL and kw["env"]["HARNESS_RUNS_DIR"] == str(store[0].resolve())
        children.append(real_popen([sys.executable, "-c", "import time; time.sleep(60)"], **kw))
        return children[-1]
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(store[0]))
    monkeypatch.setattr(cli.subprocess, "Popen", popen)
    opened = []
    monkeypatch.setattr(cli.webbrowser, "open", opened.append)
    monkeypatch.setattr(cli, "has_display", lambda: False)
    before = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        code = main(["report", "--port", "8765"])
    finally:
        timer.cancel()  # should main() return before the signal, it must not reach pytest itself
    assert code == 0
    assert children[0].poll() is not None  # reaped: nothing left listening
    assert "report on http://127.0.0.1:8765" in capsys.readouterr().out and opened == []
    assert signal.getsignal(signal.SIGTERM) is before  # pytest's own handling is back


def _results(**extra) -> pd.DataFrame:
    rows = [{"candidate": "tuned", "task": "mmlu", "metric": "acc", "scope": "task", "n": 400, "baseline": 0.5,
             "candidate_value": 0.49, "diff": {"value": -0.01, "lo": -0.03, "hi": 0.01, "confidence": 0.95},
             "margin": 0.05, "verdict": "pass", "p_holm": 0.4},
            {"candidate": "tuned", "task": "wiki", "metric": "token_perplexity", "scope": "task", "n": 40,
             "baseline": 20.0, "candidate_value": 20.2, "diff": {"value": 0.01, "lo": 0.0, "hi": 0.02},
             "margin": math.log(1.05), "verdict": "pass"}]
    return data.compare_results(Run(kind="compare", manifest={}, aggregates={"results": rows, **extra}))


def test_frames_hold_numbers_in_the_units_compare_prints():
    results = _results()
    summary = tables.summary_frame(results).set_index("task")
    assert summary.loc["mmlu", ["difference", "low", "high", "margin"]].tolist() == pytest.approx([-1, -3, 1, 5])
    assert summary.loc["mmlu", "unit"] == "pt" and summary.loc["wiki", "unit"] == "logppl"
    assert summary.loc["wiki", "margin"] == pytest.approx(math.log(1.05))
    assert all(summary[c].dtype.kind in "fiu" for c in ("difference", "low", "margin", "n", "level %", "p (Holm)"))
    ppl = tables.perplexity_frame(results).iloc[0]
    assert ppl["margin, ppl change %"] == pytest.approx(5.0)  # a 5% suite margin reads 5.0, not 0.049
    assert ppl["ppl change %"] == pytest.approx(math.expm1(0.01) * 100)
    shown = tables.formatted(tables.summary_frame(results))
    assert shown["difference"].tolist() == ["-1.00", "+0.01"] and shown["margin"].tolist() == ["5.00", "0.05"]
    assert shown["level %"].iloc[0] == "95%" and shown["level %"].iloc[1] == "—" and shown["n"].iloc[0] == "400"
    assert "0.0488 logppl (5.0% ppl)" == tables.perplexity_table(results)["margin"].iloc[0]


def test_numbers_sort_as_numbers_not_as_text(store):
    golden = data.golden_items(load_run(store[0], store[1]["eval_golden"]))
    chars = golden.sort_values("output chars")["output chars"].dropna().tolist()
    assert chars == sorted(chars) and chars[0] < 10 <= chars[-1]
    assert sorted(map(str, chars)) != list(map(str, chars))  # as strings the order would differ


def test_golden_items_carry_prompt_output_checks_and_result(store):
    golden = data.golden_items(load_run(store[0], store[1]["eval_golden"])).set_index("item_id")
    assert len(golden) == 16 and golden["result"].value_counts().to_dict() == {"pass": 8, "fail": 5, "unchecked": 2,
                                                                                "unscored": 1}
    capital = golden.loc["golden_smoke/2"]
    assert capital["prompt"] == "Name the capital of France." and capital["output"] == "It is Lyon."
    assert capital["result"] == "fail" and capital["failure_reasons"] == "missing 'Paris'"
    assert capital["check list"] == "must include: Paris" and capital["failed checks"] == 1 and capital["checks"] == 1
    assert "prompt longer than the context" in golden.loc["golden_json/15", "unscored_reason"]
    assert data.golden_items(load_run(store[0], store[1]["eval_base"])).empty  # multiple choice only
    assert data.check_text({"regex": "^a", "must_include": ["x", "y"]}) == "regex ^a; must include: x, y"


def test_stepped_trend_joins_each_training_runs_checkpoints_into_one_line():
    def row(cand, step, task="mmlu"):
        return {"candidate": cand, "step": step, "task": task, "metric": "acc", "diff": {"value": 0.0}}
    plain = data.trend_frame(Run(kind="compare", manifest={},
                                 aggregates={"trend": [row("m+a", None), row("m+b", None)]}))
    assert data.stepped_trend(plain).empty  # no checkpoints: nothing to draw
    one = data.stepped_trend(data.trend_frame(Run(kind="compare", manifest={}, aggregates={"trend": [
        row("m+out/checkpoint-200", 200), row("m+out/checkpoint-100", 100), row("m+out/checkpoint-100", 100, "ppl")]})))
    assert one["line"].tolist() == ["mmlu", "mmlu", "ppl"] and one["step"].tolist() == [100, 200, 100]
    two = data.stepped_trend(data.trend_frame(Run(kind="compare", manifest={}, aggregates={"trend": [
        row("m+r8/checkpoint-100", 100), row("m+r16/checkpoint-100", 100)]})))
    assert sorted(two["line"]) == ["m+r16/checkpoint-* · mmlu", "m+r8/checkpoint-* · mmlu"]


def test_plots_fit_the_axis_to_the_data_and_name_candidates_in_full():
    results = _results()
    acc = results[results["task"] == "mmlu"].assign(label="mmlu")
    spec = plots.interval_chart(acc, label="label", x_title="pt").to_dict()
    domain = spec["layer"][0]["encoding"]["x"]["scale"]["domain"]
    assert -4 < domain[0] < -3 and 1 < domain[1] < 2  # fitted to [-3, 1] and zero, not ±100
    assert spec["layer"][0]["encoding"]["color"]["legend"]["labelLimit"] == 0
    long = "a-candidate-with-a-rather-long-but-unique-name-that-must-not-be-cut"
    png = plots.interval_png(pd.concat([acc, acc.assign(candidate=long)]), label="label", title="t")
    assert png.startswith(b"\x89PNG")


def test_judge_html_export_has_one_heading_the_grades_and_the_reference_metrics(store):
    judge = load_run(store[0], store[1]["judge"])
    agg = {**judge.aggregates,
           "grades": {"candidate": {"mean": 7.25, "n_graded": 58, "n_invalid": 2},
                      "baseline": {"mean": 6.5, "n_graded": 60, "n_invalid": 0}},
           "metrics": {side: {"checks_passed": {"mean": 0.5, "n_scored": 10}, "exact_match": {"mean": 0.1},
                              "rouge_l": {"mean": 0.4321}, "embedding_similarity": {"mean": 0.8771}}
                       for side in ("candidate", "baseline")},
           "reference_win_rate": {"metric": "rouge_l",
                                  "rouge_l": {"win_rate": {"value": 0.6, "lo": 0.5, "hi": 0.7, "n": 60},
                                              "epsilon": 0.01, "n_wins": 30, "n_ties": 12, "n_losses": 18}}}
    page = export.export_run(Run(kind="judge", manifest=judge.manifest, items=judge.items, aggregates=agg,
                          run_id=judge.run_id), "html")
    assert page.count(judge.run_id + "</h") == 1  # the page heading, not repeated as a section heading
    assert "7.25 over 58 (2 invalid)" in page and "6.50 over 60" in page
    assert "0.432" in page and "0.877" in page and "+60.0 [+50.0, +70.0] %" in page and "30/12/18" in page


def test_markdown_for_a_pull_request_stays_under_the_comment_limit():
    """Many candidates and subjects: the comment is cut to fit, folded parts first, and says so."""
    import numpy as np

    from reports.export import COMMENT_LIMIT, compare_markdown
    from tests.fixtures.synthetic import BASE, compare_run

    cands = [(f"{BASE}+/work/checkouts/project/finetunes/2026-11/lora-{k:02d}", Path(f"c{k}")) for k in range(40)]
    run = compare_run(np.random.default_rng(0), cands, {})
    run = run.amended(manifest={"candidates": [{**c, "name": f"lora-{k:02d}"}
                                               for k, c in enumerate(run.manifest["candidates"])]})
    full = compare_markdown(run, limit=10**9)
    assert len(full) > COMMENT_LIMIT  # the case is big enough to need cutting
    text = compare_markdown(run)
    assert len(text) <= COMMENT_LIMIT
    assert text.count("<details>") == text.count("</details>") >= 3
    assert f"rows; harness report export {run.run_id} --format html has them all" in text
    assert "## Summary" in text and "lora-39" in text.split("## Summary")[0]  # every model named up top
