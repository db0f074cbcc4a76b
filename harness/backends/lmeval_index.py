"""lm-eval's task index read from the YAML alone: names, configurations, metrics and a content fingerprint.

Importing lm-eval's TaskManager costs about 3 s (datasets, pandas), and indexing its ~15k built-in
task YAMLs 5-15 s more; a rerun that the task manifests answer (harness.task_manifest) needs
neither. `TaskCatalog` answers what the suite check and the manifest keys ask of the index
(`task_index`, `all_tasks`) without importing lm-eval, and builds lm-eval's own TaskManager at the
first `load`, for a task that must really run.

The walk mirrors `lm_eval.tasks._index.TaskIndex.build` (lm-eval 0.4.13): every `**/*.yaml` of each
folder in sorted order, the same loader (includes merged, `!function` left as a path string), the
same kinds (task, python task, group, tag) and duplicates handling (first within a folder, later
folders override earlier). It is only a fast path: a name it does not find is looked up in
lm-eval's own index before any error is raised (harness.evaluate.check_suite_tasks). The built-in
folder's names are walked once per lm-eval version and kept in HARNESS_HOME/lmeval.
"""
from __future__ import annotations

import difflib
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from harness import atomic
from harness.errors import SuiteError

log = logging.getLogger(__name__)

_IGNORE_DIRS = {"__pycache__", ".ipynb_checkpoints"}
_BASE_LOADER = yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.FullLoader  # as lm-eval
BUILTIN_INDEX_FORMAT = 1  # bump when the memo's layout or the walk changes


class Kind(Enum):
    """lm_eval.tasks._index.Kind: callers read `kind.name`, so the names are lm-eval's."""

    TASK = "task"
    PY_TASK = "py_task"
    GROUP = "group"
    TAG = "tag"


@dataclass(frozen=True)
class IndexEntry:
    """One name of the index, shaped as lm-eval's `Entry` (name, kind, yaml_path, cfg, tags).

    `read` holds the configuration when it was read while indexing; entries from the built-in
    memo read theirs from `yaml_path` at first use (the file is what lm-eval's index would hold).
    """

    name: str
    kind: Kind
    yaml_path: Path | None
    tags: frozenset[str] = frozenset()
    read: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @cached_property
    def cfg(self) -> dict[str, Any] | None:
        if self.read is not None or self.yaml_path is None:
            return self.read
        return load_task_yaml(self.yaml_path)


def load_task_yaml(path: Path, _seen: set[Path] | None = None) -> dict[str, Any]:
    """A task YAML as lm-eval's index reads it (`load_yaml(resolve_func=False)`): `include`d files
    merged under the file's own keys, `!function utils.f` kept as the string '<folder>/utils.f'.
    As there, a file reached twice through includes is an error (lm-eval then skips the file)."""
    path = path.expanduser().resolve()
    seen = set() if _seen is None else _seen
    if path in seen:
        raise ValueError(f"include cycle at {path}")
    seen.add(path)

    class Loader(_BASE_LOADER):  # type: ignore[misc,valid-type]
        pass

    def function(loader: Any, node: Any) -> str:
        return str(path.parent / loader.construct_scalar(node))

    Loader.add_constructor("!function", function)
    with path.open("rb") as f:
        cfg = yaml.load(f, Loader=Loader)  # noqa: S506 - lm-eval's loader, one extra tag
    if not isinstance(cfg, dict):
        raise ValueError(f"expected a YAML mapping in {path}, got {type(cfg).__name__}")
    if "include" not in cfg:
        return cfg
    includes = cfg.pop("include")
    merged: dict[str, Any] = {}
    for inc in includes if isinstance(includes, list) else [includes]:
        inc_path = Path(inc) if Path(inc).is_absolute() else path.parent / inc
        inc_cfg = load_task_yaml(inc_path, seen)
        inc_cfg.pop("task_list", None)  # lm-eval: an included file's task_list is its own
        merged.update(inc_cfg)
    merged.update(cfg)
    return merged


def _kind_of(cfg: dict[str, Any]) -> Kind:
    if "class" in cfg:
        return Kind.PY_TASK
    if "group" in cfg:
        return Kind.GROUP
    if "task" in cfg:
        return Kind.TASK
    raise ValueError(f"unknown config shape: keys={list(cfg)}")


