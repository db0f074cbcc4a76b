"""A stored run logged to an experiment tracker: MLflow or TensorBoard.

    harness runs log RUN_ID --to mlflow [--tracking-uri URI | --dir DIR] [--experiment NAME]
    harness runs log RUN_ID --to tensorboard [--dir DIR]

`tracker_record(run)` is pure: the run's aggregates flattened to metrics and its manifest to
params. Metric names are paths (`task/mmlu_0shot/acc`, `task/mmlu_0shot/by_subject/anatomy/acc`,
`compare/r16/mmlu_0shot/acc/diff/lo`, `win_rate/r16/win_rate/value`, `summary/...`), each part
cleaned to the characters MLflow accepts. Numbers become metrics; text in the aggregates (verdicts,
statuses, failure reasons) becomes params beside the manifest's (`manifest/models/0/ref`,
`manifest/suite/sha256`, ...). Params are strings of at most PARAM_LIMIT characters; a key that
names a credential (api_key, token, secret, password, ...) is never logged, nor a URL's user:password@. A compare run's
forgetting curve (`trend`) is logged per step: `trend/<task>/<metric>/diff/value` at step N.

The writers import their tracker inside (MLflow and TensorBoard are extras); a missing one is a
one-line HarnessError naming the extra. MLflow: the run is named by the harness run id and tagged
`harness.run_id`; logging a run already in the experiment returns that MLflow run unchanged.
A local MLflow folder is MLflow's file store (kept readable by MLflow 3, which asks for
MLFLOW_ALLOW_FILE_STORE; set for the call only). TensorBoard: scalars, and the params as one text
table, in DIR/<run id>/, so several runs logged to one DIR appear side by side.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.extras import env_defaults, require
from harness.store import Run

TRACKERS = ("mlflow", "tensorboard")
PARAM_LIMIT = 500  # characters; MLflow before 1.x stopped at 250, 2.x at 6000: short enough for any of them
EXPERIMENT = "llm-harness"
_SECRET = re.compile(r"api[_-]?key|secret|passw|credential|authorization|(^|_)token$|^auth", re.IGNORECASE)
_USERINFO = re.compile(r"://[^/@\s]+@")
_BAD = re.compile(r"[^\w.\- ]")
_MLFLOW_STATUS = {"complete": "FINISHED", "partial": "FINISHED", "failed": "FAILED"}


@dataclass(frozen=True)
class Point:
    """One metric value; `step` orders a series (a checkpoint's training step), 0 otherwise."""

    name: str
    value: float
    step: int = 0


@dataclass(frozen=True)
class TrackerRecord:
    """What a tracker receives for one run."""

    run_name: str
    start_time_s: float  # the run's creation, seconds since the epoch
    status: str
    metrics: tuple[Point, ...]
    params: dict[str, str]
    tags: dict[str, str]


def metric_name(*parts: Any) -> str:
    """A metric or param name from path parts: each part's other characters become '_', parts
    join with '/' (what MLflow accepts, and TensorBoard groups by).

    >>> metric_name("compare", "smollm2+out/lora", "acc,none", "diff")
    'compare/smollm2_out_lora/acc_none/diff'
    >>> metric_name("task", "..", "x")
    'task/__/x'
    """
    cleaned = [_BAD.sub("_", str(p)) for p in parts if str(p) != ""]
    return "/".join("_" * len(p) if p.strip(".") == "" else p for p in cleaned)


def flatten(obj: Any, prefix: tuple[Any, ...] = ()) -> tuple[dict[str, float], dict[str, str]]:
    """(numbers, texts) of a nested dict keyed by metric_name paths. Finite int/float leaves are
    numbers; strings and booleans are texts; a list of plain values is one text (JSON); lists of
    dicts and None are left out; keys naming credentials are dropped with what is under them.

    >>> flatten({"a": {"value": 0.5, "ok": True, "tags": ["x"]}, "api_key": "sk-1", "rows": [{"n": 1}]})
    ({'a/value': 0.5}, {'a/ok': 'true', 'a/tags': '["x"]'})
    """
    numbers: dict[str, float] = {}
    texts: dict[str, str] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            if _SECRET.search(str(k)):
                continue
            n, t = flatten(v, (*prefix, k))
            numbers.update(n)
            texts.update(t)
    elif isinstance(obj, bool):
        texts[metric_name(*prefix)] = str(obj).lower()
    elif isinstance(obj, (int, float)):
        if math.isfinite(obj):
            numbers[metric_name(*prefix)] = float(obj)
    elif isinstance(obj, str):
        texts[metric_name(*prefix)] = obj
    elif isinstance(obj, list) and obj and not any(isinstance(v, (dict, list)) for v in obj):
        texts[metric_name(*prefix)] = json.dumps(obj)
    return numbers, texts


def manifest_params(manifest: dict[str, Any]) -> dict[str, str]:
    """The manifest as `manifest/...` params: every value a string (numbers too), lists of records
    indexed (`manifest/models/0/ref`), credentials left out, values cut to PARAM_LIMIT characters."""
    def walk(obj: Any) -> Any:
        if isinstance(obj, list) and any(isinstance(v, dict) for v in obj):
            return {str(i): walk(v) for i, v in enumerate(obj)}
        if isinstance(obj, dict):
            return {k: walk(v) for k, v in obj.items()}
        return obj

    numbers, texts = flatten(walk(manifest), ("manifest",))
    merged = {**{k: repr(v) if not v.is_integer() else str(int(v)) for k, v in numbers.items()}, **texts}
    return {k: _cut(v) for k, v in sorted(merged.items())}


def aggregate_points(run: Run) -> tuple[list[Point], dict[str, str]]:
    """(metrics, text params) of a run's aggregates: eval tasks under task/, compare rows under
    compare/, win rates under win_rate/, the checkpoint trend per step under trend/, the rest
    (summary, judge figures) under its own path. Lists not named here (unscored items, flips) are left out."""
    agg = run.aggregates
    numbers: dict[str, float] = {}
    texts: dict[str, str] = {}

    def add(obj: Any, *prefix: Any) -> None:
        n, t = flatten(obj, prefix)
        numbers.update(n)
        texts.update(t)

    for label, task in (agg.get("tasks") or {}).items():
        add(_named_values(task, task.get("metric")), "task", label)
        lm_eval = (task.get("lm_eval") or {}).get("metrics") or {}
        add({k: m.get("value") for k, m in lm_eval.items()}, "task", label, "lm_eval")
    for row in agg.get("results") or []:
        where = () if row.get("scope") in (None, "task") else (row.get("scope"), row.get("group"))
        add({k: v for k, v in row.items() if k not in ("candidate", "task", "scope", "group", "metric")},
            "compare", row.get("candidate"), row.get("task"), *where, row.get("metric"))
    for row in agg.get("win_rates") or []:
        add({k: v for k, v in row.items() if k != "candidate"}, "win_rate", row.get("candidate"))
    add({k: v for k, v in agg.items() if k not in ("tasks", "results", "win_rates", "trend", "flips")})
    points = [Point(k, v) for k, v in numbers.items()]
    for row in agg.get("trend") or []:
        if isinstance(row.get("step"), int):
            n, _ = flatten(row.get("diff") or {}, ("trend", row.get("task"), row.get("metric"), "diff"))
            points += [Point(k, v, row["step"]) for k, v in n.items()]
    return points, {k: _cut(v) for k, v in texts.items()}


def tracker_record(run: Run) -> TrackerRecord:
    """Everything a tracker receives for `run` (pure)."""
    points, texts = aggregate_points(run)
    created = run.manifest.get("created_utc")
    try:
        start = datetime.fromisoformat(str(created)).timestamp()
    except ValueError:
        raise HarnessError(f"run {run.run_id}: manifest created_utc {created!r} is not an ISO time") from None
    return TrackerRecord(run_name=run.run_id, start_time_s=start, status=run.status, metrics=tuple(points),
                         params={**manifest_params(run.manifest), **texts},
                         tags={"harness.run_id": run.run_id, "harness.kind": run.kind, "harness.status": run.status})


def mlflow_uri(folder: Path | None, tracking_uri: str | None, environ: dict[str, str]) -> str:
    """Where to log: --tracking-uri as given, else --dir as a local file store, else
    MLFLOW_TRACKING_URI, else ./mlruns (MLflow's own default folder).

    >>> mlflow_uri(Path("/tmp/ml"), None, {})
    'file:///tmp/ml'
    >>> mlflow_uri(None, None, {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"})
    'http://127.0.0.1:5000'
    """
    if tracking_uri:
        return tracking_uri
    if folder is None and environ.get("MLFLOW_TRACKING_URI"):
        return environ["MLFLOW_TRACKING_URI"]
    return (folder or Path("mlruns")).resolve().as_uri()


def log_mlflow(record: TrackerRecord, tracking_uri: str, experiment: str = EXPERIMENT) -> tuple[str, bool]:
    """Log `record` as one MLflow run in `experiment` at `tracking_uri`. Returns (MLflow run id,
    whether it was logged now: False when the experiment already held this harness run)."""
    require("mlflow", "harness runs log --to mlflow")
    with env_defaults({"MLFLOW_ALLOW_FILE_STORE": "true"} if tracking_uri.startswith("file:") else {}):
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri)
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        same = client.search_runs([experiment_id], f"tags.`harness.run_id` = '{record.run_name}'", max_results=1)
        if same:
            return same[0].info.run_id, False
        ms = int(record.start_time_s * 1000)
        run_id = client.create_run(experiment_id, start_time=ms, tags=record.tags, run_name=record.run_name).info.run_id
        metrics = [Metric(p.name, p.value, ms, p.step) for p in record.metrics]
        params = [Param(k, v) for k, v in record.params.items()]
        for i in range(0, len(metrics), 1000):  # MLflow's batch limits: 1000 metrics, 100 params
            client.log_batch(run_id, metrics=metrics[i:i + 1000])
        for i in range(0, len(params), 100):
            client.log_batch(run_id, params=params[i:i + 100])
        client.set_terminated(run_id, status=_MLFLOW_STATUS.get(record.status, "FINISHED"))
    return run_id, True


