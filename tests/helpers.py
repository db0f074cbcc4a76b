"""Builders shared by tests (plain functions, imported explicitly)."""
from __future__ import annotations

import json
from pathlib import Path


def make_lora(base_dir: Path, out: Path, *, seed: int = 0, scale: float = 0.0, r: int = 8,
              targets: tuple[str, ...] = ("q_proj", "v_proj"), manifest_base: dict | None = None) -> Path:
    """A LoRA adapter for `base_dir`. scale=0 leaves lora_B at zero (a no-op adapter);
    scale>0 sets every lora weight to seeded noise times `scale`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(targets),
                                                  init_lora_weights=scale == 0.0))
    if scale:
        with torch.no_grad():
            for name, w in peft_model.named_parameters():
                if "lora_" in name:
                    w.copy_(torch.randn_like(w) * scale)
    peft_model.save_pretrained(out)
    if manifest_base is not None:
        (out / "harness_manifest.json").write_text(json.dumps({"base": manifest_base}))
    return out


def arc_ppl_suite(path: Path, *, name: str, seed: int, arc_n: int, ppl_n: int, arc_margin: float,
                  ppl_margin: float) -> Path:
    """A suite YAML at `path`: ARC-Easy (acc_norm) and Alpaca held-out perplexity, small samples."""
    path.write_text(
        f"# {name}: ARC-Easy and held-out perplexity, small samples\nname: {name}\nversion: 1\nseed: {seed}\n"
        f"tasks:\n  - lm_eval: arc_easy_local\n    sample: {{n: {arc_n}}}\n    metric: acc_norm\n"
        f"    margin: {arc_margin}\n  - harness: perplexity\n    data: alpaca_heldout\n    sample: {{n: {ppl_n}}}\n"
        f"    metric: token_perplexity\n    margin: {ppl_margin}\n")
    return path