def _as_set(value: Any) -> set[str]:
    return set() if value is None else {value} if isinstance(value, str) else set(value)


def index_folders(folders: Iterable[Path]) -> dict[str, IndexEntry]:
    """{name: IndexEntry} for every task, group and tag the folders' YAMLs define (later folders win)."""
    index: dict[str, IndexEntry] = {}
    for root in folders:
        found: dict[str, tuple[Kind, Path | None, set[str], dict[str, Any] | None]] = {}
        for path in sorted((p for p in Path(root).glob("**/*.yaml") if not _IGNORE_DIRS & set(p.parts)),
                           key=lambda p: p.as_posix()):
            try:
                cfg = load_task_yaml(path)
                kind = _kind_of(cfg)
                name = cfg["group"] if kind is Kind.GROUP else cfg["task"]
                if name in found:
                    continue  # lm-eval keeps the first of a name within one folder
                found[name] = (kind, path, _as_set(cfg.get("tag")), cfg)
                if kind is not Kind.GROUP:
                    for tag in _as_set(cfg.get("tag")):  # a tag lists its tasks in its own `tags`
                        found.setdefault(tag, (Kind.TAG, None, set(), None))[2].add(name)
            except Exception as e:  # noqa: BLE001 - lm-eval skips any file it cannot read, whatever the error
                log.debug("skip %s (%s)", path, e)
        index.update({n: IndexEntry(n, k, p, frozenset(t), c) for n, (k, p, t, c) in found.items()})
    return index


def builtin_tasks_dir() -> Path | None:
    """lm-eval's own task folder, found without importing lm-eval; None when lm-eval is not installed."""
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "tasks"


def builtin_index(home: Path | None) -> dict[str, IndexEntry]:
    """The built-in tasks' index, walked once per lm-eval version and kept in HOME/lmeval (names,
    kinds, files and tags; each configuration is read from its file when asked for). Without
    `home`, walked and not kept."""
    folder = builtin_tasks_dir()
    if folder is None:
        return {}
    if home is None:
        return index_folders([folder])
    key = hashlib.sha256(f"{BUILTIN_INDEX_FORMAT}\0{library_version('lm_eval')}\0{folder}".encode()).hexdigest()
    memo = home / "lmeval" / f"builtin-index-{key[:16]}.json"
    try:
        stored = json.loads(memo.read_text())
        return {n: IndexEntry(n, Kind[k], Path(p) if p else None, frozenset(t)) for n, (k, p, t) in stored.items()}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    index = index_folders([folder])
    atomic.write_text(memo, json.dumps({n: [e.kind.name, str(e.yaml_path) if e.yaml_path else None, sorted(e.tags)]
                                        for n, e in index.items()}))
    return index


