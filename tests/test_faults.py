"""Fault and bad-input tests: one test per item of the gate-integrity issue, each
reproducing the fault and asserting the clear message and exit code.

Sections are kept apart by area; tests that need the real SmolLM2, vLLM or lm-eval
are marked slow.
"""
from __future__ import annotations

import pytest  # noqa: F401


# --- Canary integrity: items 2, 3, 13 (plausibility), 14 --------------------------------------


# --- Adapter kinds, vLLM fallback and merge: items 5, 12, 13 ----------------------------------


# --- Reports, CI recipe and smaller items: items 0, 1, 16, 17 ---------------------------------

def _forgetting_quick_compare(runs_dir):
    """A compare run with forgetting-quick's task and subject shape, built by the real statistics:
    mmlu_0shot and mmlu_5shot share every subject name; ARC and HellaSwag are acc_norm tasks."""
    import numpy as np

    from harness.compare import compare_eval_runs
    from harness.store import Run, write_run

    subjects = {"anatomy": "STEM", "astronomy": "STEM", "philosophy": "humanities", "marketing": "other"}
    metrics = {"mmlu_0shot": "acc", "mmlu_5shot": "acc", "arc_easy_local": "acc_norm",
               "arc_challenge_local": "acc_norm", "hellaswag_local": "acc_norm"}

    def eval_run(seed):
        rng = np.random.default_rng(seed)
        items = []
        for task in metrics:
            per = subjects if task.startswith("mmlu") else {task: None}
            for subject, category in per.items():
                items += [{"task": task, "item_id": f"{subject}/{i}", "subject": subject, "category": category,
                           "correct": bool(rng.random() < 0.5)} for i in range(12)]
        tasks = {t: {"metric": m, "n": 1, "margin": 5.0} for t, m in metrics.items()}
        return Run(kind="eval", manifest={"models": [{"ref": f"m{seed}"}]}, items=items,
                   aggregates={"summary": {}, "tasks": tasks})

    base, cand = eval_run(0), eval_run(1)
    results, items, flips = compare_eval_runs(base, cand, candidate_label="m1", margins={t: 5.0 for t in metrics},
                                              rng=np.random.default_rng(0))
    aggregates = {"summary": {"verdict": "pass", "n_candidates": 1, "n_failures": 0, "n_task_errors": 0},
                  "results": results, "win_rates": [], "flips": {"m1": flips}, "failures": [], "task_errors": [],
                  "trend": []}
    run = Run(kind="compare", manifest={"models": [{"ref": "m0"}, {"ref": "m1"}], "baseline": {"ref": "m0"},
                                        "candidates": [{"ref": "m1"}], "confidence": 0.95},
              items=items, aggregates=aggregates)
    write_run(runs_dir, run)
    return run


def test_item0_exports_work_when_tasks_share_subject_names(tmp_path, monkeypatch, capsys):
    import json

    from harness.cli import main
    from harness.cli_compare import format_text
    from reports.export import compare_markdown

    run = _forgetting_quick_compare(tmp_path / "runs")
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    for fmt in ("markdown", "html"):
        out = tmp_path / f"export.{fmt}"
        assert main(["report", "export", run.run_id, "--format", fmt, "--out", str(out)]) == 0, fmt
        text = out.read_text()
        assert "anatomy" in text and "mmlu" in text and "Forgetting by subject" in text
        if fmt == "html":
            assert "data:image/png;base64," in text  # the subject plot is drawn, keyed by (task, subject)
    assert "Forgetting by category" in compare_markdown(run)
    assert "verdict: PASS" in format_text(run)
    json.dumps(run.aggregates, default=str)


def test_item16_results_carry_the_metric_the_suite_names(tmp_path):
    from reports.export import export_run

    run = _forgetting_quick_compare(tmp_path / "runs")
    by_task = {r["task"]: r["metric"] for r in run.aggregates["results"] if r["scope"] == "task"}
    assert by_task == {"mmlu_0shot": "acc", "mmlu_5shot": "acc", "arc_easy_local": "acc_norm",
                       "arc_challenge_local": "acc_norm", "hellaswag_local": "acc_norm"}
    assert all(r["metric"] == "acc" for r in run.aggregates["results"] if r["task"].startswith("mmlu"))
    html_text = export_run(run, "html")
    assert html_text.count("<td>acc_norm</td>") == 3



