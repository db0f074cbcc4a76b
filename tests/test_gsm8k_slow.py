"""GSM8K on the real SmolLM2 (slow): generation and lm-eval's two filters end to end, per item equal to
lm-eval's own HFLM on the same questions.

`harness eval --suite gsm8k --limit 20` scores 20 questions 5-shot, greedy, and keeps strict-match and
flexible-extract apart: two tasks, two accuracies, each item carrying both fields (the second task is
answered from the item cache). lm-eval's HFLM (float32, one prompt at a time, its own stopping) then
answers the same questions; generated text and both filters' exact_match must be equal item by item.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from cli.main import main as harness_main
from harness.settings import Settings
from harness.suites.lmeval_data import materialize_lmeval_tasks


def test_gsm8k_strict_and_flexible_match_lmeval_hflm(smollm2_dir: Path, settings, monkeypatch, capsys) -> None:
    from lm_eval.evaluator import evaluate
    from lm_eval.models.huggingface import HFLM

    from harness.backends.lmeval_adapter import task_manager

    home = smollm2_dir.parent.parent  # the shared HARNESS_HOME (models, local lm-eval tasks); a fresh item cache
    for key, value in (("HARNESS_HOME", home), ("HARNESS_RUNS_DIR", settings.runs_dir),
                       ("HARNESS_DATA_DIR", settings.data_dir), ("HARNESS_CACHE", settings.cache_path)):
        monkeypatch.setenv(key, str(value))
    assert harness_main(["eval", "--model", "smollm2-135m-instruct", "--suite", "gsm8k", "--limit", "20",
                         "--dtype", "float32"]) == 0
    capsys.readouterr()
    (folder,) = [p for p in settings.runs_dir.iterdir() if p.is_dir()]
    tasks = json.loads((folder / "aggregates.json").read_text())["tasks"]
    items = [json.loads(line) for line in (folder / "items.jsonl").read_text().splitlines()]
    strict = {r["doc_id"]: r for r in items if r["task"] == "gsm8k_strict"}
    flexible = {r["doc_id"]: r for r in items if r["task"] == "gsm8k_flexible"}
    assert len(strict) == 20 and strict.keys() == flexible.keys()
    # Two accuracies, each from its own filter; every row carries both pairs and both filters' answers.
    assert tasks["gsm8k_strict"]["metric"] == "exact_match,strict-match"
    assert tasks["gsm8k_flexible"]["metric"] == "exact_match,flexible-extract"
    for label, field in (("gsm8k_strict", "exact_match,strict-match"), ("gsm8k_flexible", "exact_match,flexible-extract")):
        rows = strict if label == "gsm8k_strict" else flexible
        assert tasks[label]["value"] == sum(r[field] for r in rows.values()) / 20
        assert set(tasks[label]["metrics"]) == {"exact_match,strict-match", "exact_match,flexible-extract"}
    for r in strict.values():
        assert set(r["filtered_resps"]) == {"strict-match", "flexible-extract"}
        assert r["score"] == r["exact_match,strict-match"] and flexible[r["doc_id"]]["score"] == r["exact_match,flexible-extract"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["cache"]["misses"] == 20  # the flexible task's generations came from the cache

    # lm-eval's own HFLM on the same 20 documents, with lm-eval's seeding and the suite's few-shot seed.
    tm = task_manager(materialize_lmeval_tasks(Settings.from_env()).task_dir, include_defaults=False)
    loaded = tm.load(["gsm8k_local"])["tasks"]
    task = loaded["gsm8k_local"]
    task.set_config(key="num_fewshot", value=5)
    task.set_fewshot_seed(seed=1234)
    random.seed(0)
    np.random.seed(1234)
    lm = HFLM(pretrained=str(smollm2_dir), dtype="float32", batch_size=1, device="cpu")
    out = evaluate(lm=lm, task_dict={"tasks": loaded, "groups": {}}, samples={"gsm8k_local": sorted(strict)},
                   log_samples=True, bootstrap_iters=0)
    theirs: dict[int, dict[str, tuple[float, str]]] = {}
    for s in out["samples"]["gsm8k_local"]:
        theirs.setdefault(s["doc_id"], {})[s["filter"]] = (float(s["exact_match"]), s["resps"][0][0])
    assert theirs.keys() == strict.keys()
    for doc_id, r in strict.items():
        assert r["prompt"] == next(s for s in out["samples"]["gsm8k_local"] if s["doc_id"] == doc_id)["arguments"][0][0]
        assert r["resps"][0][0] == theirs[doc_id]["strict-match"][1], f"document {doc_id}: generations differ"
        assert r["exact_match,strict-match"] == theirs[doc_id]["strict-match"][0]
        assert r["exact_match,flexible-extract"] == theirs[doc_id]["flexible-extract"][0]
