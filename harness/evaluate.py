"""Evaluate one model on one suite and return a Run (the CLI writes it; `compare` reuses it).

`evaluate_suite` is the single entry point. Every scoring path goes through
the per-item cache (harness.backends.cache.CachedBackend), so a rerun, or a comparison
that evaluates the same baseline again, recomputes nothing; finished chunks
survive a crash. A finished task is also stored whole, as a task manifest
(harness.task_manifest): an unchanged rerun takes its rows from there, building
no lm-eval task and asking the backend nothing, so no model loads and no
engine starts. Per task kind:

- lm-eval tasks run through lm-eval's evaluator over our backend
  (harness.backends.lmeval_adapter); on the hf backend loglikelihoods come
  from the shared-prefix scorer (harness.backends.hf_prefix) unless disabled;
- `perplexity` scores held-out texts with loglikelihood_rolling;
- `golden` generates greedily and applies each item's mechanical checks; a
  prompt longer than the model's context leaves that item unscored, with its
  reason, id and source line, and the rest of the task is kept.

A task that fails with a HarnessError is recorded as a failure with its
reason; other tasks still run. Status: "failed" when every task failed (or
could score no item), "partial" when some did, "complete" otherwise. Ctrl-C
stops at once and raises harness.errors.Interrupted carrying the run so far
(the interrupted task and those after it recorded as failures), for the CLI to store.
"""
from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from typing import Any

from harness.backends.base import Backend, call_per_item_on_overflow
from harness.backends.cache import CachedBackend, ItemCache
from harness.backends.factory import open_backend
from harness.backends.hf_prefix import with_shared_prefix
from harness.backends.lmeval_index import TaskCatalog, check_task_metric, check_task_name, task_fingerprint
from harness.errors import HarnessError, Interrupted, SuiteError
from harness.records import RollingRequest
from harness.settings import Settings
from harness.store import Run
from harness.suites.golden import GENERATION_TAG, load_golden_set, run_checks
from harness.suites.lmeval_data import (
    FORMAT_VERSION, LOCAL_TASKS, MMLU_PREFIX, is_local_task, local_task_names, materialize_lmeval_tasks,
    missing_local_data, mmlu_categories
)
from harness.suites.spec import Suite, TaskSpec, choose_docs
from harness.suites.text import load_text_set
from harness.task_manifest import data_check_key, task_content, task_key

log = logging.getLogger(__name__)

CHUNK_REQUESTS = 256  # cache commit granularity; large enough for the scorer to share prefixes within a chunk


def check_suite_tasks(settings: Settings, suite: Suite) -> Any:
    """Fail early (before loading a model) on lm-eval tasks nobody defines, data nobody has, and metrics
    a task does not report.

    Returns the suite's task index (harness.backends.lmeval_index.TaskCatalog) over the include_path
    folders, the local tasks (built once, and only when the suite names one) and, where a name is
    found in neither, lm-eval's built-in tasks; None when the suite has no lm-eval tasks. Names and
    metrics are read from the task YAMLs without importing lm-eval (a fully cached rerun never
    needs it); a name found nowhere is looked up in lm-eval's own index before it is refused. A
    non-local task's dataset is loaded here, so one that is neither local nor in the Hugging Face
    cache is one line naming it (lmeval_adapter.check_task_data), unless this very configuration
    loaded its data before (recorded in the item cache); a task that then must run and cannot
    load it fails alone, with the same line.
    """
    specs = [(i, t) for i, t in enumerate(suite.tasks) if t.lm_eval]
    if not specs:
        return None
    where = f"{suite.path or suite.name}: tasks"
    folders = list(suite.include_dirs())
    if any(is_local_task(t.lm_eval or "") for _, t in specs):
        for i, spec in specs:
            missing = missing_local_data(settings.data_dir, spec.lm_eval or "") if is_local_task(spec.lm_eval or "") \
                else None
            if missing is not None:
                raise SuiteError(f"{where}[{i}].lm_eval '{spec.lm_eval}' reads the local dataset {missing}, which "
                                 f"is not there; set HARNESS_DATA_DIR to the folder holding it")
        folders.append(materialize_lmeval_tasks(settings).task_dir)
    tm: Any = TaskCatalog(folders)
    if any(t.lm_eval not in tm.task_index for _, t in specs):
        if not any(is_local_task(t.lm_eval or "") for _, t in specs) and (settings.data_dir / "mmlu").is_dir():
            folders.append(materialize_lmeval_tasks(settings).task_dir)  # a misspelt local name finds its match
        tm = TaskCatalog(folders, home=settings.home, include_defaults=True)
    if any(t.lm_eval not in tm.task_index for _, t in specs):
        tm = tm.manager()  # lm-eval's own index has the last word before a name is refused
    names = local_task_names(settings.data_dir) if (settings.data_dir / "mmlu").is_dir() else list(LOCAL_TASKS)
    shown = [n for n in names if not n.startswith(MMLU_PREFIX)]
    for i, spec in specs:
        check_task_name(tm, spec.lm_eval or "", f"{where}[{i}].lm_eval", shown + ["mmlu_local_<subject>"])
        check_task_metric(tm, spec.lm_eval or "", spec.metric, f"{where}[{i}].metric")
    _check_task_data(settings, tm, [(i, s) for i, s in specs if not is_local_task(s.lm_eval or "")], where)
    return tm


