"""A stored run's lm-eval tasks as lm-eval 0.4 results files, the layout its EvaluationTracker writes.

    harness runs export RUN_ID --format lm-eval --out DIR

writes, per model (an eval run has one; a compare run exports each eval run it names in
`source_runs`):

    DIR/<model_name_sanitized>/results_<timestamp>.json            results, configs, versions, n-shot, ...
    DIR/<model_name_sanitized>/samples_<task>_<timestamp>.jsonl    one record per (document, filter)

so lm-eval's own readers (lm_eval.utils.get_results_filenames, get_sample_results_filenames,
get_latest_filename; `datasets.load_dataset("json", ...)` as the tracker's dataset card does) find them.
Names and serialisation follow lm-eval 0.4.13's `loggers/evaluation_tracker.py` and `utils.py`:
`sanitize_model_name`, the `gen_args_i`/`arg_j` argument dict, responses turned to strings
(`sanitize_list`), `target` as `str`, `task_hashes` over the records' three hashes.

Aggregates are recomputed from the item rows (rows are the truth): the mean of each
"METRIC,FILTER" over the documents that carry it, and its standard error as lm-eval computes it
for mean aggregation (`mean_stderr`: sample standard deviation / sqrt(n), "N/A" below two
values). Every metric is taken as mean-aggregated, which holds for the metrics the harness's
suites use (acc, acc_norm, exact_match). Leaves only: lm-eval group rows (e.g. `mmlu`) are not
written, since a group's weighting lives in its YAML, which the run does not record.

The task key is the lm-eval leaf name (`arc_easy_local`); a leaf that two suite tasks of one run
score (MMLU 0-shot and 5-shot) is keyed `<leaf>__<suite label>` for each, with the leaf as alias.

The rows read are those of `harness.evaluate` since issue 19: one per document, with `doc`,
`output_type`, `prompt`, `arguments`, `resps`, `filtered_resps`, `doc_hash`, `prompt_hash`,
`target_hash`, `target`, `metric_keys` and the metric values ("acc" for filter "none",
"exact_match,strict-match" otherwise).
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

from harness import atomic
from harness.errors import HarnessError
from harness.store import Run

FORMATS = ("lm-eval",)
ROW_FIELDS = ("doc", "output_type", "prompt", "arguments", "resps", "filtered_resps", "doc_hash", "prompt_hash",
              "target_hash", "target", "metric_keys")


@dataclass(frozen=True)
class LmevalExport:
    """One model's files: `results` is the results JSON, `samples` {task key: records} the JSONL files."""

    model_folder: str  # lm-eval's model_name_sanitized
    timestamp: str  # lm-eval's date_id: ISO time with ':' as '-'
    results: dict[str, Any]
    samples: dict[str, list[dict[str, Any]]]

    def files(self) -> dict[str, Any]:
        """Relative path -> content (a dict for the results file, a list of records for a samples file)."""
        out: dict[str, Any] = {f"{self.model_folder}/results_{self.timestamp}.json": self.results}
        for task, records in self.samples.items():
            out[f"{self.model_folder}/samples_{task}_{self.timestamp}.jsonl"] = records
        return out


def sanitize_model_name(name: str) -> str:
    """lm-eval's folder name for a model (lm_eval.utils.sanitize_model_name).

    >>> sanitize_model_name("smollm2-135m-instruct+/runs/out/lora")
    'smollm2-135m-instruct+__runs__out__lora'
    """
    return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", name)


