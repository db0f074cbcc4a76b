"""Suite schema: shipped suites load, errors name file, key path and choices; seeded selection."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import SuiteError
from harness.suites.spec import SUITES_DIR, Sample, TaskSpec, available_suites, choose_docs, load_suite


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


GOOD = """\
name: t
version: 1
tasks:
  - lm_eval: arc_easy_local
    metric: acc
  - lm_eval: arc_challenge_local
    metric: acc_norm
"""


@pytest.mark.parametrize("name", ["forgetting", "forgetting-quick", "perplexity", "golden-smoke", "golden-self-instruct"])
def test_shipped_suites_load_with_header_command(name: str) -> None:
    suite = load_suite(name)
    assert suite.name == name and suite.version is not None
    text = (SUITES_DIR / f"{name}.yaml").read_text()
    assert text.startswith("#") and f"harness eval --model smollm2-135m-instruct --suite {name}" in text
    assert suite.describe()["sha256"]


def test_all_yaml_in_suites_dir_are_shipped() -> None:
    assert set(available_suites()) >= {"forgetting", "forgetting-quick", "perplexity"}


def test_unknown_metric_names_file_key_path_and_choices(tmp_path: Path, settings) -> None:
    """An lm-eval task's metric is checked against that task's own metric_list, before any model loads."""
    from harness.evaluate import check_suite_tasks

    p = write(tmp_path, GOOD + "  - lm_eval: hellaswag_local\n    metric: acc_nrom\n")
    suite = load_suite(p)  # the file is well formed; the metric is the task's business
    with pytest.raises(SuiteError) as e:
        check_suite_tasks(settings, suite)
    assert "s.yaml: tasks[2].metric 'acc_nrom' unknown for task 'hellaswag_local'; choose acc, acc_norm" in str(e.value)
    p = write(tmp_path, GOOD + "  - lm_eval: hellaswag_local\n    metric: 'acc,norm,x'\n")
    with pytest.raises(SuiteError, match=r"tasks\[2\]\.metric 'acc,norm,x': name a metric of the task"):
        load_suite(p)


def test_unknown_harness_task_and_metric_for_its_kind(tmp_path: Path) -> None:
    p = write(tmp_path, "name: t\nversion: 1\ntasks:\n  - harness: perplexty\n    data: gsm8k_test\n    metric: acc\n")
    with pytest.raises(SuiteError, match=r"tasks\[0\]\.harness 'perplexty' unknown; choose golden, perplexity"):
        load_suite(p)
    p = write(tmp_path, "name: t\nversion: 1\ntasks:\n  - harness: perplexity\n    data: gsm8k_test\n    metric: acc\n")
    with pytest.raises(SuiteError, match=r"tasks\[0\]\.metric 'acc' unknown; choose token_perplexity"):
        load_suite(p)


def test_extra_and_missing_keys(tmp_path: Path) -> None:
    p = write(tmp_path, "name: t\ntasks:\n  - lm_eval: arc_easy_local\n    metric: acc\n    limt: 3\n")
    with pytest.raises(SuiteError) as e:
        load_suite(p)
    msg = str(e.value)
    assert "s.yaml: version required key missing" in msg
    assert "tasks[0].limt unknown key; allowed: lm_eval, harness" in msg


def test_inconsistent_task(tmp_path: Path) -> None:
    p = write(tmp_path, "name: t\nversion: 1\ntasks:\n  - lm_eval: arc_easy_local\n    harness: golden\n"
                        "    data: self_instruct\n    metric: check_pass_rate\n")
    with pytest.raises(SuiteError, match=r"tasks\[0\] give exactly one of lm_eval"):
        load_suite(p)
    p = write(tmp_path, "name: t\nversion: 1\ntasks:\n  - lm_eval: a\n    metric: acc\n    sample: {n: 3, per_subject: 2}\n")
    with pytest.raises(SuiteError, match=r"tasks\[0\]\.sample give exactly one of n"):
        load_suite(p)


def test_unknown_suite_name_lists_choices() -> None:
    with pytest.raises(SuiteError, match="suite 'forgeting' unknown; choose .*forgetting-quick"):
        load_suite("forgeting")


def test_choose_docs_stratified_seeded_and_capped() -> None:
    sizes = {"a": 100, "b": 300, "c": 600}
    spec = TaskSpec(lm_eval="t", metric="acc", sample=Sample(n=50))
    first = choose_docs(sizes, spec, seed=7)
    assert {k: len(v) for k, v in first.items()} == {"a": 5, "b": 15, "c": 30}
    assert first == choose_docs(sizes, spec, seed=7)
    assert first != choose_docs(sizes, spec, seed=8)
    assert all(v == sorted(set(v)) and max(v) < sizes[k] for k, v in first.items())
    capped = choose_docs(sizes, spec, seed=7, cap=3)
    assert all(len(v) == 3 and set(v) <= set(first[k]) for k, v in capped.items())
    per = choose_docs({"a": 2, "b": 10}, TaskSpec(lm_eval="t", metric="acc", sample=Sample(per_subject=4)), seed=1)
    assert len(per["a"]) == 2 and len(per["b"]) == 4
    # Adding a subject does not change the others' selection.
    assert choose_docs({"b": 10}, TaskSpec(lm_eval="t", metric="acc", sample=Sample(per_subject=4)), seed=1)["b"] == per["b"]
    assert choose_docs({"a": 10}, TaskSpec(lm_eval="t", metric="acc", limit=3), seed=1) == {"a": [0, 1, 2]}


def test_unknown_lm_eval_task_reports_choices(settings) -> None:
    """Checked against lm-eval's task index (built-in + local YAMLs) before any model loads."""
    from harness.evaluate import check_suite_tasks

    suite = load_suite(SUITES_DIR / "forgetting-quick.yaml")
    bad = suite.model_copy(update={"tasks": [TaskSpec(lm_eval="arc_easy_locl", metric="acc")]})
    with pytest.raises(SuiteError) as e:
        check_suite_tasks(settings, bad)
    msg = str(e.value)
    assert "tasks[0].lm_eval 'arc_easy_locl' unknown; did you mean arc_easy_local" in msg
    assert "mmlu_local, arc_easy_local, arc_challenge_local, hellaswag_local" in msg
