"""Evaluate one model on one suite and return a Run (the CLI writes it; `compare` reuses it).

`evaluate_suite` is the single entry point. Every scoring path goes through
the per-item cache (harness.cache.CachedBackend), so a rerun, or a comparison
that evaluates the same baseline again, recomputes nothing; finished chunks
survive a crash. Per task kind:

- lm-eval tasks run through lm-eval's evaluator over our backend
  (harness.backends.lmeval_adapter); on the hf backend loglikelihoods come
  from the shared-prefix scorer (harness.mc_scorer) unless disabled;
- `perplexity` scores held-out texts with loglikelihood_rolling;
- `golden` generates greedily and applies each item's mechanical checks.

A task that fails with a HarnessError is recorded as a failure with its
reason (the run becomes "partial"); other tasks still run.
"""
from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from typing import Any, Callable

from harness.backends.base import Backend
from harness.cache import CachedBackend, ItemCache
from harness.errors import HarnessError
from harness.settings import Settings
from harness.store import Run
from harness.suite import Suite, TaskSpec, choose_docs

log = logging.getLogger(__name__)

CHUNK_REQUESTS = 256  # cache commit granularity; large enough for the scorer to share prefixes within a chunk


def check_suite_tasks(settings: Settings, suite: Suite) -> Any:
    """Fail early (before loading a model) on lm-eval task names nobody defines.

    Returns lm-eval's TaskManager over built-in and local tasks, or None when
    the suite has no lm-eval tasks. Local tasks are materialized here (once).
    """
    specs = [(i, t) for i, t in enumerate(suite.tasks) if t.lm_eval]
    if not specs:
        return None
    from harness.backends.lmeval_adapter import check_task_name, task_manager
    from harness.suites_data import local_task_names, materialize_lmeval_tasks

    local = materialize_lmeval_tasks(settings)
    names = local_task_names(settings.data_dir)
    tm = task_manager(local.task_dir, include_defaults=any(t.lm_eval not in names for _, t in specs))
    shown = [n for n in names if not n.startswith("mmlu_local_")]
    where = f"{suite.path or suite.name}: tasks"
    for i, spec in specs:
        check_task_name(tm, spec.lm_eval or "", f"{where}[{i}].lm_eval", shown + ["mmlu_local_<subject>"])
    return tm


def evaluate_suite(settings: Settings, model: Backend | str, suite: Suite, *, backend_kind: str = "hf",
                   backend_opts: dict[str, Any] | None = None, limit: int | None = None,
                   use_fast_scorer: bool = True, show_progress: bool = True,
                   before_compute: Callable[[], None] | None = None) -> Run:
    """Evaluate `model` (an open Backend, or a model reference to open and close) on `suite`.

    `limit` caps the documents per subject (leaf task) after the suite's own
    sampling, from the front of the same seeded order. `before_compute` runs
    once before the first item the cache cannot answer. Returns an unsaved Run
    of kind "eval": one item row per scored document per task, aggregates per
    task, subject and category, and a manifest with the model's hashes, the
    suite (name, version, file hash, seed) and the scoring parameters.
    """
    t0 = time.time()
    tm = check_suite_tasks(settings, suite)
    owns = isinstance(model, str)
    if owns:
        from harness.backends import open_backend

        backend: Backend = open_backend(settings, model, kind=backend_kind, **(backend_opts or {}))
    else:
        backend = model  # type: ignore[assignment]
    cache = ItemCache(settings.cache_path)
    try:
        scorer: Any = backend
        if use_fast_scorer:
            from harness.mc_scorer import with_shared_prefix

            scorer = with_shared_prefix(backend)
        cached = CachedBackend(scorer, cache, chunk_size=CHUNK_REQUESTS,
                               show_progress=show_progress, before_first_miss=before_compute)
        items: list[dict[str, Any]] = []
        tasks: dict[str, Any] = {}
        for spec in suite.tasks:
            t_task = time.time()
            log.info("task %s (%s)", spec.label, spec.lm_eval or spec.harness)
            try:
                rows = _run_task(settings, suite, spec, cached, tm, limit)
            except HarnessError as e:
                log.error("task %s failed: %s", spec.label, e)
                tasks[spec.label] = {"metric": spec.metric, "value": None, "n": 0, "failure_reason": str(e)}
                continue
            items.extend(rows)
            tasks[spec.label] = summarize_task(spec, rows)
            tasks[spec.label]["wall_s"] = round(time.time() - t_task, 1)
        status = "partial" if any(t.get("failure_reason") for t in tasks.values()) else "complete"
        manifest = {
            "models": [_describe_model(backend, model)],
            "suite": suite.describe(),
            "seeds": {"sampling": suite.seed, "fewshot": suite.seed},
            "backend": {"name": backend.name, "scoring_params": getattr(scorer, "scoring_params", {}),
                        "limit_per_subject": limit, "notice": getattr(backend, "notice", None)},
            "cache": {"path": str(settings.cache_path), **cached.stats},
            "wall_s": round(time.time() - t0, 1),
        }
        aggregates = {"summary": {label: t.get("value") for label, t in tasks.items()}, "tasks": tasks}
        return Run(kind="eval", manifest=manifest, items=items, aggregates=aggregates, status=status)
    finally:
        cache.close()
        if owns:
            backend.close()


