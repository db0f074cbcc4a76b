"""`harness runs log`: runs flattened to metrics and params, logged to TensorBoard and MLflow's file store (fast)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cli.main import main
from harness import extras
from harness.store import Run, load_run, write_run
from reports import trackers
from tests.fixtures.synthetic import build_store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    runs_dir = tmp_path_factory.mktemp("tracker-store") / "runs"
    return runs_dir, build_store(runs_dir, n_large=20)


def test_eval_run_flattens_to_task_metrics_and_manifest_params(store) -> None:
    runs_dir, ids = store
    run = load_run(runs_dir, ids["eval_partial"])
    secret = run.amended(manifest={"backend": {"name": "openai", "api_key": "sk-live-1",
                                               "engine_args": {"hf_token": "hf_x", "max_model_len": 2048}},
                                   "notes": "x" * 2000})
    record = trackers.tracker_record(secret)
    metrics = {p.name: p.value for p in record.metrics}
    mmlu = run.aggregates["tasks"]["mmlu_0shot"]
    assert metrics["task/mmlu_0shot/acc"] == pytest.approx(mmlu["value"])
    assert metrics["task/mmlu_0shot/n"] == mmlu["n"]
    assert metrics["task/mmlu_0shot/by_subject/anatomy/acc"] == pytest.approx(mmlu["by_subject"]["anatomy"]["value"])
    assert metrics["task/perplexity/perplexity"] == pytest.approx(run.aggregates["tasks"]["perplexity"]["value"])
    assert metrics["summary/mmlu_0shot"] == pytest.approx(mmlu["value"])
    assert record.params["task/hellaswag/failure_reason"].startswith("dataset hellaswag not found")
    assert record.params["manifest/models/0/ref"] == run.manifest["models"][0]["ref"]
    assert record.params["manifest/suite/version"] == "3"
    assert record.params["manifest/backend/engine_args/max_model_len"] == "2048"
    assert len(record.params["manifest/notes"]) == trackers.PARAM_LIMIT
    assert not any("sk-live" in v or "hf_x" in v for v in record.params.values())
    assert not any(k.endswith(("api_key", "hf_token")) for k in record.params)
    assert record.tags == {"harness.run_id": run.run_id, "harness.kind": "eval", "harness.status": "partial"}
    assert all(k == trackers.metric_name(*k.split("/")) for k in [*metrics, *record.params])


def test_compare_run_logs_diffs_intervals_verdicts_and_the_trend_per_step(store) -> None:
    runs_dir, ids = store
    run = load_run(runs_dir, ids["compare_ckpt"])
    record = trackers.tracker_record(run)
    row = next(r for r in run.aggregates["results"] if r["scope"] == "task" and r["metric"] == "acc")
    at = f"compare/{trackers.metric_name(row['candidate'])}/mmlu_0shot/acc"
    metrics = {(p.name, p.step): p.value for p in record.metrics}
    assert metrics[(f"{at}/diff/value", 0)] == pytest.approx(row["diff"]["value"])
    assert metrics[(f"{at}/diff/lo", 0)] == pytest.approx(row["diff"]["lo"])
    assert metrics[(f"{at}/candidate_value", 0)] == pytest.approx(row["candidate_value"])
    assert record.params[f"{at}/verdict"] == row["verdict"]
    assert record.params["summary/verdict"] == run.aggregates["summary"]["verdict"]
    sub = next(r for r in run.aggregates["results"] if r["scope"] == "subject")
    assert (f"compare/{trackers.metric_name(sub['candidate'])}/mmlu_0shot/subject/{sub['group']}/acc/diff/hi", 0) \
        in metrics
    trend = [p for p in record.metrics if p.name == "trend/mmlu_0shot/acc/diff/value"]
    assert [p.step for p in trend] == [100, 200, 300, 400]
    wr = run.aggregates["win_rates"][0]
    assert metrics[(f"win_rate/{trackers.metric_name(wr['candidate'])}/win_rate/value", 0)] == \
        pytest.approx(wr["win_rate"]["value"])


def test_tensorboard_event_files_hold_the_scalars_and_params(store, tmp_path: Path, monkeypatch) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs_dir, ids = store
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(runs_dir))
    argv = ["runs", "log", ids["compare_ckpt"], "--to", "tensorboard", "--dir", str(tmp_path / "tb")]
    assert main(argv) == 0 and main(argv) == 0  # the second finds the event files and adds nothing
    assert len(list((tmp_path / "tb" / ids["compare_ckpt"]).iterdir())) == 1
    record = trackers.tracker_record(load_run(runs_dir, ids["compare_ckpt"]))
    acc = EventAccumulator(str(tmp_path / "tb" / ids["compare_ckpt"]), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    written = {(name, e.step): e.value for name in acc.Tags()["scalars"] for e in acc.Scalars(name)}
    assert written.keys() == {(p.name, p.step) for p in record.metrics}
    for p in record.metrics:
        assert written[(p.name, p.step)] == pytest.approx(p.value, rel=1e-6)  # stored as float32
    table = acc.Tensors("params/text_summary")[0].tensor_proto.string_val[0].decode()
    assert f"| summary/verdict | {record.params['summary/verdict']} |" in table


def test_mlflow_file_store_holds_the_run_once(store, tmp_path: Path, monkeypatch, capsys) -> None:
    from mlflow.tracking import MlflowClient

    runs_dir, ids = store
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(runs_dir))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    argv = ["runs", "log", ids["eval_base"], "--to", "mlflow", "--dir", str(tmp_path / "ml"), "--experiment", "t"]
    assert main(argv) == 0
    assert main(argv) == 0  # the same harness run again: found, not duplicated
    assert "already logged" in capsys.readouterr().out.splitlines()[-1]
    record = trackers.tracker_record(load_run(runs_dir, ids["eval_base"]))
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads its file store only when asked
    client = MlflowClient(tracking_uri=(tmp_path / "ml").resolve().as_uri())
    found = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert len(found) == 1
    data = found[0].data
    assert data.metrics == pytest.approx({p.name: p.value for p in record.metrics})
    assert data.params == record.params
    assert data.tags["harness.run_id"] == ids["eval_base"] and found[0].info.status == "FINISHED"
    assert found[0].info.run_name == ids["eval_base"]


def test_missing_tracker_names_the_extra(store, tmp_path: Path, monkeypatch, capsys) -> None:
    runs_dir, ids = store
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(runs_dir))
    monkeypatch.setattr(extras, "is_installed", lambda module: False)
    for to, extra in (("tensorboard", "tensorboard"), ("mlflow", "mlflow")):
        assert main(["runs", "log", ids["eval_base"], "--to", to, "--dir", str(tmp_path / to)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"pip install 'llm-harness[{extra}]'" in err, err
    assert not (tmp_path / "tensorboard").exists() and not (tmp_path / "mlflow").exists()


def test_flatten_skips_non_finite_numbers_and_record_lists() -> None:
    numbers, texts = trackers.flatten({"a": float("nan"), "b": np.float64(0.25).item(), "c": [{"x": 1}],
                                       "d": None, "e": {"password": "p", "ok": 1}})
    assert numbers == {"b": 0.25, "e/ok": 1.0} and texts == {}
    run = Run(kind="eval", manifest={"created_utc": "not a time"})
    with pytest.raises(Exception, match="created_utc"):
        trackers.tracker_record(run)
