"""The lm-eval export against files lm-eval itself wrote for the same items (slow tier: real SmolLM2, real lm-eval).

lm-eval's own `simple_evaluate` with its HFLM on ARC-Easy (the first 5 documents, `limit=5`),
saved by its EvaluationTracker as its CLI saves them; then `harness eval` of the same documents (a
suite with `limit: 5`) and `harness runs export --format lm-eval`. Key sets, per-document records
(hashes, arguments, targets, metric values, responses) and the results' figures must agree.
Log-likelihoods agree to 1e-3 nats (the harness scores with its shared-prefix scorer in float32).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.main import main
from harness import store

TASK = "arc_easy_local"
N_DOCS = 5
# Keys lm-eval adds from the live model and machine, which a stored run does not have.
LIVE_ONLY = {"pretty_env_info", "tokenizer_pad_token", "tokenizer_eos_token", "tokenizer_bos_token", "eot_token_id",
             "max_length"}


def _files(out: Path) -> tuple[dict, list[dict]]:
    (model_dir,) = [p for p in out.iterdir() if p.is_dir()]
    (results,) = model_dir.glob("results_*.json")
    (samples,) = model_dir.glob(f"samples_{TASK}_*.jsonl")
    return json.loads(results.read_text()), [json.loads(line) for line in samples.read_text().splitlines()]


def _lmeval_own_files(model_dir: Path, out: Path, settings) -> None:
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker

    from harness.backends.lmeval_adapter import task_manager
    from harness.suites.lmeval_data import materialize_lmeval_tasks

    tracker = EvaluationTracker(output_path=str(out))
    results = simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=[TASK],
                              num_fewshot=0, batch_size=8, device="cpu", limit=N_DOCS, log_samples=True,
                              task_manager=task_manager(materialize_lmeval_tasks(settings).task_dir),
                              evaluation_tracker=tracker)
    samples = results.pop("samples")  # as lm-eval's CLI saves them (lm_eval/_cli/run.py)
    tracker.save_results_aggregated(results=results, samples=samples)
    for task in results["configs"]:
        tracker.save_results_samples(task_name=task, samples=samples[task])


def test_export_matches_the_files_lmeval_writes(smollm2_dir: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.settings import Settings

    monkeypatch.setenv("HARNESS_HOME", str(smollm2_dir.parent.parent))
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    _lmeval_own_files(smollm2_dir, tmp_path / "theirs", Settings.from_env())
    suite = tmp_path / "arc5.yaml"
    suite.write_text(f"# arc5: ARC-Easy, the first {N_DOCS} documents, as lm-eval's --limit picks them\n"
                     f"name: arc5\nversion: 1\nseed: 1234\ntasks:\n  - lm_eval: {TASK}\n    limit: {N_DOCS}\n"
                     "    metric: acc_norm\n")
    assert main(["eval", "--model", "smollm2-135m-instruct", "--suite", str(suite), "--dtype", "float32"]) == 0
    (run,) = store.list_runs(tmp_path / "runs")
    assert main(["runs", "export", run["run_id"], "--format", "lm-eval", "--out", str(tmp_path / "ours")]) == 0

    theirs, their_samples = _files(tmp_path / "theirs")
    ours, our_samples = _files(tmp_path / "ours")
    assert set(theirs) - set(ours) <= LIVE_ONLY and set(ours) <= set(theirs), (set(theirs) ^ set(ours))
    for key in ("n-shot", "versions", "higher_is_better", "task_hashes", "group_subtasks"):
        assert ours[key] == theirs[key], key
    assert ours["n-samples"][TASK]["effective"] == theirs["n-samples"][TASK]["effective"] == N_DOCS
    # The leaf's size where the run recorded it (aggregates lm_eval.n_docs), else the number exported.
    assert ours["n-samples"][TASK]["original"] in (theirs["n-samples"][TASK]["original"], N_DOCS)
    assert set(ours["configs"][TASK]) <= set(theirs["configs"][TASK])
    for key in ("task", "output_type", "num_fewshot"):
        assert ours["configs"][TASK][key] == theirs["configs"][TASK][key], key
    assert [m["metric"] for m in ours["configs"][TASK]["metric_list"]] == \
        [m["metric"] for m in theirs["configs"][TASK]["metric_list"]]
    assert set(ours["results"][TASK]) == set(theirs["results"][TASK])
    for key, value in theirs["results"][TASK].items():
        assert ours["results"][TASK][key] == (pytest.approx(value) if isinstance(value, float) else value), key

    assert len(our_samples) == len(their_samples) == N_DOCS
    for a, b in zip(our_samples, their_samples):
        assert list(a) == list(b) and a["doc_id"] == b["doc_id"]
        for key in ("doc", "target", "arguments", "filter", "metrics", "doc_hash", "prompt_hash", "target_hash",
                    *b["metrics"]):
            assert a[key] == b[key], (b["doc_id"], key)
        for ra, rb in zip(a["filtered_resps"], b["filtered_resps"]):
            assert float(ra[0]) == pytest.approx(float(rb[0]), abs=1e-3) and ra[1] == rb[1], b["doc_id"]
        assert [[r[1] for r in req] for req in a["resps"]] == [[r[1] for r in req] for req in b["resps"]]