def library_version(name: str) -> str | None:
    """An installed distribution's version, without importing it; None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


class TaskCatalog:
    """The index of `folders` (and of lm-eval's built-in tasks with `include_defaults`), as far as a
    suite check and the task manifests need it; lm-eval's TaskManager is built at the first `load`.

    Quacks like lm-eval's TaskManager where the harness reads it: `task_index`, `all_tasks`, `load`.
    """

    def __init__(self, folders: Sequence[Path], *, home: Path | None = None, include_defaults: bool = False):
        self.folders = tuple(folders)
        self.include_defaults = include_defaults
        builtin = builtin_index(home) if include_defaults else {}
        # lm-eval indexes the built-in folder first and lets the include paths override it.
        self.task_index: Mapping[str, IndexEntry] = {**builtin, **index_folders(self.folders)}
        self.all_tasks = sorted(self.task_index)
        self._manager: Any = None

    def manager(self) -> Any:
        """lm-eval's TaskManager over the same folders (built once, at first need: seconds)."""
        if self._manager is None:
            self._manager = task_manager(list(self.folders), include_defaults=self.include_defaults)
        return self._manager

    def load(self, names: list[str]) -> Any:
        return self.manager().load(names)


def task_manager(include_paths: Sequence[Path] | Path | None, *, include_defaults: bool = True) -> Any:
    """lm-eval's TaskManager over folders of task YAMLs (the user's and our rendered ones) and, by default,
    the built-in tasks; a folder's task overrides a built-in one of the same name.

    Indexing lm-eval's ~15k built-in task YAMLs takes 5-15 s; callers that
    need only their own folders pass include_defaults=False.
    """
    from lm_eval.tasks import TaskManager

    paths = [include_paths] if isinstance(include_paths, Path) else list(include_paths or [])
    return TaskManager(include_path=[str(p) for p in paths] or None, include_defaults=include_defaults)


# --- what a task's YAML says ------------------------------------------------------------------

def metric_field(metric: str, filter_name: str) -> str:
    """The per-item field holding one (metric, filter) pair's value: the bare metric for lm-eval's
    "none" filter (acc, acc_norm, as before filters were told apart), else lm-eval's own results key.

    >>> metric_field("acc", "none"), metric_field("exact_match", "strict-match")
    ('acc', 'exact_match,strict-match')
    """
    return metric if filter_name == "none" else f"{metric},{filter_name}"


@dataclass(frozen=True)
class TaskMetrics:
    """What a task's YAML says it reports, read from the task index (no dataset is loaded)."""

    leaf: str  # the leaf task the answer was read from (a group's first leaf)
    output_type: str
    fields: tuple[str, ...]  # per-item fields, metric_field(metric, filter), comparable as per-item means
    not_per_item: dict[str, str]  # metric -> its corpus-level aggregation (bleu, f1, ...), not a mean of items


def task_metrics(tm: Any, name: str) -> TaskMetrics:
    """The (metric, filter) fields a task or group defines: its metric_list (or lm-eval's default metrics
    for its output type) crossed with its filter_list (or "none"). Groups and tags answer for their first
    leaf. Metrics whose aggregation is not a mean of per-item values are listed apart: the harness
    compares per-item means, so they cannot be a suite's metric. `tm`: a TaskCatalog or lm-eval's
    TaskManager."""
    from lm_eval.api.registry import DEFAULT_METRIC_REGISTRY, get_metric_aggregation

    cfg, leaf = leaf_config(tm, name)
    output_type = str(cfg.get("output_type") or "generate_until")
    listed = cfg.get("metric_list") or [{"metric": m} for m in DEFAULT_METRIC_REGISTRY.get(output_type, [])]
    filters = [f.get("name", "none") for f in cfg.get("filter_list") or []] or ["none"]
    fields: list[str] = []
    not_per_item: dict[str, str] = {}
    for entry in listed:
        metric = str(entry.get("metric"))
        aggregation = entry.get("aggregation")
        if aggregation is None:
            try:
                default = get_metric_aggregation(metric)
            except (KeyError, ValueError):
                default = None
            aggregation = getattr(default, "__name__", None) or "mean"
        if str(aggregation) != "mean":
            not_per_item[metric] = str(aggregation)
            continue
        fields.extend(metric_field(metric, f) for f in filters)
    return TaskMetrics(leaf=leaf, output_type=output_type, fields=tuple(fields), not_per_item=not_per_item)


def _members(tm: Any, name: str, entry: Any) -> list[Any]:
    """A group's `task` list (names or inline configs), a tag's tasks, or [] for a task."""
    cfg = entry.cfg or {}
    members = cfg.get("task") if isinstance(cfg.get("task"), list) else None
    if members is None and entry.kind.name == "TAG":
        members = sorted(n for n, e in tm.task_index.items() if name in (e.tags or ()))
    return list(members or [])


def leaf_config(tm: Any, name: str, depth: int = 0) -> tuple[dict[str, Any], str]:
    """The configuration a task answers with, and its leaf's name (a group's or tag's first leaf)."""
    entry = tm.task_index.get(name)
    if entry is None or depth > 8:
        raise SuiteError(f"lm-eval task '{name}' has no readable configuration")
    members = _members(tm, name, entry)
    if members:
        first = members[0]
        if isinstance(first, dict):  # an inline task inside a group
            return first, str(first.get("task"))
        return leaf_config(tm, str(first), depth + 1)
    return entry.cfg or {}, name


def check_task_metric(tm: Any, name: str, metric: str, where: str) -> str:
    """The per-item field a suite's `metric` names for task `name`; SuiteError listing the choices if none.

    `metric` is a field as metric_field spells it, or lm-eval's "METRIC,FILTER" key ("acc,none" is "acc").
    """
    info = task_metrics(tm, name)
    key = metric.removesuffix(",none")
    if key in info.fields:
        return key
    bare = key.split(",")[0]
    if bare in info.not_per_item:
        raise SuiteError(f"{where} '{metric}': task '{name}' aggregates it over the corpus "
                         f"({info.not_per_item[bare]}), not as a mean of items, so it cannot be compared "
                         f"item by item; choose {', '.join(info.fields) or 'another task'}")
    raise SuiteError(f"{where} '{metric}' unknown for task '{name}'; choose {', '.join(info.fields)}")


def check_task_name(tm: Any, name: str, where: str, local: Sequence[str]) -> None:
    """Raise SuiteError for a task the index does not know, with close matches and the local tasks."""
    if name in tm.task_index:
        return
    close = difflib.get_close_matches(name, list(tm.all_tasks), n=5, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise SuiteError(f"{where} '{name}' unknown; {hint}choose a local task ({', '.join(local)}) "
                     f"or any of lm-eval's {len(tm.all_tasks)} tasks whose data is available offline")


# --- the fingerprint a task manifest is keyed by ------------------------------------------------

def task_fingerprint(tm: Any, name: str) -> str:
    """sha256 over everything of an lm-eval task that shapes its rows but is not the model: the
    configuration of the task and of every member (groups and tags, recursively; includes merged), the
    Python files its `!function`s name, and the local data files (`dataset_kwargs.data_files`,
    a local `dataset_path` folder); for a hub dataset, the revisions its Hugging Face cache holds.
    `tm`: a TaskCatalog or lm-eval's TaskManager. SuiteError when a member has no configuration."""
    configs: dict[str, Any] = {}
    pending: list[Any] = [name]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):  # an inline member: its config is in its group's; it may name a task
            if isinstance(item.get("task"), str) and item["task"] in tm.task_index:
                pending.append(item["task"])
            continue
        if item in configs:
            continue
        entry = tm.task_index.get(item)
        if entry is None:
            raise SuiteError(f"lm-eval task '{item}' (in '{name}') has no readable configuration")
        configs[item] = {"kind": entry.kind.name, "cfg": entry.cfg, "tags": sorted(entry.tags or ())}
        pending.extend(_members(tm, item, entry))
    files: dict[str, str] = {}
    for cfg in (c["cfg"] or {} for c in configs.values()):
        for path in _referenced_files(cfg):
            files[str(path)] = _file_digest(path)
    blob = json.dumps({"configs": configs, "files": files}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _strings(node: Any) -> Iterable[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def _referenced_files(cfg: dict[str, Any]) -> list[Path]:
    """The files outside the YAML whose content shapes the task's rows."""
    out: list[Path] = []
    for s in _strings(cfg):  # a `!function` reads '<folder>/module.function'
        module, dot, _ = s.rpartition(".")
        if dot and s.startswith("/") and Path(module + ".py").is_file():
            out.append(Path(module + ".py"))
    for s in _strings((cfg.get("dataset_kwargs") or {}).get("data_files")):
        if Path(s).is_file():
            out.append(Path(s))
    dataset = cfg.get("dataset_path")
    if isinstance(dataset, str) and Path(dataset).is_dir():
        out.extend(p for p in sorted(Path(dataset).rglob("*")) if p.is_file())
    elif isinstance(dataset, str) and "/" in dataset:
        out.extend(_hub_revisions(dataset))
    return out


def _hub_revisions(repo: str) -> list[Path]:
    """The refs the Hugging Face hub cache holds for a dataset repository (which revision a load reads)."""
    hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME") or Path.home() / ".cache" /
                                                      "huggingface") / "hub")
    refs = hub / f"datasets--{repo.replace('/', '--')}" / "refs"
    return sorted(p for p in refs.rglob("*") if p.is_file()) if refs.is_dir() else []


def _file_digest(path: Path) -> str:
    stat = path.stat()
    return _digest(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=4096)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    """A file's sha256, read once per process while its size and time stay (compare keys every task
    once per model; MMLU's local copy is 171 files)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
