"""Slow tier: finetune on the real SmolLM2 (CPU, minutes). The issue's must-show results."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.main import main

REPO = Path(__file__).resolve().parent.parent


def _heldout_loss(model_dir: Path, adapter: Path | None, rows: list[dict]) -> float:
    """Mean completion-token loss on prepared rows, computed here without the trainer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune.chat import tokenize_example
    from finetune.data import Example

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for r in rows:
            ex = Example(prompt=tuple((m["role"], m["content"]) for m in r["prompt"]), completion=r["completion"])
            t = tokenize_example(tok, ex, 256)
            ids = torch.tensor([t["input_ids"]])  # (1, T)
            labels = ids.clone()
            labels[0, torch.tensor(t["completion_mask"]) == 0] = -100
            n = int((labels[0, 1:] != -100).sum())
            total += float(model(input_ids=ids, labels=labels).loss) * n
            count += n
    return total / count


def test_lora_sft_on_300_alpaca_lowers_heldout_loss(smollm2_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HARNESS_HOME", str(smollm2_dir.parent.parent))
    out = tmp_path / "lora"
    assert main(["finetune", str(REPO / "finetune/configs/smollm2_lora_alpaca.yaml"), f"output_dir={out}"]) == 0
    man = json.loads((out / "harness_manifest.json").read_text())
    assert man["data"]["splits"]["train"]["count"] >= 280
    val = man["loss_history"]["validation"]
    assert val[0]["step"] == 0 and man["best_validation_loss"] < val[0]["loss"] - 0.05, val
    rows = [json.loads(line) for line in (out / "data" / "validation.jsonl").read_text().splitlines()]
    assert len(rows) >= 40
    base_loss = _heldout_loss(smollm2_dir, None, rows)
    tuned_loss = _heldout_loss(smollm2_dir, out, rows)
    print(f"held-out Alpaca completion loss: base {base_loss:.4f}, LoRA {tuned_loss:.4f}")
    assert tuned_loss < base_loss - 0.05


@pytest.mark.parametrize("method,data", [
    ("qlora", "{data_dir}/instruction/alpaca/alpaca_5000.json"),
    ("dpo", "{data_dir}/hh-rlhf/helpful-base/test.jsonl.gz"),
])
def test_qlora_and_dpo_save_checkpoints_the_harness_loads(smollm2_dir: Path, tmp_path: Path, method: str,
                                                          data: str, monkeypatch: pytest.MonkeyPatch):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from harness.models.resolve import resolve
    from harness.settings import Settings

    monkeypatch.setenv("HARNESS_HOME", str(smollm2_dir.parent.parent))
    out = tmp_path / method
    assert main(["finetune", str(REPO / "finetune/configs/smollm2_lora_alpaca.yaml"), f"method={method}",
                 f"output_dir={out}", f"data.train={data}", "data.limit=24", "data.max_length=128",
                 "data.benchmarks=[]", "train.max_steps=3", "train.batch_size=2", "train.eval_every_steps=3"]) == 0
    resolved = resolve(Settings.from_env(), f"smollm2-135m-instruct+{out}")
    assert resolved.adapter_hash and json.loads((out / "harness_manifest.json").read_text())["steps"] == 3
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(resolved.base_path), str(out))
    with torch.no_grad():
        assert model(torch.tensor([[1, 2, 3]])).logits.shape[-1] == 49152
