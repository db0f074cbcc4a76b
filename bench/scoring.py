"""Benchmark: the shared-prefix scorer against lm-eval's HF backend on identical MMLU 5-shot prompts.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HARNESS_DATA_DIR=../shared/datasets \\
        .venv/bin/python bench/scoring.py [--per-subject 10] [--dtype bfloat16]

Both sides run through lm-eval's evaluator on the same documents (a seeded
--per-subject sample of every MMLU subject, 570 questions by default), so the
prompts are byte-identical. Prints both wall times and their ratio (target
>= 3x), both accuracies and prediction agreement, and our time against the
compute floor: the tokens that must be computed (each subject's few-shot
prefix once, each question's own tokens once) divided by forward tokens/s
measured on this machine just before.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DEFAULTS = {"per_subject": 10, "dtype": "bfloat16", "batch_size": 8, "seed": 1234}


def forward_tokens_per_s(model, n_tokens: int = 512, batch: int = 4) -> float:
    """Measured forward throughput on random tokens (one warm-up pass)."""
    import torch

    ids = torch.randint(0, model.config.vocab_size, (batch, n_tokens))
    with torch.inference_mode():
        model(input_ids=ids[:, :32])
        t = time.perf_counter()
        model(input_ids=ids, logits_to_keep=1)
        return batch * n_tokens / (time.perf_counter() - t)


def evaluate_with(lm, tm, per_subject: int, seed: int) -> tuple[list[dict], float]:
    """lm-eval's evaluator with `lm` on mmlu_local 5-shot; (rows, wall seconds)."""
    import numpy as np
    from lm_eval.evaluator import evaluate

    from harness.suites.spec import Sample, TaskSpec, choose_docs

    loaded = tm.load(["mmlu_local"])
    tasks = loaded["tasks"]
    chosen = choose_docs({k: len(t.eval_docs) for k, t in tasks.items()},
                         TaskSpec(lm_eval="mmlu_local", metric="acc", sample=Sample(per_subject=per_subject)), seed)
    for t in tasks.values():
        t.set_config(key="num_fewshot", value=5)
        t.set_fewshot_seed(seed=seed)
    random.seed(0)
    np.random.seed(1234)
    t0 = time.perf_counter()
    out = evaluate(lm=lm, task_dict={"tasks": tasks, "groups": {}}, samples=chosen, log_samples=True, bootstrap_iters=0)
    wall = time.perf_counter() - t0
    rows = []
    for leaf in tasks:
        for s in out["samples"][leaf]:
            lls = [float(r[0]) for r in s["filtered_resps"]]
            rows.append({"key": (leaf, s["doc_id"]), "acc": float(s["acc"]), "pred": lls.index(max(lls))})
    return rows, wall


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-subject", type=int, default=DEFAULTS["per_subject"])
    p.add_argument("--dtype", default=DEFAULTS["dtype"])
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    p.add_argument("--model", default="smollm2-135m-instruct")
    args = p.parse_args()

    from lm_eval.models.huggingface import HFLM

    from harness.backends.hf import HFBackend
    from harness.backends.lmeval_adapter import BackendLM, task_manager
    from harness.backends.hf_prefix import SharedPrefixScorer
    from harness.models.resolve import resolve
    from harness.settings import Settings
    from harness.suites.lmeval_data import materialize_lmeval_tasks

    settings = Settings.from_env()
    resolved = resolve(settings, args.model)
    tm = task_manager(materialize_lmeval_tasks(settings).task_dir, include_defaults=False)
    hf = HFBackend(resolved, dtype=args.dtype, batch_size=args.batch_size)
    tok_s = forward_tokens_per_s(hf.model)
    print(f"model {args.model} dtype {args.dtype}; forward throughput {tok_s:.0f} tokens/s")

    scorer = SharedPrefixScorer(hf)
    ours, t_ours = evaluate_with(BackendLM(scorer), tm, args.per_subject, DEFAULTS["seed"])
    theirs_lm = HFLM(pretrained=resolved.base_path, dtype=args.dtype, batch_size=args.batch_size, device="cpu")
    theirs, t_theirs = evaluate_with(theirs_lm, tm, args.per_subject, DEFAULTS["seed"])

    a = {r["key"]: r for r in ours}
    b = {r["key"]: r for r in theirs}
    agree = sum(a[k]["pred"] == b[k]["pred"] for k in a) / len(a)
    acc_a = sum(r["acc"] for r in ours) / len(ours)
    acc_b = sum(r["acc"] for r in theirs) / len(theirs)
    floor_tokens = scorer.stats["prefix_tokens"] + scorer.stats["suffix_tokens"]
    floor_s = floor_tokens / tok_s
    print(f"questions            {len(ours)} (MMLU 5-shot, {args.per_subject} per subject)")
    print(f"lm-eval hf backend   {t_theirs:8.1f} s   accuracy {acc_b:.4f}")
    print(f"shared-prefix scorer {t_ours:8.1f} s   accuracy {acc_a:.4f}")
    print(f"speed-up             {t_theirs / t_ours:8.2f}x (target >= 3x); predictions agree on {agree:.2%}")
    print(f"compute floor        {floor_tokens} tokens / {tok_s:.0f} tok/s = {floor_s:.1f} s; "
          f"ours is {t_ours / floor_s:.2f}x the floor (padding {scorer.stats['padded_tokens'] - scorer.stats['suffix_tokens']} tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
