"""lm-eval on our backends: an `LM` subclass over the Backend protocol, and a task runner.

This is the module that runs lm-eval (harness.backends.lmeval_index reads its task index
without importing it, and its metric registry for the suite check). `run_lmeval_task`
loads one lm-eval task or group (built-in, or the local YAMLs from
harness.suites.lmeval_data), picks the documents to score, runs lm-eval's own
evaluator with `log_samples` on, and returns one plain row per document, so
the prompts, few-shot examples and metrics are exactly lm-eval's.
"""
from __future__ import annotations

import functools
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from lm_eval.api.model import LM

from harness.backends.base import Backend, call_per_item_on_overflow
# task_manager lives with the index; imported here too, where callers running lm-eval look for it.
from harness.backends.lmeval_index import leaf_config, metric_field, task_manager  # noqa: F401
from harness.errors import ContextTooLongError, SuiteError
from harness.records import GenerateRequest, LoglikelihoodRequest, RollingRequest

log = logging.getLogger(__name__)


class BackendLM(LM):
    """Expose any harness Backend to lm-eval's evaluator.

    lm-eval hands over Instances whose `args` are (context, continuation) for
    loglikelihood, (text,) for loglikelihood_rolling and (context, gen_kwargs)
    for generate_until; each method maps them onto our frozen request records
    and returns lm-eval's tuple/float/str results in the same order.
    """

    def __init__(self, backend: Backend):
        super().__init__()
        self.backend = backend

    def loglikelihood(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        results = _naming_the_document(self.backend.loglikelihood, [LoglikelihoodRequest(*r.args) for r in requests],
                                       requests)
        return [(r.logprob, r.is_greedy) for r in results]

    def loglikelihood_rolling(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[float]:
        results = self.backend.loglikelihood_rolling([RollingRequest(r.args[0]) for r in requests])
        return [r.logprob for r in results]

    def generate_until(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[str]:
        reqs = [generate_request_from_lmeval(*r.args) for r in requests]
        return [g.text for g in _naming_the_document(self.backend.generate, reqs, requests)]


def _naming_the_document(method: Callable[[list[Any]], list[Any]], reqs: list[Any], instances: Sequence[Any]) -> list[Any]:
    """method(reqs); a request too long for the context fails the task with a message naming its
    document (lm-eval scores every request of a task, so the task cannot go on without it)."""
    try:
        return method(reqs)
    except ContextTooLongError:
        # Find the culprit; the batches that fit are answered (and cached) on the way.
        found = call_per_item_on_overflow(method, reqs)
        bad = [i for i, r in enumerate(found) if isinstance(r, Exception)]
        if not bad:
            return found
        k = bad[0]
        raise ContextTooLongError(f"{getattr(instances[k], 'task_name', 'task')} document "
                                  f"{getattr(instances[k], 'doc_id', '?')}: {found[k]}") from None


def generate_request_from_lmeval(context: str, gen_kwargs: dict[str, Any]) -> GenerateRequest:
    """lm-eval's generate_until kwargs (until, max_gen_toks, do_sample, temperature) as a GenerateRequest."""
    until = gen_kwargs.get("until") or ()
    until = (until,) if isinstance(until, str) else tuple(until)
    temperature = float(gen_kwargs.get("temperature", 0.0) or 0.0) if gen_kwargs.get("do_sample", False) else 0.0
    return GenerateRequest(prompt=context, max_new_tokens=int(gen_kwargs.get("max_gen_toks", 256)),
                           temperature=temperature, top_p=float(gen_kwargs.get("top_p", 1.0) or 1.0), stop=until)


@dataclass
class LMEvalTaskResult:
    task: str
    version: str  # the task's (or group's) metadata version, for cache tags and manifests
    leaf_versions: dict[str, str]
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per scored document, every filter merged in
    n_docs: dict[str, int] = field(default_factory=dict)  # leaf -> documents available
    higher_is_better: dict[str, bool] = field(default_factory=dict)  # metric -> lm-eval's direction


def check_task_data(tm: Any, name: str, where: str) -> None:
    """Load a task's documents once, so that one whose dataset is neither local nor in the Hugging Face
    cache (offline) fails before any model loads, with one line naming the dataset it needs."""
    load_task(tm, name, where)


def load_task(tm: Any, name: str, where: str) -> dict[str, Any]:
    """lm-eval's `tm.load([name])`; SuiteError naming the dataset when its data cannot be loaded."""
    try:
        with _without_context_bars():
            return tm.load([name])
    except Exception as e:  # datasets raises many kinds (ConnectionError, FileNotFoundError, ValueError, ...)
        cfg, leaf = leaf_config(tm, name)
        dataset = cfg.get("dataset_path") or "?"
        subset = f" (subset '{cfg['dataset_name']}')" if cfg.get("dataset_name") else ""
        files = (cfg.get("dataset_kwargs") or {}).get("data_files")
        source = f" from {files}" if files else ""
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SuiteError(f"{where} '{name}': cannot load its data: task '{leaf}' needs dataset '{dataset}'{subset}"
                         f"{source}, which is neither local nor in the Hugging Face cache ({reason[:200]}); "
                         f"download it where there is network, or point a task YAML at local files "
                         f"(include_path)") from None


def run_lmeval_task(backend: Backend, name: str, *, tm: Any, num_fewshot: int, fewshot_seed: int,
                    choose_docs: Callable[[dict[str, int]], dict[str, list[int]]],
                    describe_doc: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None) -> LMEvalTaskResult:
    """Score one lm-eval task or group with `backend` and return per-document rows.

    `choose_docs` gets {leaf task: number of documents} and returns
    {leaf task: sorted document indices}; every leaf must be present (an empty
    list skips it). `describe_doc(leaf, doc)` adds labels such as subject and
    category to a row. Rows hold: task (leaf), doc_id, target, pred, correct
    metrics (acc, acc_norm, ...) and the raw per-choice log-likelihoods.
    """
    import random

    import numpy as np
    from lm_eval.evaluator import evaluate

    # A dataset that loaded when the suite was checked (or in an earlier run of this configuration,
    # harness.evaluate.check_suite_tasks) may be gone by now: the task fails alone, in one line.
    tasks = load_task(tm, name, "lm-eval task")["tasks"]
    sizes = {leaf: len(task.eval_docs) for leaf, task in tasks.items()}
    chosen = choose_docs(sizes)
    for leaf, task in tasks.items():
        task.set_config(key="num_fewshot", value=num_fewshot)
        task.set_fewshot_seed(seed=fewshot_seed)
    # lm-eval's simple_evaluate seeds these globals before evaluating; some
    # tasks' samplers and filters read them, so the same is done here.
    random.seed(0)
    np.random.seed(1234)
    leaf_names = [leaf for leaf in tasks if chosen.get(leaf)]
    if not leaf_names:
        raise SuiteError(f"task '{name}': the sample selects no documents (sizes: {sizes})")
    # Groups are left out: lm-eval's group aggregation assumes every leaf ran,
    # and the harness aggregates per task, subject and category itself.
    with _without_context_bars():
        out = evaluate(lm=BackendLM(backend), task_dict={"tasks": {leaf: tasks[leaf] for leaf in leaf_names},
                                                         "groups": {}},
                       samples={leaf: chosen[leaf] for leaf in leaf_names}, log_samples=True, bootstrap_iters=0)
    versions = {leaf: str(out.get("versions", {}).get(leaf, tasks[leaf].VERSION)) for leaf in leaf_names}
    result = LMEvalTaskResult(task=name, version=str(out.get("versions", {}).get(name, versions[leaf_names[0]])),
                              leaf_versions=versions, n_docs=sizes)
    for leaf in leaf_names:
        result.higher_is_better.update({str(k): bool(v) for k, v in (out.get("higher_is_better", {}).get(leaf) or {}).items()})
        by_doc: dict[Any, dict[str, Any]] = {}
        for s in out["samples"].get(leaf, []):  # one sample per (document, filter)
            row = by_doc.get(s["doc_id"])
            if row is None:
                row = by_doc[s["doc_id"]] = _document_row(leaf, tasks[leaf].OUTPUT_TYPE, s)
                if describe_doc is not None:
                    row.update(describe_doc(leaf, s["doc"]))
            _add_filter(row, s)
        result.rows.extend(by_doc.values())
    return result


def _document_row(leaf: str, output_type: str, s: dict[str, Any]) -> dict[str, Any]:
    """A document's row, before its filters' results are added: lm-eval's own record of it, JSON-plain.

    The context of its requests is stored once as `prompt`; each request's `arguments` entry holds
    None in its place when it is that prompt (a 5-shot MMLU context is kilobytes, times four choices).
    """
    args = [_plain(list(a)) for a in s.get("arguments") or []]
    prompt = args[0][0] if args else None
    row: dict[str, Any] = {
        "task": leaf, "doc_id": s["doc_id"], "target": _plain(s["target"]), "output_type": output_type,
        "doc": _plain(s.get("doc")), "prompt": prompt,
        "arguments": [[None if a[0] == prompt else a[0], *a[1:]] for a in args],
        "resps": _plain(s.get("resps")), "filtered_resps": {}, "metric_keys": [],
        "doc_hash": s.get("doc_hash"), "prompt_hash": s.get("prompt_hash"), "target_hash": s.get("target_hash")}
    if output_type == "multiple_choice":
        lls = [float(r[0][0]) for r in s.get("resps") or []]
        row["loglikelihoods"] = lls
        row["pred"] = max(range(len(lls)), key=lls.__getitem__) if lls else None
    return row


def _add_filter(row: dict[str, Any], s: dict[str, Any]) -> None:
    """One filter's responses and metric values, each (metric, filter) pair its own field (metric_field)."""
    filter_name = str(s.get("filter", "none"))
    row["filtered_resps"][filter_name] = _plain(s["filtered_resps"])
    if row["output_type"] == "generate_until" and "pred" not in row:  # the first filter's answer
        row["pred"] = _plain(s["filtered_resps"][0] if s["filtered_resps"] else None)
    for m in s.get("metrics", []):
        value = s.get(m)
        if isinstance(value, (int, float)):  # corpus-level metrics (bleu, f1) log tuples, not item values
            row[metric_field(m, filter_name)] = float(value)
            row["metric_keys"].append(f"{m},{filter_name}")


@contextmanager
def _without_context_bars() -> Iterator[None]:
    """lm-eval draws a tqdm bar per leaf task while building its contexts (57 for MMLU) and offers no
    switch; its task module's `tqdm` is swapped for a disabled one for the call, and put back. The
    task's own bar is the item cache's (harness.backends.cache)."""
    import lm_eval.api.task as lm_task

    drawn = lm_task.tqdm
    lm_task.tqdm = functools.partial(drawn, disable=True)
    try:
        yield
    finally:
        lm_task.tqdm = drawn


def _plain(x: Any) -> Any:
    """JSON-friendly form of an lm-eval document, target or response (tuples to lists, numpy scalars to
    numbers, other objects to str).

    >>> _plain({"a": (1, 2.5), "b": None, 3: object.__name__})
    {'a': [1, 2.5], 'b': None, '3': 'object'}
    """
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if hasattr(x, "item") and callable(x.item):  # numpy scalars
        return _plain(x.item())
    return str(x)
