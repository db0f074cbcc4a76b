"""`harness runs export --format lm-eval` on synthetic runs, read back with lm-eval's own code (fast tier)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cli.main import main
from harness.store import Run, load_run, write_run
from reports import lmeval_export
from tests.fixtures.lmeval_rows import ARC_LEAF, GSM_FILTERS, GSM_LEAF, MMLU_LEAF, lmeval_eval_run
from tests.fixtures.synthetic import eval_run

# The keys lm-eval 0.4.13's evaluator logs per sample, before the metric values (evaluator.evaluate).
SAMPLE_KEYS = ["doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter", "metrics",
               "doc_hash", "prompt_hash", "target_hash"]


@pytest.fixture
def exported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Run, Path]:
    runs_dir = tmp_path / "runs"
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(runs_dir))
    run = load_run(runs_dir, write_run(runs_dir, lmeval_eval_run()).name)
    assert main(["runs", "export", run.run_id, "--format", "lm-eval", "--out", str(tmp_path / "out")]) == 0
    return run, tmp_path / "out"


def _read_like_lmeval(model_dir: Path) -> tuple[dict, dict[str, list[dict]]]:
    """Find and read the files as lm-eval's scripts do (zeno_visualize, the tracker's dataset card):
    the newest results file, and per task its newest samples file."""
    from lm_eval.utils import (
        get_file_task_name, get_latest_filename, get_results_filenames, get_sample_results_filenames
    )

    files = [p.as_posix() for p in model_dir.iterdir() if p.is_file()]
    results = json.loads(Path(get_latest_filename(get_results_filenames(files))).read_text(encoding="utf-8"))
    samples = {}
    for task in results["configs"]:
        names = [f for f in get_sample_results_filenames(files) if get_file_task_name(Path(f).name) == task]
        samples[task] = [json.loads(line) for line in Path(get_latest_filename(names)).read_text().splitlines()]
    return results, samples


def test_export_reads_back_through_lmevals_file_helpers(exported: tuple[Run, Path]) -> None:
    from lm_eval.api.metrics import mean_stderr

    run, out = exported
    assert [p.name for p in out.iterdir()] == ["smollm2-135m-instruct"]
    results, samples = _read_like_lmeval(out / "smollm2-135m-instruct")
    # MMLU anatomy is scored by two suite tasks (0- and 5-shot): one key each, the leaf as alias.
    keys = {ARC_LEAF, GSM_LEAF, f"{MMLU_LEAF}__mmlu_0shot", f"{MMLU_LEAF}__mmlu_5shot"}
    assert set(results["results"]) == set(samples) == keys
    assert results["results"][f"{MMLU_LEAF}__mmlu_5shot"]["alias"] == MMLU_LEAF
    assert results["n-shot"][f"{MMLU_LEAF}__mmlu_5shot"] == 5 and results["n-shot"][ARC_LEAF] == 0
    assert results["versions"][ARC_LEAF] == 1.0 and results["versions"][GSM_LEAF] == 3.0
    assert results["n-samples"][ARC_LEAF] == {"original": 2376, "effective": 6}
    assert results["n-samples"][GSM_LEAF] == {"original": 6, "effective": 6}  # not recorded: what was exported
    assert results["higher_is_better"][ARC_LEAF] == {"acc": True, "acc_norm": True}
    assert results["configs"][GSM_LEAF]["output_type"] == "generate_until"
    assert [f["name"] for f in results["configs"][GSM_LEAF]["filter_list"]] == list(GSM_FILTERS)
    assert results["model_name"] == "smollm2-135m-instruct" and results["config"]["harness_run_id"] == run.run_id

    rows = {leaf: [r for r in run.items if r["task"] == label] for leaf, label in ((ARC_LEAF, ARC_LEAF),
                                                                                     (GSM_LEAF, "gsm8k_cot"))}
    arc = results["results"][ARC_LEAF]
    for metric in ("acc", "acc_norm"):
        values = [r[metric] for r in rows[ARC_LEAF]]
        assert arc[f"{metric},none"] == pytest.approx(np.mean(values))
        assert arc[f"{metric}_stderr,none"] == pytest.approx(mean_stderr(values))
    gsm = results["results"][GSM_LEAF]
    for f in GSM_FILTERS:
        values = [r[f"exact_match,{f}"] for r in rows[GSM_LEAF]]
        assert gsm[f"exact_match,{f}"] == pytest.approx(np.mean(values))
        assert gsm[f"exact_match_stderr,{f}"] == pytest.approx(mean_stderr(values))
    assert list(arc) == ["name", "alias", "sample_len", "acc,none", "acc_stderr,none", "acc_norm,none",
                         "acc_norm_stderr,none"]

    # Samples: one record per (document, filter), all documents of the first filter first.
    assert [s["filter"] for s in samples[GSM_LEAF]] == [f for f in GSM_FILTERS for _ in range(6)]
    first = samples[ARC_LEAF][0]
    assert list(first) == SAMPLE_KEYS + ["acc", "acc_norm"] and first["metrics"] == ["acc", "acc_norm"]
    row = rows[ARC_LEAF][0]
    assert first["arguments"]["gen_args_1"] == {"arg_0": row["prompt"], "arg_1": row["arguments"][1][1]}
    assert first["resps"][0] == [[str(row["resps"][0][0][0]), str(row["resps"][0][0][1])]]
    assert first["target"] == str(row["target"]) and first["doc"] == row["doc"]
    gen = samples[GSM_LEAF][6]
    assert gen["filter"] == "flexible-extract" and gen["metrics"] == ["exact_match"]
    assert gen["exact_match"] == rows[GSM_LEAF][0]["exact_match,flexible-extract"]
    assert gen["arguments"]["gen_args_0"]["arg_1"]["until"] == ["Question:", "</s>"]
    # task_hashes as lm-eval's tracker computes them from the logged samples.
    from lm_eval.utils import hash_string

    assert results["task_hashes"][ARC_LEAF] == hash_string(
        "".join(s["doc_hash"] + s["prompt_hash"] + s["target_hash"] for s in samples[ARC_LEAF]))


def test_samples_load_with_datasets_as_lmevals_dataset_card_does(exported: tuple[Run, Path], tmp_path: Path) -> None:
    """The tracker stringifies responses so `datasets` can load the samples; so does the export."""
    from datasets import load_dataset

    _, out = exported
    for task in (ARC_LEAF, GSM_LEAF):
        path = next((out / "smollm2-135m-instruct").glob(f"samples_{task}_*.jsonl"))
        ds = load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf"))
        assert len(ds) == (6 if task == ARC_LEAF else 12) and "doc_hash" in ds.column_names


def test_compare_run_exports_each_source_eval_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs_dir = tmp_path / "runs"
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(runs_dir))
    base, cand = "smollm2-135m-instruct", "smollm2-135m-instruct+/work/out/lora"
    ids = {f"eval:{ref}": write_run(runs_dir, lmeval_eval_run(ref, seed=k)).name for k, ref in enumerate((base, cand))}
    judge = write_run(runs_dir, Run(kind="judge", manifest={"models": [{"ref": cand}]})).name
    compare = write_run(runs_dir, Run(kind="compare", manifest={"source_runs": {**ids, f"judge:{cand}": judge}},
                                      aggregates={"summary": {"verdict": "pass"}})).name
    assert main(["runs", "export", compare, "--format", "lm-eval", "--out", str(tmp_path / "out")]) == 0
    folders = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert folders == ["smollm2-135m-instruct", "smollm2-135m-instruct+__work__out__lora"]
    results, _ = _read_like_lmeval(tmp_path / "out" / folders[1])
    assert results["model_name"] == cand and results["config"]["harness_run_id"] == ids[f"eval:{cand}"]


def test_runs_without_lmeval_rows_are_refused_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    runs_dir = tmp_path / "runs"
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(runs_dir))
    rng = np.random.default_rng(0)
    ppl_only = lmeval_eval_run()
    ppl_only = Run(kind="eval", manifest=ppl_only.manifest, items=[r for r in ppl_only.items if "leaf" not in r],
                   aggregates={"tasks": {"perplexity": {}}})
    cases = {write_run(runs_dir, ppl_only).name: "holds no lm-eval task items (tasks: perplexity)",
             write_run(runs_dir, eval_run(rng, "m")).name: "items lack doc, output_type",  # rows before issue 19
             write_run(runs_dir, Run(kind="judge", manifest={})).name: "is a judge run"}
    for run_id, why in cases.items():
        assert main(["runs", "export", run_id, "--format", "lm-eval", "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and run_id in err and why in err, err
    assert not (tmp_path / "out").exists()


def test_mean_stderr_matches_lmeval() -> None:
    from lm_eval.api.metrics import mean_stderr

    values = [float(x) for x in np.random.default_rng(1).random(50) < 0.4]
    assert lmeval_export.mean_stderr(values) == pytest.approx(mean_stderr(values), rel=1e-12)
