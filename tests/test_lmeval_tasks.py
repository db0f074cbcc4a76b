"""lm-eval tasks beyond the local ones (fast tier, tiny model): the user's own task YAMLs through
include_path, any metric a task defines, each (metric, filter) pair its own per-item field, and one
line for a task whose data is not here."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.compare import compare_eval_runs
from harness.errors import SuiteError
from harness.store import Run
from tests.helpers import USER_MC_TASK

# A user's own task folder: a generative task with two filters, and a multiple-choice task, on local JSONL.
QA_TASK = """\
task: my_qa
dataset_path: json
dataset_kwargs:
  data_files:
    test: "{data}"
output_type: generate_until
test_split: test
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 4
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
  - metric: bleu
    higher_is_better: true
filter_list:
  - name: whole
    filter:
      - function: take_first
  - name: first-word
    filter:
      - function: regex
        regex_pattern: "(\\\\w+)"
      - function: take_first
metadata:
  version: 2.0
"""


@pytest.fixture
def user_tasks(tmp_path: Path) -> Path:
    folder = tmp_path / "my_tasks"
    folder.mkdir()
    qa = folder / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n"
                          for q, a in [("2+2?", "4"), ("Capital of France?", "Paris"), ("Colour of snow?", "white")]))
    mc = folder / "mc.jsonl"
    mc.write_text("".join(json.dumps({"question": q, "choices": c, "label": y}) + "\n"
                          for q, c, y in [("Up or down?", ["up", "down"], 0), ("Hot or cold?", ["hot", "cold"], 1)]))
    (folder / "my_qa.yaml").write_text(QA_TASK.format(data=qa))
    (folder / "my_mc.yaml").write_text(USER_MC_TASK.format(name="my_mc", data=mc))
    return folder


def _suite(tmp_path: Path, tasks: str, include: str = "my_tasks") -> Path:
    p = tmp_path / "mine.yaml"
    p.write_text(f"name: mine\nversion: 1\ninclude_path: {include}\ntasks:\n{tasks}")
    return p


TASKS = """\
  - lm_eval: my_qa
    name: qa_whole
    metric: exact_match,whole
  - lm_eval: my_qa
    name: qa_first_word
    metric: exact_match,first-word
  - lm_eval: my_mc
    metric: acc_norm
