"""Task manifests: a task's finished rows, stored once and given back whole on an unchanged rerun.

A rerun whose every item is in the item cache still paid for lm-eval (importing it, building its
tasks: datasets, few-shot contexts for 57 MMLU subjects) and for whatever a backend loads before
its first request. A task manifest is what harness.evaluate makes of one suite task, its item rows
and its summary extras, stored in the item cache's SQLite (ItemCache.get_task / put_task) under a
key of everything that could change a row:

- the backend as the item cache keys it: name, identity (base and adapter content hashes) and
  scoring parameters (read when the task starts; the rows are stored under those read when it
  ends, so a scorer that settles its route at the first request files them under that route);
- the suite task's spec (model_dump, its gate `margin` left out: only comparisons read it, and
  they recompute from the rows), the suite's seed and the --limit cap;
- the task's content: for an lm-eval task harness.backends.lmeval_index.task_fingerprint (the
  configuration of the task and its members, the files their `!function`s name, their local data
  files) with MMLU's categories file and the local copy's FORMAT_VERSION; for a harness task the
  content of its data file;
- ROWS_VERSION and the source of the modules that build requests and rows (ROW_SOURCES), so a
  code change that could move a row is a miss, never a stale hit;
- the versions of the libraries that shape rows (LIBRARIES).

Wrong reuse is far worse than a slow rerun: what is not sure to leave rows alone belongs in the key.
"""
from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

from harness.backends.cache import ItemCache
from harness.backends.lmeval_index import library_version, task_fingerprint
from harness.errors import SuiteError
from harness.settings import Settings
from harness.suites.golden import golden_set_file
from harness.suites.lmeval_data import FORMAT_VERSION
from harness.suites.spec import Suite, TaskSpec
from harness.suites.text import text_set_file

ROWS_VERSION = 1  # bump when rows change shape in a way ROW_SOURCES would not show
# Modules whose code builds a task's requests or rows (their source is part of every key).
ROW_SOURCES = ("harness.evaluate", "harness.task_manifest", "harness.backends.lmeval_adapter",
               "harness.backends.lmeval_index", "harness.backends.base", "harness.records",
               "harness.suites.spec", "harness.suites.golden", "harness.suites.golden_smoke",
               "harness.suites.text", "harness.suites.lmeval_data")
# lm-eval builds prompts, filters and metrics; datasets parses the data files; numpy draws the samples.
LIBRARIES = ("lm_eval", "datasets", "numpy")


def task_key(*, backend: str, identity: str, scoring_params: dict[str, Any], spec: TaskSpec, seed: int,
             limit: int | None, content: dict[str, Any]) -> str:
    """The key of one task's manifest; pure. `content` is what `task_content` read for the task.

    >>> spec = TaskSpec(lm_eval="t", metric="acc", margin=1.0)
    >>> args = dict(backend="hf", identity="sha256:a", scoring_params={}, seed=1, limit=None, content={})
    >>> task_key(spec=spec, **args) == task_key(spec=spec.model_copy(update={"margin": 9.0}), **args)
    True
    >>> task_key(spec=spec, **args) == task_key(spec=spec.model_copy(update={"num_fewshot": 5}), **args)
    False
    """
    return ItemCache.key({"kind": "task-manifest", "backend": backend, "identity": identity,
                          "params": scoring_params, "spec": spec.model_dump(exclude={"margin"}), "seed": seed,
                          "limit": limit, "content": content})


def task_content(settings: Settings, suite: Suite, spec: TaskSpec, tm: Any) -> dict[str, Any]:
    """Everything of a task but the model that shapes its rows, read from the files (milliseconds;
    no lm-eval import). `tm`: the suite's task index (harness.backends.lmeval_index.TaskCatalog or
    lm-eval's TaskManager), for lm-eval tasks. SuiteError when a data file cannot be read."""
    out: dict[str, Any] = {"rows_version": ROWS_VERSION, "sources": sources_digest(),
                           "libraries": {name: library_version(name) for name in LIBRARIES}}
    if spec.lm_eval:
        categories = settings.data_dir / "mmlu" / "categories.json"  # labels every MMLU row
        return {**out, "lm_eval": task_fingerprint(tm, spec.lm_eval), "local_format": FORMAT_VERSION,
                "categories": file_digest(categories) if categories.is_file() else None}
    data = suite.resolve_data(spec)
    path = golden_set_file(settings, data) if spec.harness == "golden" else text_set_file(settings, data)
    # No path: the built-in smoke set, whose items are code (harness.suites.golden_smoke, in ROW_SOURCES).
    return {**out, "data": data, "data_sha256": file_digest(path) if path is not None else None}


def data_check_key(fingerprint: str) -> str:
    """The key under which a task configuration is recorded as having loaded its data (check_suite_tasks)."""
    return ItemCache.key({"kind": "lm-eval-data-loaded", "fingerprint": fingerprint,
                          "datasets": library_version("datasets"), "lm_eval": library_version("lm_eval")})


@lru_cache(maxsize=1)
def sources_digest() -> str:
    """sha256 over the source of ROW_SOURCES (read once per process)."""
    h = hashlib.sha256()
    for name in ROW_SOURCES:
        spec = importlib.util.find_spec(name)
        origin = Path(spec.origin) if spec is not None and spec.origin else None
        h.update(name.encode() + b"\0" + (origin.read_bytes() if origin is not None and origin.is_file() else b"?"))
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file's content; SuiteError naming it when it cannot be read."""
    h = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:
        raise SuiteError(f"{path}: cannot read it to key the task manifest: {e}") from e
    return h.hexdigest()