def log_tensorboard(record: TrackerRecord, log_dir: Path) -> tuple[Path, bool]:
    """Write `record` as TensorBoard event files in log_dir/<run name>/ (scalars at their steps, the
    params as one Markdown table under the text tag `params`). Returns (that folder, whether it was
    written now: False when it already held event files, which a second copy would only duplicate)."""
    require("tensorboard", "harness runs log --to tensorboard")
    folder = log_dir / record.run_name
    if any(folder.glob("events.out.tfevents.*")):
        return folder, False
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder))
    try:
        for p in record.metrics:
            writer.add_scalar(p.name, p.value, global_step=p.step, walltime=record.start_time_s)
        rows = "".join(f"| {k} | {_cell(v)} |\n" for k, v in {**record.tags, **record.params}.items())
        writer.add_text("params", "| param | value |\n|---|---|\n" + rows, walltime=record.start_time_s)
    finally:
        writer.close()
    return folder, True


def _named_values(task: dict[str, Any], metric: Any) -> dict[str, Any]:
    """An eval task's summary with each `value` renamed to the task's metric (acc, token_perplexity),
    at the top and in by_subject / by_category; the lm_eval block is logged on its own."""
    name = str(metric or "value")

    def rename(d: dict[str, Any]) -> dict[str, Any]:
        return {name if k == "value" else k: v for k, v in d.items()}

    out = rename({k: v for k, v in task.items() if k not in ("lm_eval", "metric")})
    for level in ("by_subject", "by_category"):
        if isinstance(task.get(level), dict):
            out[level] = {g: rename(v) if isinstance(v, dict) else v for g, v in task[level].items()}
    return out


def _cut(text: str) -> str:
    """A param value: a URL's user:password@ hidden, at most PARAM_LIMIT characters.

    >>> _cut("openai:gpt@https://me:sk-1@api.example.com/v1")
    'openai:gpt@https://***@api.example.com/v1'
    """
    text = _USERINFO.sub("://***@", text)
    return text if len(text) <= PARAM_LIMIT else text[: PARAM_LIMIT - 3] + "..."


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")
