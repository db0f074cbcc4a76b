"""Suites: declarative YAML files of tasks, validated strictly.

A suite names its tasks (an lm-eval task, or a harness task: `perplexity`
or `golden`), each with few-shot count, a seeded document selection, a metric
and an optional non-inferiority margin for the gate. A harness task's metric
comes from a closed registry; an lm-eval task may name any metric its YAML
defines, with its filter where it has several (`exact_match,strict-match`),
checked against the task by harness.evaluate.check_suite_tasks. Folders of the
user's own lm-eval task YAMLs come in through `include_path` (relative to the
suite file) or `--include-path`. Errors name the file and the key path:

    suites/forgetting.yaml: tasks[2].metric 'acc_nrom' unknown for task 'arc_easy_local'; choose acc, acc_norm

Suites ship in suites/*.yaml; `load_suite` takes one of those names or a path.
Suite files are UTF-8 (a BOM is allowed). Given the settings, `load_suite`
also checks every data file the suite names, before any model loads:

    suites/x.yaml: tasks[1].data 'foo.jsonl': not found (/abs/foo.jsonl); paths are relative to the suite file
"""
from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from harness.errors import SuiteError
from harness.settings import Settings
from harness.suites.golden import golden_set_file, load_golden
from harness.suites.text import load_text_set, text_set_file
from harness.textfile import read_utf8

SUITES_DIR = Path(str(resources.files("suites")))  # the YAML suites, shipped as package data of `suites`
HARNESS_TASKS = ("golden", "perplexity")
# The closed metric registry of harness tasks. lm-eval tasks report what their YAML defines.
METRICS: dict[str, tuple[str, ...]] = {
    "perplexity": ("token_perplexity",),
    "golden": ("check_pass_rate",),
}
# Named held-out text sets for `perplexity` (see harness.suites.text); a path to a file also works.
TEXT_SETS = ("alpaca_heldout", "gsm8k_test")
# Named golden sets for `golden` (see harness.suites.golden); a path to a golden JSONL also works.
GOLDEN_SETS = ("smoke", "self_instruct", "alpaca_heldout")