def _check_task_data(settings: Settings, tm: Any, specs: list[tuple[int, TaskSpec]], where: str) -> None:
    """Load each task's data once per configuration (seconds: lm-eval's TaskManager and the dataset)."""
    if not specs:
        return
    cache = ItemCache(settings.cache_path)
    try:
        for i, spec in specs:
            key = data_check_key(task_fingerprint(tm, spec.lm_eval or ""))
            if cache.get_task(key) is None:
                from harness.backends.lmeval_adapter import check_task_data  # imports lm-eval

                check_task_data(tm, spec.lm_eval or "", f"{where}[{i}].lm_eval")
                cache.put_task(key, {"data_loaded": True})
    finally:
        cache.close()


def evaluate_suite(settings: Settings, model: Backend | str, suite: Suite, *, backend_kind: str = "hf",
                   backend_opts: dict[str, Any] | None = None, limit: int | None = None,
                   use_fast_scorer: bool = True, show_progress: bool = True, task_manager: Any = None) -> Run:
    """Evaluate `model` (an open Backend, or a model reference to open and close) on `suite`.

    `task_manager` is what `check_suite_tasks` returned (or lm-eval's own TaskManager), for
    callers that checked the suite's task names before loading models; without it the names are
    checked here. `limit` caps the documents per subject (leaf task) after the suite's own
    sampling, from the front of the same seeded order. Returns an unsaved Run
    of kind "eval": one item row per scored document per task, aggregates per
    task, subject and category, and a manifest with the model's hashes, the
    suite (name, version, file hash, seed) and the scoring parameters. Its `cache` counts
    hits (requests answered without computing, those of tasks answered by their manifest
    included), misses, and `tasks_from_manifest` (their labels).
    """
    t0 = time.time()
    tm = task_manager if task_manager is not None else check_suite_tasks(settings, suite)
    owns = isinstance(model, str)
    if owns:
        backend: Backend = open_backend(settings, model, kind=backend_kind, **(backend_opts or {}))
    else:
        backend = model  # type: ignore[assignment]
    cache = ItemCache(settings.cache_path)
    try:
        scorer: Any = backend
        if use_fast_scorer:
            scorer = with_shared_prefix(backend)
        cached = CachedBackend(scorer, cache, chunk_size=CHUNK_REQUESTS, show_progress=show_progress)
        items: list[dict[str, Any]] = []
        tasks: dict[str, Any] = {}
        from_manifest: list[str] = []
        is_interrupted = False
        try:  # around the whole loop, so a Ctrl-C anywhere in it (a log line included) is caught
            for spec in suite.tasks:
                t_task = time.time()
                log.info("task %s (%s)", spec.label, spec.lm_eval or spec.harness)
                try:
                    rows, about, is_stored = _answer_task(settings, suite, spec, cached, tm, limit)
                    if is_stored:
                        from_manifest.append(spec.label)
                except HarnessError as e:
                    log.error("task %s failed: %s", spec.label, e)
                    tasks[spec.label] = _failed_task(spec, str(e))
                    continue
                summary = {**summarize_task(spec, rows), **about, "wall_s": round(time.time() - t_task, 1)}
                tasks[spec.label] = summary
                items.extend(rows)
        except KeyboardInterrupt:
            # Finished chunks of the interrupted task are in the item cache; the run records what was scored.
            is_interrupted = True
            missing = [spec for spec in suite.tasks if spec.label not in tasks]
            for k, spec in enumerate(missing):
                tasks[spec.label] = _failed_task(spec, "interrupted (Ctrl-C); its finished items are cached" if k == 0
                                                 else "not run: interrupted (Ctrl-C) before it started")
        manifest = {
            "models": [_describe_model(backend, model)],
            "suite": suite.describe(),
            "seeds": {"sampling": suite.seed, "fewshot": suite.seed},
            "backend": {"name": backend.name, "scoring_params": scorer.scoring_params,
                        "limit_per_subject": limit, "notice": backend.notice,
                        # platform, GPUs, engine arguments, log-likelihood route (hf and vllm backends)
                        "runtime": backend.runtime},
            "cache": {"path": str(settings.cache_path), **cached.stats, "tasks_from_manifest": from_manifest},
            "wall_s": round(time.time() - t0, 1),
        }
        if is_interrupted:
            manifest["interrupted"] = True
        aggregates = {"summary": {label: t.get("value") for label, t in tasks.items()}, "tasks": tasks}
        run = Run(kind="eval", manifest=manifest, items=items, aggregates=aggregates, status=eval_status(tasks))
        if is_interrupted:
            raise Interrupted([run])
        return run
    finally:
        cache.close()
        if owns:
            backend.close()


