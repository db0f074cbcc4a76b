"""Experiment trackers on the real SmolLM2 (slow tier): a two-step finetune writes TensorBoard event files,
and a small real eval run logged with `harness runs log` reads back from MLflow's file store."""
from __future__ import annotations

from pathlib import Path

import pytest

from cli.main import main
from harness import store

REPO = Path(__file__).resolve().parent.parent


def test_finetune_report_to_tensorboard_keeps_event_files(smollm2_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("HARNESS_HOME", str(smollm2_dir.parent.parent))
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    out = tmp_path / "lora"
    assert main(["finetune", str(REPO / "finetune/configs/smollm2_lora_alpaca.yaml"), f"output_dir={out}",
                 "data.limit=16", "data.validation_fraction=0.25", "data.max_length=128", "data.benchmarks=[]",
                 "train.max_steps=2", "train.batch_size=2", "train.eval_every_steps=2", "train.logging_steps=1",
                 "train.report_to=tensorboard"]) == 0
    (events,) = (out / "logs" / "tensorboard").glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events.parent), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2]
    assert [e.step for e in acc.Scalars("eval/loss")] == [0, 2]  # before training, and at the evaluation
    assert all(e.value > 0 for e in acc.Scalars("train/loss"))
    assert not (tmp_path / "lora.work").exists()  # the work dir (where the events were written) is gone


def test_runs_log_a_real_eval_run_to_mlflow(smollm2_dir: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("HARNESS_HOME", str(smollm2_dir.parent.parent))
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    suite = tmp_path / "arc3.yaml"
    suite.write_text("# arc3: three ARC-Easy documents, to log a real run\nname: arc3\nversion: 1\nseed: 1\n"
                     "tasks:\n  - lm_eval: arc_easy_local\n    limit: 3\n    metric: acc_norm\n")
    assert main(["eval", "--model", "smollm2-135m-instruct", "--suite", str(suite)]) == 0
    (row,) = store.list_runs(tmp_path / "runs")
    run = store.load_run(tmp_path / "runs", row["run_id"])
    assert main(["runs", "log", run.run_id, "--to", "mlflow", "--dir", str(tmp_path / "ml")]) == 0

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient((tmp_path / "ml").as_uri())
    (logged,) = client.search_runs([client.get_experiment_by_name("llm-harness").experiment_id])
    task = run.aggregates["tasks"]["arc_easy_local"]
    assert logged.data.metrics["task/arc_easy_local/acc_norm"] == pytest.approx(task["value"])
    assert logged.data.metrics["task/arc_easy_local/n"] == 3
    assert logged.data.params["manifest/models/0/ref"] == "smollm2-135m-instruct"
    assert logged.data.params["manifest/models/0/base_hash"] == run.manifest["models"][0]["base_hash"]
    assert logged.data.params["manifest/libraries/torch"] == run.manifest["libraries"]["torch"]
    assert logged.data.tags["harness.run_id"] == run.run_id