class Sample(BaseModel):
    """A seeded document selection: `n` in all (stratified across subjects) or `per_subject`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    n: int | None = Field(None, gt=0)
    per_subject: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> "Sample":
        if (self.n is None) == (self.per_subject is None):
            raise ValueError("give exactly one of n (stratified across subjects) or per_subject")
        return self


class TaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    lm_eval: str | None = None  # an lm-eval task or group name
    harness: str | None = None  # a harness task: golden or perplexity
    data: str | None = None  # harness tasks: a named set or a file path (relative to the suite file)
    name: str | None = None  # label in results; defaults to the task (+ data)
    num_fewshot: int = Field(0, ge=0)
    limit: int | None = Field(None, gt=0)  # the first N documents of each subject (lm-eval's --limit)
    sample: Sample | None = None  # a seeded random selection instead
    metric: str
    margin: float | None = Field(None, ge=0)  # gate margin: accuracy points, or % rise of perplexity
    max_new_tokens: int = Field(256, gt=0)  # golden: generation budget per item

    @field_validator("harness")
    @classmethod
    def _known_harness_task(cls, v: str | None) -> str | None:
        if v is not None and v not in HARNESS_TASKS:
            raise ValueError(f"'{v}' unknown; choose {', '.join(HARNESS_TASKS)}")
        return v

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str, info: Any) -> str:
        kind = info.data.get("harness")
        if kind is None:  # an lm-eval task: checked against the task's own metric_list and filters
            if not v.strip() or v.count(",") > 1:
                raise ValueError(f"'{v}': name a metric of the task, with its filter where it has several "
                                 "(METRIC or METRIC,FILTER)")
            return v
        allowed = METRICS.get(kind, ())
        if v not in allowed:
            raise ValueError(f"'{v}' unknown; choose {', '.join(allowed)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "TaskSpec":
        if (self.lm_eval is None) == (self.harness is None):
            raise ValueError("give exactly one of lm_eval (an lm-eval task) or harness (golden, perplexity)")
        if self.limit is not None and self.sample is not None:
            raise ValueError("give at most one of limit and sample")
        if self.harness and not self.data:
            sets = TEXT_SETS if self.harness == "perplexity" else GOLDEN_SETS
            raise ValueError(f"harness task '{self.harness}' needs data: one of {', '.join(sets)} or a file path")
        if self.lm_eval and self.data:
            raise ValueError("data is for harness tasks; lm-eval tasks name their data in their YAML")
        if self.harness and self.num_fewshot:
            raise ValueError(f"num_fewshot applies to lm-eval tasks, not harness task '{self.harness}'")
        return self

    @property
    def label(self) -> str:
        return self.name or self.lm_eval or f"{self.harness}:{Path(self.data or '').stem or self.data}"


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    version: int | str
    description: str | None = None
    seed: int = 1234  # document sampling and lm-eval's few-shot sampler
    tasks: list[TaskSpec] = Field(min_length=1)
    # Folders of the user's own lm-eval task YAMLs, relative to the suite file; handed to lm-eval's
    # TaskManager beside the built-in and local tasks (a task defined there overrides a built-in one).
    include_path: list[str] = Field(default_factory=list)
    # vLLM engine arguments for this suite (tensor_parallel_size, max_loras, ...), checked against
    # vLLM's parser when an engine starts; --serve-config and --engine-arg override them.
    serving: dict[str, Any] = Field(default_factory=dict)
    _path: Path | None = PrivateAttr(None)
    _sha256: str | None = PrivateAttr(None)

    @field_validator("include_path", mode="before")
    @classmethod
    def _one_or_more(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _unique_labels(self) -> "Suite":
        seen: set[str] = set()
        for i, t in enumerate(self.tasks):
            if t.label in seen:
                raise ValueError(f"tasks[{i}] label '{t.label}' repeats an earlier task; give it a distinct name")
            seen.add(t.label)
        return self

    @property
    def path(self) -> Path | None:
        return self._path

    def describe(self) -> dict[str, Any]:
        """What a run manifest records about the suite."""
        return {"name": self.name, "version": self.version, "path": str(self._path) if self._path else None,
                "sha256": self._sha256, "seed": self.seed, "serving": self.serving,
                "include_path": [str(p) for p in self.include_dirs()],
                "tasks": [t.model_dump(exclude_none=True) for t in self.tasks]}

    def include_dirs(self) -> list[Path]:
        """The include_path folders as absolute paths (relative ones against the suite file's folder)."""
        base = self._path.parent if self._path else Path.cwd()
        return [(base / p).resolve() for p in self.include_path]

    def with_include_paths(self, paths: list[str] | tuple[str, ...]) -> "Suite":
        """A copy with more task folders (the CLI's --include-path, relative to the working directory)."""
        if not paths:
            return self
        return self.model_copy(update={"include_path": [*map(str, self.include_dirs()),
                                                        *(str(Path(p).resolve()) for p in paths)]})

    def resolve_data(self, spec: TaskSpec) -> str:
        """A harness task's data: a named set as is, otherwise a path made absolute against the suite file."""
        named = TEXT_SETS if spec.harness == "perplexity" else GOLDEN_SETS
        if spec.data in named:
            return spec.data
        base = self._path.parent if self._path else Path.cwd()
        return str((base / (spec.data or "")).resolve())


def available_suites(suites_dir: Path = SUITES_DIR) -> list[str]:
    return sorted(p.stem for p in suites_dir.glob("*.yaml"))


def find_suite(name_or_path: str, suites_dir: Path = SUITES_DIR) -> Path:
    """A suite file: an existing path, or the name of a shipped suite."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise SuiteError(f"suite file {p} not found")
        return p
    shipped = suites_dir / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    raise SuiteError(f"suite '{name_or_path}' unknown; choose {', '.join(available_suites(suites_dir))} or a path to a YAML file")


def load_suite(name_or_path: str | Path, suites_dir: Path = SUITES_DIR, *, settings: Settings | None = None,
               include_paths: Sequence[str] = ()) -> Suite:
    """Load and validate a suite; any problem is a SuiteError naming the file and key path.

    `include_paths` (the CLI's --include-path, relative to the working directory) are added to the
    suite's own include_path folders.

    With `settings`, the data files of harness tasks are checked too (see
    `check_data_files`), so a missing or malformed file fails here, not
    after a model has loaded and other tasks have run.
    """
    path = find_suite(str(name_or_path), suites_dir)
    text = read_utf8(path, what="suite file")
    where = _display(path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SuiteError(f"{where}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: expected a mapping with name, version and tasks; got {type(raw).__name__}")
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as e:
        raise SuiteError(format_validation_error(where, e)) from None
    suite._path = path.resolve()
    suite._sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
    for p in include_paths:
        if not Path(p).is_dir():
            raise SuiteError(f"--include-path {p}: not a folder")
    suite = suite.with_include_paths(tuple(include_paths))
    if settings is not None:
        check_data_files(suite, settings, where)
    return suite


def check_data_files(suite: Suite, settings: Settings, where: str) -> None:
    """Every data file the suite's harness tasks name exists; files given by path also parse.

    Named sets (under HARNESS_DATA_DIR) are checked for presence only; a
    file given by path is read and validated as a golden set or text set.
    Errors name the suite file and key path: `where: tasks[i].data 'VALUE': ...`.
    """
    for raw, folder in zip(suite.include_path, suite.include_dirs()):
        if not folder.is_dir():
            raise SuiteError(f"{where}: include_path '{raw}': not a folder ({folder}); paths are relative to "
                             "the suite file")
    for i, spec in enumerate(suite.tasks):
        if spec.harness is None:
            continue
        data = suite.resolve_data(spec)
        is_named = data == spec.data
        path = golden_set_file(settings, data) if spec.harness == "golden" else text_set_file(settings, data)
        key = f"{where}: tasks[{i}].data '{spec.data}'"
        if path is None:
            continue  # built in
        if not path.is_file():
            hint = (f"named sets are read from HARNESS_DATA_DIR ({settings.data_dir})" if is_named
                    else "paths are relative to the suite file")
            raise SuiteError(f"{key}: not found ({path}); {hint}")
        if is_named:
            continue
        try:
            load_golden(path) if spec.harness == "golden" else load_text_set(settings, data)
        except SuiteError as e:
            raise SuiteError(f"{key}: {e}") from None


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


_FIELDS = {"": Suite, "tasks": TaskSpec, "sample": Sample}


def format_validation_error(where: str, err: ValidationError) -> str:
    """One line per problem: `file: key.path message`, with allowed keys for unknown keys."""
    lines = []
    for e in err.errors():
        loc = e["loc"]
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            parent = [p for p in loc[:-1] if isinstance(p, str)]
            model = _FIELDS.get(parent[-1] if parent else "", Suite)
            msg = f"unknown key; allowed: {', '.join(model.model_fields)}"
        elif e["type"] == "missing":
            msg = "required key missing"
        elif msg.startswith("'"):
            pass  # our own "'value' unknown; choose ..." messages already quote the value
        elif "input" in e and not isinstance(e["input"], (dict, list)):
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"{where}: {path + ' ' if path else ''}{msg}")
    return "\n".join(lines)


# --- document selection --------------------------------------------------------------

def _leaf_rng(seed: int, leaf: str) -> np.random.Generator:
    # Each subject gets its own stream, so adding a subject never reshuffles the others.
    return np.random.default_rng([seed, int(hashlib.sha256(leaf.encode()).hexdigest()[:15], 16)])


def choose_docs(sizes: dict[str, int], spec: TaskSpec, seed: int, cap: int | None = None) -> dict[str, list[int]]:
    """Document indices per subject (leaf task) for a task spec; pure and seeded.

    - `limit: L`: the first L documents of each subject, as lm-eval's --limit.
    - `sample: {per_subject: k}`: k random documents of each subject (all if fewer).
    - `sample: {n: N}`: N in all, allocated to subjects in proportion to their
      size (largest remainder; stratified), random within each subject.
    - neither: every document.
    `cap` (the CLI's --limit) keeps at most that many per subject, taken from
    the front of the same random order, so a capped run is a subset of the full one.

    >>> choose_docs({"a": 10, "b": 30}, TaskSpec(lm_eval="t", metric="acc", sample=Sample(n=4)), 0)["a"].__len__()
    1
    """
    quotas: dict[str, int] = {}
    if spec.sample is not None and spec.sample.n is not None:
        total = sum(sizes.values())
        n = min(spec.sample.n, total)
        exact = {leaf: n * size / total for leaf, size in sizes.items()} if total else {}
        quotas = {leaf: int(q) for leaf, q in exact.items()}
        by_remainder = sorted(exact, key=lambda leaf: (-(exact[leaf] - quotas[leaf]), leaf))
        for leaf in by_remainder[: n - sum(quotas.values())]:
            quotas[leaf] += 1
    out: dict[str, list[int]] = {}
    for leaf, size in sizes.items():
        if spec.limit is not None:
            order = list(range(min(spec.limit, size)))
        elif spec.sample is None:
            order = list(range(size))
        else:
            k = spec.sample.per_subject if spec.sample.per_subject is not None else quotas[leaf]
            order = [int(i) for i in _leaf_rng(seed, leaf).permutation(size)[: min(k, size)]]
        out[leaf] = sorted(order[:cap] if cap is not None else order)
    return out
