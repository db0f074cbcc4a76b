"""Task manifests (issue 20): an unchanged rerun answers every task from its stored rows, with no lm-eval
task built and nothing asked of the model; anything that could change a row makes it miss (fast tier)."""
from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from harness.records import Generation, LoglikelihoodResult, RollingResult
from tests.helpers import USER_MC_TASK

SUITE = """\
# manifest test suite: a local lm-eval task, a user's task through include_path, perplexity, golden
name: manifests
version: 1
seed: {seed}
include_path: my_tasks
tasks:
  - lm_eval: arc_easy_local
    num_fewshot: {fewshot}
    sample: {{n: {arc_n}}}
    metric: acc_norm
    margin: {margin}
  - lm_eval: my_mc
    metric: acc
  - harness: perplexity
    data: texts.jsonl
    metric: token_perplexity
  - harness: golden
    data: golden.jsonl
    metric: check_pass_rate
    max_new_tokens: 4
"""
LABELS = ["arc_easy_local", "my_mc", "perplexity:texts", "golden:golden"]
BASE = {"seed": 5, "fewshot": 0, "arc_n": 2, "margin": 1.0}


def write_suite(folder: Path, **changes: Any) -> Path:
    path = folder / "manifests.yaml"
    path.write_text(SUITE.format(**{**BASE, **changes}))
    return path