def hash_string(text: str) -> str:
    """lm-eval's hash (lm_eval.utils.hash_string): sha256 hex of the UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def mean_stderr(values: Sequence[float]) -> float | str:
    """Standard error of the mean as lm-eval reports it for mean aggregation: sample standard
    deviation (n - 1) over sqrt(n); "N/A" for fewer than two values, as lm-eval writes then.

    >>> round(mean_stderr([1.0, 0.0, 1.0, 1.0]), 6)
    0.25
    >>> mean_stderr([1.0])
    'N/A'
    """
    n = len(values)
    if n < 2:
        return "N/A"
    mu = sum(values) / n
    return math.sqrt(sum((x - mu) ** 2 for x in values) / (n - 1)) / math.sqrt(n)


def sanitize_list(value: Any) -> Any:
    """lm-eval's sanitize_list: nested lists kept, every leaf turned to its `str`.

    >>> sanitize_list([[-1.5, False], [[-0.25, True]]])
    [['-1.5', 'False'], [['-0.25', 'True']]]
    """
    if isinstance(value, (list, tuple)):
        return [sanitize_list(v) for v in value]
    return str(value)


def row_metric_key(metric_key: str) -> str:
    """The item row's field for lm-eval's "METRIC,FILTER" key: METRIC for filter "none", else the key.

    >>> row_metric_key("acc,none"), row_metric_key("exact_match,strict-match")
    ('acc', 'exact_match,strict-match')
    """
    metric, _, filter_name = metric_key.partition(",")
    return metric if filter_name == "none" else metric_key


def sample_records(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The samples-file records of one document row: one per filter, in lm-eval's key order and
    serialisation (arguments as {"gen_args_i": {"arg_0", "arg_1"}}, responses as strings)."""
    prompt = row["prompt"]
    arguments = {f"gen_args_{i}": {"arg_0": prompt if arg[0] is None else arg[0], "arg_1": arg[1]}
                 for i, arg in enumerate(row["arguments"])}
    out = []
    for filter_name in _filters([row]):
        names = [m for m, _, f in (k.partition(",") for k in row["metric_keys"]) if f == filter_name]
        record = {"doc_id": row["doc_id"], "doc": row["doc"], "target": str(row["target"]),
                  "arguments": arguments, "resps": sanitize_list(row["resps"]),
                  "filtered_resps": sanitize_list(row["filtered_resps"][filter_name]), "filter": filter_name,
                  "metrics": names,
                  "doc_hash": row["doc_hash"], "prompt_hash": row["prompt_hash"], "target_hash": row["target_hash"]}
        record.update({m: row.get(row_metric_key(f"{m},{filter_name}")) for m in names})
        out.append(record)
    return out


