"""Benchmark finetune on SmolLM2: tokens/s and peak RSS for lora, qlora and full; QLoRA memory; packing waste.

    HARNESS_DATA_DIR=../shared/datasets HARNESS_HOME=.cache/harness .venv/bin/python bench/finetune.py
    .venv/bin/python bench/finetune.py --steps 4 --methods lora,qlora   # quicker

Each method trains in its own process (so peak RSS is its own) through the
real CLI, with the same data, batch and steps; figures come from each
checkpoint's harness_manifest.json. Targets from the issue: QLoRA base-weight
memory at most 0.35 of bf16, padding waste with packing at most 5%.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODEL = "smollm2-135m-instruct"
CONFIG = """\
# harness finetune bench.yaml (written by bench/finetune.py)
base: {model}
method: {method}
output_dir: {out}
data:
  train: "{{data_dir}}/instruction/alpaca/alpaca_5000.json"
  limit: {rows}
  validation_fraction: 0
  benchmarks: []
  max_length: {max_length}
train:
  max_steps: {steps}
  batch_size: {batch}
  logging_steps: 1
"""


def run_method(method: str, workdir: Path, args: argparse.Namespace) -> dict:
    """Train `method` for args.steps steps in a subprocess; return its manifest."""
    out = workdir / method
    cfg = workdir / f"{method}.yaml"
    cfg.write_text(CONFIG.format(model=MODEL, method=method, out=out, rows=args.rows, max_length=args.max_length,
                                 steps=args.steps, batch=args.batch))
    proc = subprocess.run([sys.executable, "-m", "cli.main", "finetune", str(cfg)], cwd=REPO,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{method} failed:\n{proc.stderr[-3000:]}")
    return json.loads((out / "harness_manifest.json").read_text())


def qlora_weight_ratio(model_dir: str) -> tuple[float, float]:
    """(linear-layer weight bytes NF4+double-quant / bf16, whole-model bytes NF4 / bf16).

    bitsandbytes quantizes the Linear layers only; embeddings and norms stay
    bf16. The first ratio is what quantization does to the weights it
    quantizes (the issue's "base-weight memory"); the second is what the
    whole model costs, dominated here by SmolLM2's 28M-parameter embedding.
    """
    import bitsandbytes as bnb
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.float32)
    m4 = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=q, device_map={"": "cpu"})
    m16 = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    lin4 = lin16 = 0
    for name, mod in m4.named_modules():
        if isinstance(mod, bnb.nn.Linear4bit):
            qs = mod.weight.quant_state
            lin4 += mod.weight.data.nbytes + qs.absmax.nbytes + qs.code.nbytes
            if qs.nested:  # double quantization: absmax stored as 8-bit plus its own fp32 scales
                lin4 += qs.state2.absmax.nbytes + qs.state2.code.nbytes
            lin16 += m16.get_submodule(name).weight.nbytes
    return lin4 / lin16, m4.get_memory_footprint() / m16.get_memory_footprint()


def packing_waste(model_dir: str, data_dir: Path, args: argparse.Namespace) -> tuple[float, float]:
    """(padding waste without packing, with BFD packing) on the bench's training rows."""
    from transformers import AutoTokenizer

    from finetune.chat import padding_waste, tokenize_split
    from finetune.data import load_examples
    from finetune.prep import sample_rows

    tok = AutoTokenizer.from_pretrained(model_dir)
    rows, _ = load_examples(data_dir / "instruction" / "alpaca" / "alpaca_5000.json")
    rows = sample_rows(rows, args.waste_rows, seed=0)
    lengths = [len(r["input_ids"]) for r in tokenize_split(tok, rows, args.max_length)[0]]
    return (padding_waste(lengths, args.batch, args.max_length, is_packed=False),
            padding_waste(lengths, args.batch, args.max_length, is_packed=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="lora,qlora,full")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--waste-rows", type=int, default=1000)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from harness.models.resolve import resolve
    from harness.settings import Settings

    settings = Settings.from_env()
    model_dir = resolve(settings, MODEL).base_path
    print(f"model {MODEL}, {args.steps} steps x batch {args.batch}, max_length {args.max_length}, "
          f"torch threads {os.cpu_count()} cores")
    print(f"{'method':<8} {'tokens/s':>9} {'peak RSS MiB':>13} {'tokens':>7} {'train s':>8}")
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp:
        for method in args.methods.split(","):
            m = run_method(method, Path(tmp), args)
            print(f"{method:<8} {m['tokens_per_s']:>9.1f} {m['peak_rss_mib']:>13.0f} {m['tokens_seen']:>7} "
                  f"{m['train_s']:>8.1f}", flush=True)
    lin, whole = qlora_weight_ratio(model_dir)
    print(f"QLoRA base-weight memory / bf16: {lin:.3f} for the quantized Linear weights (target <= 0.35); "
          f"{whole:.3f} for the whole model (embeddings stay bf16)")
    unpacked, packed = packing_waste(model_dir, settings.data_dir, args)
    print(f"padding waste on {args.waste_rows} Alpaca rows, batch {args.batch}, max_length {args.max_length}: "
          f"{100 * unpacked:.1f}% unpacked, {100 * packed:.1f}% with packing (target <= 5%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
