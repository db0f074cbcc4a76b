"""evaluate_suite and `harness eval` on the tiny model: lm-eval tasks, perplexity and golden sets."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from reports.data import golden_items

SUITE = """\
# test suite: a few items of each task kind
name: tiny
version: 3
seed: 5
tasks:
  - lm_eval: arc_easy_local
    sample: {{n: 3}}
    metric: acc_norm
    margin: 1.0
  - lm_eval: mmlu_local
    name: mmlu_5shot
    num_fewshot: 5
    limit: 1
    metric: acc
  - harness: perplexity
    data: {texts}
    metric: token_perplexity
  - harness: golden
    data: {golden}
    metric: check_pass_rate
    max_new_tokens: 4
"""


@pytest.fixture
def suite_file(tmp_path: Path) -> Path:
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["The cat sat on the mat.", "One two three four."]))
    golden = tmp_path / "golden.jsonl"
    golden.write_text(json.dumps({"id": "g1", "prompt": "Say hi", "checks": {"must_include": ["zzzz"]}}) + "\n"
                      + json.dumps({"id": "g2", "prompt": "Say bye"}) + "\n")
    p = tmp_path / "tiny.yaml"
    p.write_text(SUITE.format(texts="texts.jsonl", golden="golden.jsonl"))
    return p


def test_evaluate_suite_stores_items_and_resumes_from_cache(settings, tiny_model_dir: Path, suite_file: Path) -> None:
    from harness import store
    from harness.backends.hf import HFBackend
    from harness.evaluate import evaluate_suite
    from harness.models.resolve import resolve
    from harness.suites.spec import load_suite

    suite = load_suite(suite_file)
    # The tiny model has a 256-token context; 5-shot MMLU prompts are cut on the left.
    backend = HFBackend(resolve(settings, str(tiny_model_dir)), dtype="float32", batch_size=4, truncation="left")
    run = evaluate_suite(settings, backend, suite, show_progress=False)
    assert run.status == "complete", run.aggregates
    by_task: dict[str, list[dict]] = {}
    for item in run.items:
        by_task.setdefault(item["task"], []).append(item)
    assert len(by_task["arc_easy_local"]) == 3
    mmlu = by_task["mmlu_5shot"]
    assert len(mmlu) == 57 and len({r["subject"] for r in mmlu}) == 57
    assert {r["category"] for r in mmlu} == {"STEM", "humanities", "social sciences", "other (business, health, misc.)"}
    assert all(isinstance(r["correct"], bool) and r["pred"] in range(4) and r["gold"] in range(4) for r in mmlu)
    ppl = by_task["perplexity:texts"]
    assert len(ppl) == 2 and all(r["nll"] > 0 and r["n_tokens"] > 0 for r in ppl)
    golden = {r["item_id"]: r for r in by_task["golden:golden"]}
    assert golden["g1"]["passed"] is False and golden["g2"]["passed"] is None
    # Each golden row carries its input and checks, so the report's per-item view shows the item whole.
    assert golden["g1"]["prompt"] == "Say hi" and golden["g1"]["checks"] == {"must_include": ["zzzz"]}
    assert golden["g2"]["checks"] is None and golden["g2"]["messages"] is None
    view = golden_items(run).set_index("item_id")
    assert view.loc["g1", "check list"] == "must include: zzzz" and view.loc["g1", "result"] == "fail"
    assert view.loc["g2", "prompt"] == "Say bye" and view.loc["g2", "result"] == "unchecked"

    tasks = run.aggregates["tasks"]
    assert tasks["arc_easy_local"]["margin"] == 1.0 and 0 <= tasks["arc_easy_local"]["value"] <= 1
    assert len(tasks["mmlu_5shot"]["by_subject"]) == 57 and len(tasks["mmlu_5shot"]["by_category"]) == 4
    assert tasks["perplexity:texts"]["value"] > 1
    assert tasks["golden:golden"]["value"] == 0.0 and tasks["golden:golden"]["n_unscored"] == 1
    assert run.manifest["suite"]["name"] == "tiny" and run.manifest["suite"]["version"] == 3
    assert run.manifest["models"][0]["base_hash"].startswith("sha256:")
    assert run.manifest["backend"]["scoring_params"]["scorer"] == "shared_prefix"
    assert run.manifest["backend"]["runtime"] == {"platform": "cpu", "gpu_count": 0, "gpu_models": [],
                                                  "device": "cpu", "device_map": None}

    folder = store.write_run(settings.runs_dir, run)
    assert (folder / "items.jsonl").read_text().count("\n") == len(run.items)
    assert store.list_runs(settings.runs_dir, suite="tiny")[0]["run_id"] == run.run_id

    again = evaluate_suite(settings, backend, suite, show_progress=False)
    assert again.manifest["cache"]["misses"] == 0 and again.manifest["cache"]["hits"] > 0
    assert [r.get("correct") for r in again.items] == [r.get("correct") for r in run.items]


def test_cli_eval_writes_run_and_reports_suite_errors(settings, tiny_model_dir: Path, suite_file: Path,
                                                       monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from cli import main as cli

    monkeypatch.setenv("HARNESS_HOME", str(settings.home))
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(settings.runs_dir))
    monkeypatch.setenv("HARNESS_DATA_DIR", str(settings.data_dir))
    small = suite_file.with_name("small.yaml")
    small.write_text("# small\nname: small\nversion: 1\ntasks:\n  - lm_eval: hellaswag_local\n    limit: 2\n    metric: acc_norm\n")
    assert cli.main(["eval", "--model", str(tiny_model_dir), "--suite", str(small), "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    assert "hellaswag_local" in out and "written to" in out
    (run_dir,) = [p for p in settings.runs_dir.iterdir() if p.is_dir()]
    assert len((run_dir / "items.jsonl").read_text().splitlines()) == 2

    # A fully cached rerun needs no weights: the hf backend loads them at the first uncached item.
    import transformers

    def no_weights(*args, **kwargs):
        raise AssertionError("a fully cached rerun loaded model weights")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_weights)
    assert cli.main(["eval", "--model", f"tiny={tiny_model_dir}", "--suite", str(small), "--dtype", "float32"]) == 0
    capsys.readouterr()
    named = [json.loads((p / "manifest.json").read_text()) for p in settings.runs_dir.iterdir() if p.is_dir()]
    # NAME=REF names the model; the reference it stands for is kept as given, the cache keys on content.
    names = [m["models"][0].get("name") for m in sorted(named, key=lambda m: m["created_utc"])]
    assert names == [tiny_model_dir.name, "tiny"]
    assert {m["models"][0]["ref"] for m in named} == {str(tiny_model_dir)}

    bad = suite_file.with_name("bad.yaml")
    bad.write_text("name: b\nversion: 1\ntasks:\n  - lm_eval: hellaswag_local\n    metric: acc_nrom\n")
    assert cli.main(["eval", "--model", str(tiny_model_dir), "--suite", str(bad)]) == 2
    assert "tasks[0].metric 'acc_nrom' unknown for task 'hellaswag_local'; choose acc, acc_norm" in capsys.readouterr().err