def task_results(key: str, alias: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """lm-eval's `results[task]` entry from document rows: each "METRIC,FILTER" mean and its stderr."""
    entry: dict[str, Any] = {"name": key, "alias": alias, "sample_len": 0}
    for metric_key in _metric_keys(rows):
        values = [float(v) for r in rows if (v := r.get(row_metric_key(metric_key))) is not None]
        metric, _, filter_name = metric_key.partition(",")
        entry[metric_key] = sum(values) / len(values) if values else "N/A"
        entry[f"{metric}_stderr,{filter_name}"] = mean_stderr(values)
        entry["sample_len"] = max(entry["sample_len"], len(values))
    return entry


def lmeval_export(run: Run) -> LmevalExport:
    """An eval run's lm-eval tasks as one model's results and samples (pure).

    Raises HarnessError naming the run when it is not an eval run, holds no lm-eval task, or
    its lm-eval rows predate the fields above.
    """
    if run.kind != "eval":
        raise HarnessError(f"run {run.run_id} is a {run.kind} run; lm-eval export takes eval and compare runs")
    by_label = _lmeval_rows(run)
    leaves_of = {label: list(dict.fromkeys(r["leaf"] for r in rows)) for label, rows in by_label.items()}
    n_labels: dict[str, int] = {}
    for leaves in leaves_of.values():
        for leaf in leaves:
            n_labels[leaf] = n_labels.get(leaf, 0) + 1
    model = (run.manifest.get("models") or [{}])[0]
    model_name = str(model.get("ref") or run.run_id)
    created = _created(run)
    out: dict[str, Any] = {"results": {}, "group_subtasks": {}, "configs": {}, "versions": {}, "n-shot": {},
                           "higher_is_better": {}, "n-samples": {}}
    samples: dict[str, list[dict[str, Any]]] = {}
    for label, rows in by_label.items():
        summary = run.aggregates.get("tasks", {}).get(label) or {}
        info = {**summary, **(summary.get("lm_eval") or {})}  # lm-eval's facts, in their block or beside the summary
        shots = info.get("num_fewshot", _suite_fewshot(run, label))
        for leaf in leaves_of[label]:
            key = leaf if n_labels[leaf] == 1 else f"{leaf}__{label}"
            leaf_rows = [r for r in rows if r["leaf"] == leaf]
            entry = task_results(key, leaf, leaf_rows)
            metrics = list(dict.fromkeys(k.partition(",")[0] for k in _metric_keys(leaf_rows)))
            filters = _filters(leaf_rows)
            better = {m: bool((info.get("higher_is_better") or {}).get(m, True)) for m in metrics}
            version = _version(leaf_rows[0].get("task_version"))
            out["results"][key] = entry
            out["configs"][key] = _config(leaf, leaf_rows[0]["output_type"], shots, better, filters, version)
            out["versions"][key] = version
            out["n-shot"][key] = shots
            out["higher_is_better"][key] = better
            original = (info.get("n_docs") or {}).get(leaf, entry["sample_len"])
            out["n-samples"][key] = {"original": original, "effective": entry["sample_len"]}
            # lm-eval writes all documents for its first filter, then all for the next.
            records = [rec for r in leaf_rows for rec in sample_records(r)]
            samples[key] = sorted(records, key=lambda rec: filters.index(rec["filter"]))
    for name in ("configs", "versions", "n-shot", "higher_is_better"):
        out[name] = dict(sorted(out[name].items()))
    out.update(_environment(run, model, model_name, created))
    out["task_hashes"] = {k: hash_string("".join(s["doc_hash"] + s["prompt_hash"] + s["target_hash"] for s in recs))
                          for k, recs in samples.items()}
    out.update({"model_source": (run.manifest.get("backend") or {}).get("name"), "model_name": model_name,
                "model_name_sanitized": sanitize_model_name(model_name), "system_instruction": None,
                "system_instruction_sha": None, "fewshot_as_multiturn": None, "chat_template": None,
                "chat_template_sha": None, "total_evaluation_time_seconds": str(run.manifest.get("wall_s"))})
    return LmevalExport(model_folder=sanitize_model_name(model_name),
                        timestamp=created.strftime("%Y-%m-%dT%H-%M-%S.%f"), results=out, samples=samples)


def eval_runs_to_export(run: Run, load: Callable[[str], Run]) -> list[Run]:
    """The eval runs an export covers: the run itself, or a compare run's source eval runs
    (`source_runs` {"eval:REF": run id}; judge runs skipped), each read with `load`. HarnessError
    when a compare run names no eval run or one is missing from the store."""
    if run.kind != "compare":
        return [run]
    out = []
    for name, run_id in (run.manifest.get("source_runs") or {}).items():
        if str(name).startswith("judge:"):
            continue
        try:
            source = load(str(run_id))
        except HarnessError as e:
            raise HarnessError(f"run {run.run_id}: source run {run_id} ({name}) cannot be read: {e}") from e
        if source.kind == "eval":  # runs stored before the "eval:" prefix name only the model
            out.append(source)
    if not out:
        raise HarnessError(f"run {run.run_id}: the compare run names no eval runs in source_runs; nothing to export")
    return out


def write_export(export: LmevalExport, out_dir: Path) -> list[Path]:
    """Write one model's files under `out_dir` atomically (each file whole or absent); returns their paths.
    JSON as lm-eval writes it: indent 2 for results, one line per record, non-ASCII kept."""
    paths = []
    for rel, content in export.files().items():
        path = out_dir / rel
        if isinstance(content, dict):
            text = json.dumps(content, indent=2, ensure_ascii=False, default=str)
        else:
            text = "".join(json.dumps(rec, ensure_ascii=False, default=str) + "\n" for rec in content)
        atomic.write_text(path, text)
        paths.append(path)
    return paths


def _lmeval_rows(run: Run) -> dict[str, list[dict[str, Any]]]:
    """{suite label: its lm-eval document rows}, in item order; refuses a run with none or old rows."""
    by_label: dict[str, list[dict[str, Any]]] = {}
    for row in run.items:
        if "leaf" in row:
            by_label.setdefault(str(row["task"]), []).append(row)
    if not by_label:
        tasks = ", ".join(run.aggregates.get("tasks", {})) or "none"
        raise HarnessError(f"run {run.run_id} holds no lm-eval task items (tasks: {tasks}); "
                           "nothing to export in lm-eval's format")
    for label, rows in by_label.items():
        missing = [f for f in ROW_FIELDS if f not in rows[0]]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise HarnessError(f"run {run.run_id}: task '{label}' items lack {', '.join(missing[:3])}{more} (stored "
                               "before lm-eval export existed); rerun `harness eval` to export them")
    return by_label


def _metric_keys(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for r in rows for k in r["metric_keys"]))


