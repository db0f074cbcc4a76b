"""Slow tier for judges/: `harness judge` on the real SmolLM2, with hf and once through a real vLLM server.

The candidate is SmolLM2 with a small random LoRA adapter built here (seeded),
so candidate and baseline answers differ; SmolLM2 judges both.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest



@pytest.fixture(scope="module")
def random_adapter(tmp_path_factory, smollm2_dir: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    out = tmp_path_factory.mktemp("judge-adapter")
    peft_model.save_pretrained(out)
    return out


def test_harness_judge_self_instruct_hf(tmp_path, harness_home, data_dir, random_adapter, monkeypatch, capsys):
    from cli.main import main
    from harness.store import list_runs, load_run

    monkeypatch.setenv("HARNESS_HOME", str(harness_home))
    monkeypatch.setenv("HARNESS_DATA_DIR", str(data_dir))
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    assert main(["judge", "--golden", "self_instruct", "--candidate", f"smollm2-135m-instruct+{random_adapter}",
                 "--baseline", "smollm2-135m-instruct", "--backend", "hf", "--limit", "2",
                 "--max-new-tokens", "24", "--grade"]) == 0
    out = capsys.readouterr().out
    assert "95% interval" in out and "injection probe" in out and "grade" in out
    (row,) = list_runs(tmp_path / "runs", kind="judge")
    run = load_run(tmp_path / "runs", row["run_id"])
    agg = run.aggregates
    assert agg["win_rate"]["n_prompts"] == 2 and agg["win_rate"]["n_invalid_verdicts"] == 0
    assert all(g["via"] == "logprobs" and g["verdict"] in ("a", "b", "tie") for r in run.items for g in r["games"])
    assert agg["injection"]["n_valid"] == agg["injection"]["n_items"] == 12
    assert agg["metrics"]["candidate"]["rouge_l"]["n_scored"] == 2
    assert agg["grades"]["candidate"]["n_graded"] + agg["grades"]["candidate"]["n_invalid"] == 2


def test_run_judge_through_one_vllm_engine(settings, random_adapter, tmp_path):
    """Base, adapter and judge on one engine; the judge generates and is parsed strictly (vLLM batch)."""
    import yaml

    from judges.config import CONFIG_DIR
    from judges.run import JudgeRunConfig, run_judge

    cfg = yaml.safe_load((CONFIG_DIR / "pairwise.yaml").read_text())
    cfg.update(name="pairwise-generate", verdict_via="generate", template=str(CONFIG_DIR.parent / "templates" / "pairwise.txt"))
    (tmp_path / "gen.yaml").write_text(yaml.safe_dump(cfg))
    golden = tmp_path / "g.jsonl"
    golden.write_text("".join(json.dumps(d) + "\n" for d in [
        {"id": "fr", "prompt": "What is the capital of France? Answer in one word.", "ideal": "Paris"},
        {"id": "add", "prompt": "What is 2 + 3? Reply with the number only.", "ideal": "5"}]))
    run = run_judge(settings, JudgeRunConfig(
        golden=str(golden), candidate=f"smollm2-135m-instruct+{random_adapter}", baseline="smollm2-135m-instruct",
        judge_config=str(tmp_path / "gen.yaml"), backend="vllm", max_new_tokens=24, use_injection_probe=False,
        use_embeddings=False, backend_opts={"max_model_len": 2048}))
    assert {m["backend"] for m in run.manifest["models"]} == {"vllm"}
    w = run.aggregates["win_rate"]
    assert w["n_prompts"] == 2
    for r in run.items:
        for g in r["games"]:
            assert g["via"] in ("generate", "generate+retry")
            assert (g["verdict"] is None) == (g["failure_reason"] is not None)
    # Invalid verdicts (a 135M judge often ignores the format) are counted, never turned into ties.
    n_invalid = sum(g["verdict"] is None for r in run.items for g in r["games"])
    assert w["n_invalid_verdicts"] == n_invalid
    assert w["n_wins"] + w["n_ties"] + w["n_losses"] + w["n_invalid_prompts"] == 2