"""


def test_include_path_task_runs_end_to_end_without_local_data(tmp_path: Path, settings, tiny_model_dir: Path,
                                                              user_tasks: Path) -> None:
    """A suite's include_path folder holds the user's task YAMLs (data: local JSONL); nothing of the local
    MMLU/ARC copy is needed (HARNESS_DATA_DIR points at an empty folder), and every (metric, filter) pair
    is its own per-item field and aggregate."""
    from dataclasses import replace

    from harness.backends.hf import HFBackend
    from harness.evaluate import check_suite_tasks, evaluate_suite
    from harness.models.resolve import resolve
    from harness.suites.spec import load_suite

    empty = tmp_path / "no-data"
    empty.mkdir()
    settings = replace(settings, data_dir=empty)
    suite = load_suite(_suite(tmp_path, TASKS), settings=settings)
    assert suite.include_dirs() == [user_tasks] and suite.describe()["include_path"] == [str(user_tasks)]
    tm = check_suite_tasks(settings, suite)
    backend = HFBackend(resolve(settings, str(tiny_model_dir)), dtype="float32", batch_size=4)
    run = evaluate_suite(settings, backend, suite, show_progress=False, task_manager=tm)
    assert run.status == "complete", run.aggregates
    assert not (settings.home / "lmeval").exists()  # no local copy was built
    qa = [r for r in run.items if r["task"] == "qa_whole"]
    assert len(qa) == 3  # one row per document: the two filters are merged into it, not two rows
    for r in qa:
        assert {"exact_match,whole", "exact_match,first-word"} <= set(r)
        assert set(r["filtered_resps"]) == {"whole", "first-word"}
        # bleu is aggregated over the corpus: lm-eval logs a (reference, prediction) pair, not an item value
        assert r["metric_keys"] == ["exact_match,whole", "exact_match,first-word"]
        assert r["score"] == r["exact_match,whole"] and r["prompt"].startswith("Q: ") and r["doc"]["question"]
        assert r["arguments"][0][0] is None and r["arguments"][0][1]["max_gen_toks"] == 4
    tasks = run.aggregates["tasks"]
    assert tasks["qa_whole"]["metric"] == "exact_match,whole"
    assert set(tasks["qa_whole"]["metrics"]) >= {"exact_match,whole", "exact_match,first-word"}
    first_word = [r for r in run.items if r["task"] == "qa_first_word"]
    assert [r["score"] for r in first_word] == [r["exact_match,first-word"] for r in qa]  # same items, other field
    mc = [r for r in run.items if r["task"] == "my_mc"]
    assert len(mc) == 2 and all(isinstance(r["correct"], bool) and len(r["loglikelihoods"]) == 2 for r in mc)
    assert set(tasks["my_mc"]["metrics"]) == {"acc,none", "acc_norm,none"}


def test_metric_is_checked_against_the_task(tmp_path: Path, settings, user_tasks: Path) -> None:
    from harness.evaluate import check_suite_tasks
    from harness.suites.spec import load_suite

    def check(tasks: str) -> str:
        with pytest.raises(SuiteError) as e:
            check_suite_tasks(settings, load_suite(_suite(tmp_path, tasks), settings=settings))
        return str(e.value)

    msg = check("  - lm_eval: my_qa\n    metric: exact_match\n")
    assert "tasks[0].metric 'exact_match' unknown for task 'my_qa'; choose exact_match,whole, " \
           "exact_match,first-word" in msg
    msg = check("  - lm_eval: my_qa\n    metric: bleu,whole\n")
    assert "aggregates it over the corpus (bleu), not as a mean of items" in msg
    msg = check("  - lm_eval: gsm8k_local\n    metric: exact_match\n")
    assert "choose exact_match,strict-match, exact_match,flexible-extract" in msg
    load_suite(_suite(tmp_path, "  - lm_eval: my_mc\n    metric: acc,none\n"), settings=settings)  # lm-eval's key form


def test_include_path_errors_are_one_line(tmp_path: Path, settings, user_tasks: Path, capsys) -> None:
    from cli.main import main
    from harness.suites.spec import load_suite

    with pytest.raises(SuiteError, match=r"mine\.yaml: include_path 'nope': not a folder .*relative to the suite"):
        load_suite(_suite(tmp_path, TASKS, include="nope"), settings=settings)
    plain = tmp_path / "plain.yaml"
    plain.write_text("name: p\nversion: 1\ntasks:\n  - lm_eval: my_mc\n    metric: acc\n")
    assert main(["eval", "--model", "x", "--suite", str(plain), "--include-path", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip().endswith("not a folder")
    suite = load_suite(plain, settings=settings, include_paths=[str(user_tasks)])
    assert suite.include_dirs() == [user_tasks]


def test_stock_task_without_data_is_one_line_naming_the_dataset(tmp_path: Path, settings, capsys) -> None:
    """Offline, a built-in lm-eval task whose dataset is not in the Hugging Face cache fails before any model
    loads, naming the dataset it needs."""
    from cli.main import main

    suite = tmp_path / "stock.yaml"
    suite.write_text("name: s\nversion: 1\ntasks:\n  - lm_eval: arc_easy\n    limit: 2\n    metric: acc\n")
    assert main(["eval", "--model", "not-loaded", "--suite", str(suite)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "tasks[0].lm_eval 'arc_easy': cannot load its data: task 'arc_easy' needs dataset 'allenai/ai2_arc' " \
           "(subset 'ARC-Easy')" in err


def _run(values: list[float], metric: str = "f1") -> Run:
    items = [{"task": "t", "item_id": f"d{i}", "subject": None, "score": v, "correct": None} for i, v in enumerate(values)]
    return Run(kind="eval", manifest={}, items=items, aggregates={"tasks": {"t": {"metric": metric}}})


def test_continuous_metric_is_compared_with_a_paired_bootstrap() -> None:
    """A per-item metric that is not 0/1 gets a paired bootstrap of the mean difference and a paired t-test,
    in the metric's own name; binary ones keep McNemar."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, 60)
    results, items, flips = compare_eval_runs(_run(list(base)), _run(list(base - 0.05)), candidate_label="c",
                                              margins={"t": 1.0}, rng=np.random.default_rng(1))
    (r,) = results
    assert r["metric"] == "f1" and r["continuous"] and r["n"] == 60 and r["mde"] is None
    assert r["diff"]["value"] == pytest.approx(-0.05) and r["diff"]["hi"] == pytest.approx(-0.05)
    assert r["n_regressed"] == 60 and r["p_value"] == 0.0 and r["verdict"] == "fail"  # -5 points < -1 point margin
    assert items[0]["baseline_score"] == pytest.approx(base[0]) and not flips
    binary, _, _ = compare_eval_runs(_run([1.0, 0.0, 1.0], "acc"), _run([1.0, 1.0, 0.0], "acc"), candidate_label="c",
                                     margins={}, rng=np.random.default_rng(1))
    assert "continuous" not in binary[0] and binary[0]["n_improved"] == 1 and binary[0]["n_regressed"] == 1
