"""Issue 20: an unchanged rerun of `harness compare --golden` (tasks, adapter canary, answers, judgments,
judge-free metrics) loads no model and builds no lm-eval task (fast tier, tiny models on hf)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


def test_cached_compare_with_golden_loads_nothing(tmp_path: Path, smollm2_tokenizer_dir: Path, data_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import lm_eval.tasks
    import peft
    import transformers

    from cli.main import main
    from conftest import build_tiny_llama
    from harness.store import list_runs, load_run
    from tests.helpers import make_lora

    # compare generates golden answers of up to 256 tokens, and the judge reads two of them: a longer context.
    tiny_model_dir = build_tiny_llama(tmp_path / "tiny-1k", smollm2_tokenizer_dir, max_positions=1024)
    adapter = make_lora(tiny_model_dir, tmp_path / "lora", seed=1, scale=1e-2)
    suite = tmp_path / "small.yaml"
    suite.write_text("# small\nname: small\nversion: 1\ntasks:\n  - lm_eval: arc_easy_local\n    limit: 2\n"
                     "    metric: acc_norm\n")
    golden = tmp_path / "golden.jsonl"
    golden.write_text("".join(json.dumps({"id": f"g{i}", "prompt": q, "ideal": a}) + "\n"
                              for i, (q, a) in enumerate([("Capital of France?", "Paris")])))
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("HARNESS_DATA_DIR", str(data_dir))
    argv = ["compare", "--baseline", str(tiny_model_dir), "--candidate", f"{tiny_model_dir}+{adapter}",
            "--suite", str(suite), "--golden", str(golden), "--judge", str(tiny_model_dir), "--backend", "hf",
            "--format", "json"]
    first = main(argv)
    assert first in (0, 1), capsys.readouterr().err
    capsys.readouterr()

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a fully cached rerun loaded a model or built an lm-eval task")

    for owner, attr in [(transformers.AutoModelForCausalLM, "from_pretrained"), (transformers.AutoModel, "from_pretrained"),
                        (peft.PeftModel, "from_pretrained"), (lm_eval.tasks.TaskManager, "__init__")]:
        monkeypatch.setattr(owner, attr, forbidden)
    assert main(argv) == first, capsys.readouterr().err
    capsys.readouterr()
    compares = list_runs(tmp_path / "runs", kind="compare")
    latest, earlier = (load_run(tmp_path / "runs", r["run_id"]) for r in compares[:2])
    assert latest.aggregates["summary"] == earlier.aggregates["summary"]
    assert latest.aggregates["results"] == earlier.aggregates["results"]
    evals = [load_run(tmp_path / "runs", r["run_id"]) for r in list_runs(tmp_path / "runs", kind="eval")[:2]]
    assert all(r.manifest["cache"]["misses"] == 0 and r.manifest["cache"]["tasks_from_manifest"] == ["arc_easy_local"]
               for r in evals)
    # The adapter's canary passed in the first run; its record, not the probes, vouches for it now.
    assert latest.manifest["canary"][f"{tiny_model_dir}+{adapter}"]["source"] == "record"
    judge = load_run(tmp_path / "runs", list_runs(tmp_path / "runs", kind="judge")[0]["run_id"])
    assert judge.manifest["cache"]["misses"] == 0