def _describe_model(backend: Any, model: Backend | str) -> dict[str, Any]:
    resolved = getattr(backend, "resolved", None)
    d = resolved.describe() if resolved is not None else {"ref": model if isinstance(model, str) else backend.name}
    return {**d, "identity": backend.identity}


def _run_task(settings: Settings, suite: Suite, spec: TaskSpec, cached: CachedBackend, tm: Any,
              limit: int | None) -> list[dict[str, Any]]:
    if spec.lm_eval:
        return _run_lmeval(settings, suite, spec, cached, tm, limit)
    if spec.harness == "perplexity":
        return _run_perplexity(settings, suite, spec, cached, limit)
    return _run_golden(settings, suite, spec, cached, limit)


def _run_lmeval(settings: Settings, suite: Suite, spec: TaskSpec, cached: CachedBackend, tm: Any,
                limit: int | None) -> list[dict[str, Any]]:
    from harness.backends.lmeval_adapter import run_lmeval_task
    from harness.suites_data import FORMAT_VERSION, MMLU_PREFIX, mmlu_categories

    categories = mmlu_categories(settings.data_dir)

    def describe(leaf: str, doc: dict[str, Any]) -> dict[str, Any]:
        subject = doc.get("subject") or (leaf.removeprefix(MMLU_PREFIX) if leaf.startswith(MMLU_PREFIX) else leaf)
        return {"subject": subject, "category": doc.get("category") or categories.get(subject),
                "source_id": doc.get("id")}

    result = run_lmeval_task(cached.with_tag(f"lm_eval/{spec.lm_eval}@local{FORMAT_VERSION}"), spec.lm_eval or "",
                             tm=tm, num_fewshot=spec.num_fewshot, fewshot_seed=suite.seed,
                             choose_docs=lambda sizes: choose_docs(sizes, spec, suite.seed, limit),
                             describe_doc=describe)
    rows = []
    for r in result.rows:
        correct = r.get(spec.metric)
        rows.append({**r, "task": spec.label, "leaf": r["task"], "item_id": f"{r['task']}/{r['doc_id']}",
                     "task_version": result.leaf_versions.get(r["task"]), "gold": r.get("target"),
                     "correct": None if correct is None else bool(correct >= 0.5)})
    return rows


def _select(spec: TaskSpec, suite: Suite, n: int, limit: int | None) -> list[int]:
    return choose_docs({spec.label: n}, spec, suite.seed, limit)[spec.label]


def _run_perplexity(settings: Settings, suite: Suite, spec: TaskSpec, cached: CachedBackend,
                    limit: int | None) -> list[dict[str, Any]]:
    from harness.records import RollingRequest
    from harness.suites_text import load_text_set

    docs = load_text_set(settings, suite.resolve_data(spec))
    chosen = [docs[i] for i in _select(spec, suite, len(docs), limit)]
    results = cached.with_tag(f"perplexity/{spec.data}@1").loglikelihood_rolling([RollingRequest(t) for _, t in chosen])
    return [{"task": spec.label, "item_id": doc_id, "subject": spec.data, "nll": -r.logprob, "n_tokens": r.n_tokens}
            for (doc_id, _), r in zip(chosen, results)]


def _run_golden(settings: Settings, suite: Suite, spec: TaskSpec, cached: CachedBackend,
                limit: int | None) -> list[dict[str, Any]]:
    from harness.suites_golden import load_golden_set, run_checks

    golden = load_golden_set(settings, suite.resolve_data(spec))
    chosen = [golden[i] for i in _select(spec, suite, len(golden), limit)]
    gens = cached.with_tag("golden@1").generate([g.to_request(max_new_tokens=spec.max_new_tokens) for g in chosen])
    rows = []
    for item, gen in zip(chosen, gens):
        passed, reasons = run_checks(item, gen.text)
        rows.append({"task": spec.label, "item_id": item.id, "subject": (item.tags or [None])[0], "tags": item.tags,
                     "output": gen.text, "finish_reason": gen.finish_reason, "passed": passed,
                     "failure_reasons": reasons, "ideal": item.ideal})
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
    key = "passed" if spec.harness == "golden" else spec.metric
    out.update(_mean(rows, key))
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