def write_files(folder: Path) -> None:
    tasks = folder / "my_tasks"
    tasks.mkdir(exist_ok=True)
    (tasks / "mc.jsonl").write_text("".join(json.dumps({"question": q, "choices": c, "label": y}) + "\n" for q, c, y in
                                            [("Up or down?", ["up", "down"], 0), ("Hot or cold?", ["hot", "cold"], 1)]))
    (tasks / "my_mc.yaml").write_text(USER_MC_TASK.format(name="my_mc", data=tasks / "mc.jsonl"))
    (folder / "texts.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in ["The cat sat.", "One two."]))
    (folder / "golden.jsonl").write_text(json.dumps({"id": "g1", "prompt": "Say hi", "checks": {"must_include": ["hi"]}})
                                         + "\n")


class EchoBackend:
    """A deterministic stand-in for a model that counts what it is asked."""

    notice = runtime = resolved = None

    def __init__(self, name: str = "echo", identity: str = "sha256:echo", scoring_params: dict | None = None):
        self.name, self.identity, self.scoring_params = name, identity, dict(scoring_params or {})
        self.n_asked = 0

    def loglikelihood(self, requests):
        self.n_asked += len(requests)
        return [LoglikelihoodResult(-len(r.continuation) - 0.01 * (len(r.context) % 7), False, 1) for r in requests]

    def loglikelihood_rolling(self, requests):
        self.n_asked += len(requests)
        return [RollingResult(-float(len(r.text)), len(r.text.split())) for r in requests]

    def generate(self, requests):
        self.n_asked += len(requests)
        return [Generation("hi there", "stop", 2) for _ in requests]

    def close(self):
        pass


@dataclass
class Primed:
    folder: Path
    settings: Any
    first: Any  # the run that stored the manifests


@pytest.fixture(scope="module")
def primed(tmp_path_factory: pytest.TempPathFactory, harness_home: Path, data_dir: Path) -> Primed:
    """One suite run once on EchoBackend, its task manifests stored in a fresh item cache."""
    from harness.evaluate import evaluate_suite
    from harness.settings import Settings
    from harness.suites.spec import load_suite

    root = tmp_path_factory.mktemp("manifests")
    settings = Settings(home=root / "home", runs_dir=root / "runs", data_dir=data_dir,
                        models_dir=harness_home / "models", cache_path=root / "items.sqlite")
    write_files(root)
    first = evaluate_suite(settings, EchoBackend(), load_suite(write_suite(root), settings=settings),
                           show_progress=False)
    assert first.status == "complete", first.aggregates
    assert first.manifest["cache"]["tasks_from_manifest"] == [] and first.manifest["cache"]["misses"] > 0
    return Primed(root, settings, first)


def _rerun(p: Primed, backend: EchoBackend | None = None, limit: int | None = None, **changes: Any) -> Any:
    from harness.evaluate import evaluate_suite
    from harness.suites.spec import load_suite

    suite = load_suite(write_suite(p.folder, **changes), settings=p.settings)
    return evaluate_suite(p.settings, backend or EchoBackend(), suite, limit=limit, show_progress=False)


def test_unchanged_rerun_builds_no_lmeval_task_and_asks_the_model_nothing(primed: Primed,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import lm_eval.tasks

    import harness.backends.lmeval_adapter as adapter

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a fully cached rerun built an lm-eval task or index")

    monkeypatch.setattr(adapter, "run_lmeval_task", forbidden)
    monkeypatch.setattr(lm_eval.tasks.TaskManager, "__init__", forbidden)  # the suite check included
    backend = EchoBackend()
    again = _rerun(primed, backend)
    assert backend.n_asked == 0
    assert again.manifest["cache"]["tasks_from_manifest"] == LABELS
    # The hits are the requests the first run asked, as an item-cache rerun would count them.
    first = primed.first.manifest["cache"]
    assert again.manifest["cache"]["misses"] == 0 and again.manifest["cache"]["hits"] == first["hits"] + first["misses"]
    assert json.dumps(again.items, sort_keys=True) == json.dumps(primed.first.items, sort_keys=True)
    strip = lambda tasks: {k: {f: v for f, v in t.items() if f != "wall_s"} for k, t in tasks.items()}  # noqa: E731
    assert strip(again.aggregates["tasks"]) == strip(primed.first.aggregates["tasks"])


@contextmanager
def edited(path: Path, edit: Callable[[str], str]) -> Iterator[None]:
    before = path.read_text()
    path.write_text(edit(before))
    try:
        yield
    finally:
        path.write_text(before)


@contextmanager
def patched(target: str, value: Any) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as m:
        m.setattr(target, value)
        yield


ALL = set(LABELS)
CASES: dict[str, tuple[Callable[[Primed], Any], set[str]]] = {
    # what changes: (the context it runs in and the rerun's arguments, the tasks that must miss)
    "model identity": (lambda p: (None, {"backend": EchoBackend(identity="sha256:other")}), ALL),
    "scoring params": (lambda p: (None, {"backend": EchoBackend(scoring_params={"dtype": "bfloat16"})}), ALL),
    "backend name": (lambda p: (None, {"backend": EchoBackend(name="vllm")}), ALL),
    "num_fewshot": (lambda p: (None, {"fewshot": 1}), {"arc_easy_local"}),
    "sample": (lambda p: (None, {"arc_n": 3}), {"arc_easy_local"}),
    "seed": (lambda p: (None, {"seed": 6}), ALL),
    "limit": (lambda p: (None, {"limit": 1}), ALL),
    "task YAML": (lambda p: (edited(p.folder / "my_tasks" / "my_mc.yaml",
                                    lambda t: t.replace("Answer:", "A:")), {}), {"my_mc"}),
    "task data": (lambda p: (edited(p.folder / "my_tasks" / "mc.jsonl", lambda t: t.replace("Up", "North")), {}),
                  {"my_mc"}),
    "golden data": (lambda p: (edited(p.folder / "golden.jsonl", lambda t: t.replace("Say hi", "Say hello")), {}),
                    {"golden:golden"}),
    "perplexity data": (lambda p: (edited(p.folder / "texts.jsonl", lambda t: t.replace("cat", "dog")), {}),
                        {"perplexity:texts"}),
    "row format version": (lambda p: (patched("harness.task_manifest.ROWS_VERSION", 99), {}), ALL),
    "lm-eval version": (lambda p: (patched("harness.task_manifest.library_version",
                                           lambda name: "9.9" if name == "lm_eval" else None), {}), ALL),
    "margin (gate only: no miss)": (lambda p: (None, {"margin": 7.0}), set()),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_key_component_makes_its_tasks_miss(primed: Primed, case: str) -> None:
    make, expected = CASES[case]
    context, kwargs = make(primed)
    with context or _nothing():
        run = _rerun(primed, **kwargs)
    assert run.status == "complete", run.aggregates
    missed = set(LABELS) - set(run.manifest["cache"]["tasks_from_manifest"])
    assert missed == expected


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def test_suite_check_reads_names_and_metrics_without_lmeval(primed: Primed, monkeypatch: pytest.MonkeyPatch) -> None:
    """check_suite_tasks answers from the task YAMLs (no TaskManager; a data check passed before is not
    repeated), and a wrong metric is still refused before any model. (A misspelt name: tests/test_suites.py.)"""
    import lm_eval.tasks

    from harness.errors import SuiteError
    from harness.evaluate import check_suite_tasks
    from harness.suites.spec import TaskSpec, load_suite

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the suite check built lm-eval's TaskManager")

    monkeypatch.setattr(lm_eval.tasks.TaskManager, "__init__", forbidden)
    suite = load_suite(write_suite(primed.folder), settings=primed.settings)
    catalog = check_suite_tasks(primed.settings, suite)  # my_mc's data loaded in the primed run
    assert {"arc_easy_local", "my_mc"} <= set(catalog.task_index)
    wrong = suite.model_copy(update={"tasks": [TaskSpec(lm_eval="my_mc", metric="acc_nrom")]})
    with pytest.raises(SuiteError, match=r"tasks\[0\]\.metric 'acc_nrom' unknown for task 'my_mc'; choose acc, acc_norm"):
        check_suite_tasks(primed.settings, wrong)