def eval_status(tasks: dict[str, dict[str, Any]]) -> str:
    """"failed" when no task produced a result, "partial" when some failed, else "complete".

    >>> eval_status({"a": {"failure_reason": "x"}, "b": {"value": 0.5}})
    'partial'
    >>> eval_status({"a": {"failure_reason": "x"}})
    'failed'
    """
    n_failed = sum(1 for t in tasks.values() if t.get("failure_reason"))
    return "failed" if n_failed == len(tasks) else "partial" if n_failed else "complete"


def _failed_task(spec: TaskSpec, reason: str) -> dict[str, Any]:
    return {"metric": spec.metric, "value": None, "n": 0, "failure_reason": reason}


def _describe_model(backend: Any, model: Backend | str) -> dict[str, Any]:
    resolved = backend.resolved
    d = resolved.describe() if resolved is not None else {"ref": model if isinstance(model, str) else backend.name}
    return {**d, "identity": backend.identity}


def _answer_task(settings: Settings, suite: Suite, spec: TaskSpec, cached: CachedBackend, tm: Any,
                 limit: int | None) -> tuple[list[dict[str, Any]], dict[str, Any], bool]:
    """(rows, summary extras, whether they came from the task's manifest).

    A stored manifest (harness.task_manifest) answers the task whole: no lm-eval task is built and
    the backend is asked nothing, so a lazy model never loads and a lazy engine never starts; its
    requests count as cache hits, as the item cache would have counted them. Otherwise the task
    runs (every request still through the item cache) and its manifest is stored.
    """
    content = task_content(settings, suite, spec, tm)

    def key() -> str:  # read each time: a scorer may settle its route (and parameters) at its first request
        return task_key(backend=cached.name, identity=cached.identity, scoring_params=cached.scoring_params,
                        spec=spec, seed=suite.seed, limit=limit, content=content)

    stored = cached.cache.get_task(key())
    if stored is not None:
        cached.count_answered(stored["n_requests"])
        return stored["rows"], stored["about"], True
    asked = cached.n_requests
    rows, about = _run_task(settings, suite, spec, cached, tm, limit)
    cached.cache.put_task(key(), {"rows": rows, "about": about, "n_requests": cached.n_requests - asked})
    return rows, about, False