def _filters(rows: list[dict[str, Any]]) -> list[str]:
    """Filter names in lm-eval's order: as `metric_keys` lists them (the stored `filtered_resps` dict
    has its keys sorted by the run store)."""
    return list(dict.fromkeys(k.partition(",")[2] for k in _metric_keys(rows)))


def _config(leaf: str, output_type: str, shots: int, better: dict[str, bool], filters: list[str],
            version: Any) -> dict[str, Any]:
    """A minimal lm-eval task config: what readers of results files look up (output_type, metric_list)."""
    cfg: dict[str, Any] = {"task": leaf, "output_type": output_type, "num_fewshot": shots,
                           "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": b}
                                           for m, b in better.items()],
                           "metadata": {"version": version}}
    if filters != ["none"]:
        cfg["filter_list"] = [{"name": f} for f in filters]
    return cfg


def _version(value: Any) -> Any:
    """The task version as lm-eval had it: the adapter stores it as a string ("1.0" -> 1.0)."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        return parsed if isinstance(parsed, (int, float)) else value
    return value


def _suite_fewshot(run: Run, label: str) -> int:
    for t in (run.manifest.get("suite") or {}).get("tasks") or []:
        if (t.get("name") or t.get("lm_eval")) == label:
            return int(t.get("num_fewshot", 0))
    return 0


def _created(run: Run) -> datetime:
    text = run.manifest.get("created_utc")
    try:
        return datetime.fromisoformat(str(text))
    except ValueError:
        raise HarnessError(f"run {run.run_id}: manifest created_utc {text!r} is not an ISO time") from None


def _environment(run: Run, model: dict[str, Any], model_name: str, created: datetime) -> dict[str, Any]:
    """lm-eval's `config` and environment keys, filled from the run's manifest."""
    libraries = run.manifest.get("libraries") or {}
    backend = run.manifest.get("backend") or {}
    config = {"model": backend.get("name"), "model_args": f"pretrained={model_name}", "batch_size": None,
              "batch_sizes": [], "device": None, "use_cache": None, "limit": backend.get("limit_per_subject"),
              "bootstrap_iters": None, "gen_kwargs": None,
              "fewshot_seed": (run.manifest.get("seeds") or {}).get("fewshot"),
              "harness_run_id": run.run_id, "harness_model": model}
    return {"config": config, "git_hash": run.manifest.get("git_commit"), "date": created.timestamp(),
            "transformers_version": libraries.get("transformers"), "lm_eval_version": libraries.get("lm_eval"),
            "upper_git_hash": None}
