import json
import math
import re

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


def test_named_refs_parse_and_duplicate_names_are_one_line_errors(tmp_path, capsys):
    from harness.errors import HarnessError
    from harness.models.names import default_name, named, parse_named, unique_names

    assert parse_named("a.1_b-c=smollm2-135m-instruct+out/x") == ("a.1_b-c", "smollm2-135m-instruct+out/x")
    # An '=' inside a reference (a path, a URL query) is not a name: no NAME shape comes before it.
    for ref in ("smollm2-135m-instruct+out/a=b", "openai:m@http://h:1/v1?k=v", "./x=y", "/abs/x=y", "-x=y"):
        assert parse_named(ref) == (None, ref)
    existing = tmp_path / "run=2"
    existing.mkdir()
    assert parse_named(str(existing)) == (None, str(existing))
    with pytest.raises(HarnessError, match="nothing after '='"):
        parse_named("name=")
    assert default_name("smollm2-135m-instruct+/a/b/lora-a/") == "lora-a"
    assert default_name("vllm:smol@http://h:1/v1") == "vllm:smol@http://h:1/v1"
    with pytest.raises(HarnessError) as e:
        unique_names([named("m+/one/lora"), named("m+/two/lora")])
    assert str(e.value) == ("two candidates are named 'lora': m+/one/lora and m+/two/lora; "
                            "name them with --candidate NAME=REF")
    code = main(["compare", "--baseline", "smollm2-135m-instruct", "--candidate", "smollm2-135m-instruct+/one/lora",
                 "--candidate", "smollm2-135m-instruct+/two/lora", "--suite", "forgetting-quick"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "/one/lora and smollm2-135m-instruct+/two/lora" in err


def _checkpoints(tiny_model_dir, root):
    """A finetune folder as `train.keep_checkpoints=true` leaves it: checkpoints/checkpoint-N adapters."""
    for k, step in enumerate((20, 40)):
        ckpt = make_lora(tiny_model_dir, root / "checkpoints" / f"checkpoint-{step}", seed=10 + k, scale=1e-2 * (k + 1))
        manifest = {"kind": "adapter", "base": {"ref": str(tiny_model_dir)}}
        (ckpt / "harness_manifest.json").write_text(json.dumps(manifest))
    return root


def test_names_tell_adapters_apart_and_checkpoints_form_a_trend(tiny_model_dir, tmp_path, ppl_suite, monkeypatch,
                                                                 capsys):
    """Two adapters whose paths share far more than 40 characters read apart in the text, the Markdown and the
    report's frame; checkpoints are named by step and the trend is printed in both."""
    from harness.store import load_run
    from reports import data
    from reports.export import compare_markdown

    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    tree = tmp_path / "a-checkout-with-a-rather-long-folder-name" / "finetunes" / "2026-11"
    a = make_lora(tiny_model_dir, tree / "lora-alpha", seed=1, scale=1e-2)
    b = make_lora(tiny_model_dir, tree / "lora-beta", seed=2, scale=2e-2)
    refs = [f"{tiny_model_dir}+{a}", f"{tiny_model_dir}+{b}"]
    assert len(refs[0]) > 60 and refs[0][:40] == refs[1][:40]
    common = ["compare", "--baseline", f"base={tiny_model_dir}", "--suite", str(ppl_suite)]
    assert main([*common, "--candidate", refs[0], "--candidate", refs[1]]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert "\nlora-alpha\n" in text and "\nlora-beta\n" in text
    # Each name beside its reference in full (on the next line when both do not fit in 100 columns).
    at = next(k for k, line in enumerate(lines) if line.startswith("candidate lora-alpha"))
    assert refs[0] in lines[at] or lines[at + 1].strip() == refs[0]
    assert "margin logppl" in text and " 0.020 " in text  # 2% in the suite, as log-perplexity
    assert all(len(line) <= 100 for line in lines if str(tmp_path) not in line), text
    run_id = text.split("\nrun ")[1].split()[0]
    run = load_run(tmp_path / "runs", run_id)
    assert set(data.compare_results(run)["candidate"]) == {"lora-alpha", "lora-beta"}
    assert [(c["name"], c["ref"]) for c in run.manifest["candidates"]] == list(zip(["lora-alpha", "lora-beta"], refs))
    assert run.manifest["baseline"]["name"] == "base"
    assert run.manifest["candidates"][0]["identity"].count("sha256:") == 2  # base and adapter content
    md = compare_markdown(run)
    assert "**lora-alpha**" in md and "**lora-beta**" in md and "| lora-alpha | perplexity:texts |" in md

    ft = _checkpoints(tiny_model_dir, tmp_path / "ft")
    assert main([*common, "--checkpoints", str(ft)]) == 0
    text = capsys.readouterr().out
    trend = text.split("checkpoint trend:")[1]
    assert [line.split()[:2] for line in trend.splitlines()[2:4]] == [["step-20", "20"], ["step-40", "40"]]
    assert "perplexity:texts (logppl)" in trend
    assert main([*common, "--checkpoints", str(ft), "--format", "markdown"]) == 0
    md = capsys.readouterr().out
    assert "## Checkpoint trend" in md and "| checkpoint | step | perplexity:texts (logppl) |" in md
    assert re.search(r"\| step-20 \| 20 \| [+-]\d\.\d{3} \\\[", md) and "| step-40 | 40 |" in md


def test_runs_show_prints_a_summary_and_json_on_request(tiny_model_dir, tmp_path, ppl_suite, monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    mild = make_lora(tiny_model_dir, tmp_path / "mild", seed=1, scale=1e-2)
    assert main(["compare", "--baseline", str(tiny_model_dir), "--candidate", f"tuned={tiny_model_dir}+{mild}",
                 "--suite", str(ppl_suite), "--format", "json"]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    assert main(["runs", "show", run_id]) == 0
    out = capsys.readouterr().out
    assert f"run        {run_id}" in out and "kind       compare" in out and "status     complete" in out
    assert f"candidate  tuned  {tiny_model_dir}+{mild}" in out and "suite      tiny-ppl v1" in out
    assert re.search(r"cache      \d+ hits, \d+ misses", out) and "canary     " in out and "passed" in out
    assert "\ntuned\n" in out and "verdict: PASS" in out and not out.lstrip().startswith("{")
    assert main(["runs", "show", run_id, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["manifest"]["run_id"] == run_id and record["aggregates"]["summary"]["verdict"] == "pass"
    eval_id = next(v for k, v in record["manifest"]["source_runs"].items() if k.startswith("eval:"))
    assert main(["runs", "show", eval_id]) == 0
    out = capsys.readouterr().out
    assert "kind       eval" in out and re.search(r"perplexity:texts\s+token_perplexity\s+\d+\.\d{4}", out)
