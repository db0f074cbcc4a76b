import json
import math

import numpy as np
import pytest

from cli.main import main
from harness.compare import checkpoint_step, compare_eval_runs, overall_verdict, trend_of
from harness.store import Run
from tests.helpers import make_lora


def _mc_run(correct, subjects):
    return Run(kind="eval", manifest={}, items=[
        {"task": "mmlu", "item_id": f"q{i}", "subject": s, "category": "stem" if s == "math" else "other", "correct": c}
        for i, (c, s) in enumerate(zip(correct, subjects))])


def test_accuracy_comparison_pairs_items_lists_flips_and_gates():
    rng = np.random.default_rng(0)
    n = 400
    subjects = ["math" if i % 2 else "law" for i in range(n)]
    base = rng.random(n) < 0.6
    cand = base.copy()
    drop = np.flatnonzero(base)[:40]  # 40 right->wrong flips, all the harm in 'law' or 'math'
    cand[drop] = False
    results, items, flips = compare_eval_runs(_mc_run(base, subjects), _mc_run(cand, subjects), candidate_label="c",
                                              margins={"mmlu": 2.0}, rng=np.random.default_rng(1))
    task = next(r for r in results if r["scope"] == "task")
    assert task["n"] == n and task["diff"]["value"] == pytest.approx(-40 / n)
    assert task["diff"]["hi"] < 0 and task["verdict"] == "fail" and "p_holm" in task
    assert {r["group"] for r in results if r["scope"] == "subject"} == {"math", "law"}
    assert {r["group"] for r in results if r["scope"] == "category"} == {"stem", "other"}
    assert sum(len(v) for v in flips.values()) == 40
    assert sum(1 for i in items if i["flip"] == "right_to_wrong") == 40
    assert overall_verdict(results) == "regression"
    # The same candidate with a wide margin passes; without a margin there is no verdict.
    wide, _, _ = compare_eval_runs(_mc_run(base, subjects), _mc_run(cand, subjects), candidate_label="c",
                                   margins={"mmlu": 30.0}, rng=np.random.default_rng(1))
    assert overall_verdict(wide) == "pass"


def test_unpaired_items_are_left_out_and_counted():
    base = _mc_run([1, 0, 1, 1], ["a"] * 4)
    cand = Run(kind="eval", manifest={}, items=base.items[:3])
    results, _, _ = compare_eval_runs(base, cand, candidate_label="c", margins={}, rng=np.random.default_rng(0))
    assert results[0]["n"] == 3 and results[0]["n_unpaired"] == 1


def test_trend_orders_checkpoints_by_step():
    assert checkpoint_step("out/run/checkpoint-200") == 200 and checkpoint_step("plain") is None
    rows = [{"candidate": c, "scope": "task", "task": "t", "metric": "acc", "diff": {"value": v}}
            for c, v in (("x/checkpoint-300", -0.03), ("x/checkpoint-100", -0.01))]
    assert [r["step"] for r in trend_of(rows, ["x/checkpoint-300", "x/checkpoint-100"])] == [100, 300]


@pytest.fixture
def ppl_suite(tmp_path):
    texts = [{"text": f"The number {i} comes after {i - 1} and before {i + 1}. " * 3} for i in range(1, 25)]
    (tmp_path / "texts.jsonl").write_text("".join(json.dumps(t) + "\n" for t in texts))
    (tmp_path / "suite.yaml").write_text(
        "# test suite: perplexity on a small text file\nname: tiny-ppl\nversion: 1\nseed: 0\n"
        "tasks:\n  - harness: perplexity\n    data: texts.jsonl\n    metric: token_perplexity\n    margin: 2.0\n")
    return tmp_path / "suite.yaml"


def test_cli_exit_codes_pass_regression_and_error(tiny_model_dir, tmp_path, ppl_suite, monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    mild = make_lora(tiny_model_dir, tmp_path / "mild", seed=1, scale=1e-2)
    damaged = make_lora(tiny_model_dir, tmp_path / "damaged", seed=2, scale=0.5,
                        targets=("q_proj", "v_proj", "o_proj", "down_proj", "up_proj"))
    common = ["compare", "--baseline", str(tiny_model_dir), "--suite", str(ppl_suite)]
    assert main([*common, "--candidate", f"{tiny_model_dir}+{mild}"]) == 0
    assert "verdict: PASS" in capsys.readouterr().out
    assert main([*common, "--candidate", f"{tiny_model_dir}+{damaged}", "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["summary"]["verdict"] == "regression" and report["results"][0]["verdict"] == "fail"
    assert report["results"][0]["diff"]["lo"] > math.log1p(0.02)
    assert main(["compare", "--baseline", str(tiny_model_dir), "--candidate", "nope", "--suite", str(ppl_suite)]) == 2
    assert main([*common, "--candidate", f"{tiny_model_dir}+{mild}", "--suite", "no-such-suite"]) == 2


def test_a_task_that_cannot_be_scored_is_an_error_not_a_pass(tiny_model_dir, tmp_path, ppl_suite, monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    # A bad data file is caught when the suite is validated (tests/test_faults.py); what fails only at
    # run time is a golden set whose every prompt is longer than the tiny model's 256-token context.
    (tmp_path / "long.jsonl").write_text(json.dumps({"id": "long", "prompt": "word " * 400}) + "\n")
    ppl_suite.write_text(ppl_suite.read_text() + "  - harness: golden\n    data: long.jsonl\n"
                         "    metric: check_pass_rate\n    max_new_tokens: 4\n")
    mild = make_lora(tiny_model_dir, tmp_path / "mild", seed=1, scale=1e-2)
    assert main(["compare", "--baseline", str(tiny_model_dir), "--candidate", f"{tiny_model_dir}+{mild}",
                 "--suite", str(ppl_suite)]) == 2
    out = capsys.readouterr().out
    assert "not scored:" in out and "item 'long'" in out and "verdict: ERROR" in out
    assert "log-probabilities equal the base's" not in out  # the mild adapter itself is applied and scored