@pytest.mark.parametrize("harness_exit,job_fails", [(0, False), (1, True), (2, True)])
def test_item1_the_shipped_ci_gate_step_fails_on_regression_and_on_error(tmp_path, harness_exit, job_fails):
    """Runs the shipped workflow's gate step as GitHub runs a `shell: bash` step, with a stand-in harness."""
    import os
    import stat
    import subprocess
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parent.parent
    workflow_text = (repo / "docs" / "ci" / "adapter-gate.yml").read_text()
    recipe = (repo / "docs" / "ci-recipe.md").read_text()
    assert "```yaml\n" + workflow_text + "```" in recipe, "docs/ci-recipe.md must reproduce docs/ci/adapter-gate.yml"
    steps = yaml.safe_load(workflow_text)["jobs"]["gate"]["steps"]
    gate = next(s for s in steps if s.get("id") == "gate")
    assert gate.get("shell") == "bash"
    fake = tmp_path / ".venv" / "bin" / "harness"
    fake.parent.mkdir(parents=True)
    fake.write_text(f"#!/bin/sh\necho '| candidate | verdict |'\nexit {harness_exit}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "step.sh").write_text(gate["run"])
    env = {**os.environ, "GITHUB_OUTPUT": str(tmp_path / "output"), "GITHUB_STEP_SUMMARY": str(tmp_path / "summary")}
    # GitHub's command for `shell: bash`.
    done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "step.sh"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode != 0) == job_fails, done.stderr
    assert f"status={harness_exit}" in (tmp_path / "output").read_text()
    assert "| candidate | verdict |" in (tmp_path / "summary").read_text()


def test_item17_compare_errors_name_an_endpoint_candidate_in_full(tmp_path, monkeypatch, capsys, tiny_model_dir):
    from harness.cli import main

    suite = tmp_path / "ppl.yaml"
    suite.write_text("# perplexity on two held-out texts\nname: ppl\nversion: 1\nseed: 0\ntasks:\n"
                     "  - harness: perplexity\n    data: alpaca_heldout\n    sample: {n: 2}\n"
                     "    metric: token_perplexity\n")
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    endpoint = "openai:served-model@http://127.0.0.1:9/v1"  # port 9 (discard): refused at once
    code = main(["compare", "--baseline", str(tiny_model_dir), "--candidate", endpoint, "--suite", str(suite)])
    out = capsys.readouterr().out
    assert code == 2
    assert f"not scored: {endpoint}: perplexity:" in out


def test_item17_runs_list_says_when_runs_exist_but_none_match(tmp_path, monkeypatch, capsys):
    from harness.cli import main
    from harness.store import Run, write_run

    write_run(tmp_path / "runs", Run(kind="eval", manifest={"models": [{"ref": "m"}]}))
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    assert main(["runs", "list", "--status", "failed"]) == 0
    assert capsys.readouterr().out.strip() == f"no runs match --status failed (1 runs under {tmp_path / 'runs'})"


def test_item17_models_show_names_an_adapter_reference_an_adapter(tmp_path, monkeypatch, capsys, tiny_model_dir):
    from harness.cli import main
    from tests.helpers import make_lora

    adapter = make_lora(tiny_model_dir, tmp_path / "lora", scale=0.01)
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    assert main(["models", "show", f"{tiny_model_dir}+{adapter}"]) == 0
    assert "  kind    adapter over a local base\n" in capsys.readouterr().out


@pytest.mark.slow
def test_item0_compare_prints_every_format_on_the_shipped_forgetting_suite(tmp_path, monkeypatch, capsys,
                                                                           smollm2_tokenizer_dir):
    """`harness compare --suite forgetting-quick` in text, json and markdown (real lm-eval tasks, two tiny
    models with room for 5-shot MMLU), then `report export` of the stored run in both formats."""
    import json

    from harness.cli import main
    from harness.store import list_runs
    from tests.conftest import build_tiny_llama

    base = build_tiny_llama(tmp_path / "base", smollm2_tokenizer_dir, seed=0, max_positions=4096)
    cand = build_tiny_llama(tmp_path / "cand", smollm2_tokenizer_dir, seed=1, max_positions=4096)
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    argv = ["compare", "--baseline", str(base), "--candidate", str(cand), "--suite", "forgetting-quick", "--limit", "1"]
    outputs = {}
    for fmt in ("text", "json", "markdown"):
        assert main([*argv, "--format", fmt]) in (0, 1), fmt
        outputs[fmt] = capsys.readouterr().out
    assert "verdict:" in outputs["text"]
    results = json.loads(outputs["json"])["results"]
    assert {r["task"] for r in results if r["scope"] == "subject"} == {"mmlu_0shot", "mmlu_5shot"}
    assert {r["metric"] for r in results if r["task"] == "hellaswag_local"} == {"acc_norm"}
    assert "Forgetting by subject" in outputs["markdown"]
    run_id = list_runs(tmp_path / "runs", kind="compare")[0]["run_id"]
    for fmt in ("markdown", "html"):
        assert main(["report", "export", run_id, "--format", fmt, "--out", str(tmp_path / f"x.{fmt}")]) == 0

# --- Inputs, errors, statuses and limits: items 4, 6, 7, 8, 9, 10, 11, 15 ----------------------