def _run_task(settings: Settings, suite: Suite, spec: TaskSpec, cached: CachedBackend, tm: Any,
              limit: int | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The task's rows, and what its summary records beyond them (lm-eval's view of the task)."""
    if spec.lm_eval:
        return _run_lmeval(settings, suite, spec, cached, tm, limit)
    if spec.harness == "perplexity":
        return _run_perplexity(settings, suite, spec, cached, limit), {}
    return _run_golden(settings, suite, spec, cached, limit), {}


def _run_lmeval(settings: Settings, suite: Suite, spec: TaskSpec, cached: CachedBackend, tm: Any,
                limit: int | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from harness.backends.lmeval_adapter import run_lmeval_task
    categories = mmlu_categories(settings.data_dir) if (settings.data_dir / "mmlu").is_dir() else {}

    def describe(leaf: str, doc: dict[str, Any]) -> dict[str, Any]:
        subject = doc.get("subject") or (leaf.removeprefix(MMLU_PREFIX) if leaf.startswith(MMLU_PREFIX) else leaf)
        return {"subject": subject, "category": doc.get("category") or categories.get(subject),
                "source_id": doc.get("id")}

    result = run_lmeval_task(cached.with_tag(f"lm_eval/{spec.lm_eval}@local{FORMAT_VERSION}"), spec.lm_eval or "",
                             tm=tm, num_fewshot=spec.num_fewshot, fewshot_seed=suite.seed,
                             choose_docs=lambda sizes: choose_docs(sizes, spec, suite.seed, limit),
                             describe_doc=describe)
    key = metric_key(spec)
    rows = []
    for r in result.rows:
        # `score` is the suite's metric for this item; `correct` only where that metric is right/wrong (0/1),
        # so comparisons use McNemar there and a paired bootstrap for continuous metrics.
        score = r.get(key)
        rows.append({**r, "task": spec.label, "leaf": r["task"], "item_id": f"{r['task']}/{r['doc_id']}",
                     "task_version": result.leaf_versions.get(r["task"]), "gold": r.get("target"), "score": score,
                     "correct": bool(score) if score in (0.0, 1.0) else None})
    # What lm-eval's own results file would say of the task (exports read it): documents available per
    # leaf, few-shot count, each metric's direction and the versions.
    about = {"lm_eval": {"task": spec.lm_eval, "num_fewshot": spec.num_fewshot, "n_docs": result.n_docs,
                         "higher_is_better": result.higher_is_better, "versions": result.leaf_versions}}
    return rows, about


def metric_key(spec: TaskSpec) -> str:
    """The per-item field holding a task's metric (lm-eval's "acc,none" is the field "acc").

    >>> metric_key(TaskSpec(lm_eval="gsm8k", metric="exact_match,strict-match"))
    'exact_match,strict-match'
    >>> metric_key(TaskSpec(lm_eval="arc_easy", metric="acc_norm,none"))
    'acc_norm'
    """
    return "passed" if spec.harness == "golden" else spec.metric.removesuffix(",none")


def _select(spec: TaskSpec, suite: Suite, n: int, limit: int | None) -> list[int]:
    return choose_docs({spec.label: n}, spec, suite.seed, limit)[spec.label]


def _run_perplexity(settings: Settings, suite: Suite, spec: TaskSpec, cached: CachedBackend,
                    limit: int | None) -> list[dict[str, Any]]:
    docs = load_text_set(settings, suite.resolve_data(spec))
    chosen = [docs[i] for i in _select(spec, suite, len(docs), limit)]
    results = cached.with_tag(f"perplexity/{spec.data}@1").loglikelihood_rolling([RollingRequest(t) for _, t in chosen])
    return [{"task": spec.label, "item_id": doc_id, "subject": spec.data, "nll": -r.logprob, "n_tokens": r.n_tokens}
            for (doc_id, _), r in zip(chosen, results)]


def _run_golden(settings: Settings, suite: Suite, spec: TaskSpec, cached: CachedBackend,
                limit: int | None) -> list[dict[str, Any]]:
    golden = load_golden_set(settings, suite.resolve_data(spec))
    chosen = [golden[i] for i in _select(spec, suite, len(golden), limit)]
    # A prompt too long for the context fails alone; the other items are still answered and scored.
    gens = call_per_item_on_overflow(cached.with_tag(GENERATION_TAG).generate,
                                     [g.to_request(max_new_tokens=spec.max_new_tokens) for g in chosen])
    rows = []
    for item, gen in zip(chosen, gens):
        # The input and the checks travel with the output, so the report shows each item whole.
        row = {"task": spec.label, "item_id": item.id, "source": item.source, "subject": (item.tags or [None])[0],
               "tags": item.tags, "ideal": item.ideal, "prompt": item.prompt,
               "messages": [m.model_dump() for m in item.messages] if item.messages else None,
               "checks": item.checks.model_dump(exclude_defaults=True) if item.checks else None}
        if isinstance(gen, Exception):
            where = f" ({item.source})" if item.source else ""
            rows.append({**row, "output": None, "finish_reason": None, "passed": None, "failure_reasons": [],
                         "unscored_reason": f"item '{item.id}'{where}: {gen}"})
            continue
        passed, reasons = run_checks(item, gen.text)
        rows.append({**row, "output": gen.text, "finish_reason": gen.finish_reason, "passed": passed,
                     "failure_reasons": reasons})
    return rows


def summarize_task(spec: TaskSpec, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The task's metric overall, per subject and per category; counts items that could not be scored."""
    out: dict[str, Any] = {"metric": spec.metric, "n": len(rows), "margin": spec.margin}
    if spec.harness == "perplexity":
        out.update(_perplexity(rows))
        by: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            by[r["subject"]].append(r)
        out["by_subject"] = {k: _perplexity(v) for k, v in sorted(by.items())}
        return out
    key = metric_key(spec)
    out.update(_mean(rows, key))
    if spec.lm_eval:  # every (metric, filter) pair the task reports, in lm-eval's key form
        pairs = dict.fromkeys(k for r in rows for k in r.get("metric_keys") or [])
        out["metrics"] = {k: _mean(rows, k.removesuffix(",none")) for k in pairs}
    unscored = [{"item_id": r["item_id"], "source": r.get("source"), "reason": r["unscored_reason"]}
                for r in rows if r.get("unscored_reason")]
    if unscored:
        out["unscored"] = unscored
        if len(unscored) == len(rows):
            out["failure_reason"] = f"no item could be scored; first: {unscored[0]['reason']}"
    for level in ("subject", "category"):
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            if r.get(level) is not None:
                groups[str(r[level])].append(r)
        if len(groups) > 1:
            out[f"by_{level}"] = {k: _mean(v, key) for k, v in sorted(groups.items())}
    return out


def _mean(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    vals = [float(r[key]) for r in rows if r.get(key) is not None]
    # Unscored: no metric value (a golden item without checks, a failed item); never counted as 0.
    return {"value": sum(vals) / len(vals) if vals else None, "n_scored": len(vals), "n_unscored": len(rows) - len(vals)}


def _perplexity(rows: list[dict[str, Any]]) -> dict[str, Any]:
    nll = sum(r["nll"] for r in rows)
    n_tokens = sum(r["n_tokens"] for r in rows)
    return {"value": math.exp(nll / n_tokens) if n_tokens else None, "nll": nll, "n_tokens": n_tokens,
            "n_unscored": 0}
