"""Golden-set-like generation: N chats x M new tokens, vLLM (harness server) vs plain transformers.

    .venv/bin/python bench/generation.py [--n 64] [--max-new-tokens 128] [--repeats 3]

Prints tokens/s for both and the ratio (target: vLLM at least 2x on this CPU).
Both sides generate greedily from the same chat-templated prompts; the
transformers peer is the usual batched `generate` with left padding.
The engine runs with the harness's defaults (VLLMServer), including its
thread binding on small machines (harness.backends.engine.cpu_thread_binding);
set VLLM_CPU_OMP_THREADS_BIND=auto to measure vLLM's own choice.
"""
from __future__ import annotations

import argparse
import os

from _common import alpaca_texts, header, settings, timed

from harness.backends.engine import cpu_thread_binding
from harness.backends.vllm import VLLMServer
from harness.models.resolve import resolve
from harness.records import GenerateRequest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16, help="transformers peer batch size")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per side; medians are printed")
    args = ap.parse_args()
    s = settings()
    header("generation")
    model = resolve(s, "smollm2-135m-instruct")
    rows = alpaca_texts(s.data_dir, args.n)
    chats = [GenerateRequest.chat(r["instruction"] + ("\n\n" + r["input"] if r["input"] else ""),
                                  max_new_tokens=args.max_new_tokens) for r in rows]

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model.base_path, padding_side="left")
    hf = AutoModelForCausalLM.from_pretrained(model.base_path, dtype=torch.bfloat16).eval()
    prompts = [tok.apply_chat_template([{"role": "user", "content": c.messages[0].content}], tokenize=False,
                                       add_generation_prompt=True) for c in chats]

    def plain_transformers() -> int:
        n_new = 0
        for b in range(0, len(prompts), args.batch_size):
            enc = tok(prompts[b: b + args.batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.inference_mode():
                out = hf.generate(**enc, max_new_tokens=args.max_new_tokens, do_sample=False,
                                  pad_token_id=tok.pad_token_id)
            new = out[:, enc["input_ids"].shape[1]:]
            n_new += int((new != tok.pad_token_id).sum())
        return n_new

    with torch.inference_mode():  # warm-up, as for vLLM below
        hf.generate(**tok(prompts[:2], return_tensors="pt", padding=True, add_special_tokens=False),
                    max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    t_hf, n_hf = timed(plain_transformers, args.repeats)
    with VLLMServer.start(s, model, dtype="bfloat16", max_model_len=2048, max_concurrency=args.n) as server:
        backend = server.backend()
        backend.generate(chats[:2])  # warm-up: the first requests compile kernels
        t_vllm, gens = timed(lambda: backend.generate(chats), args.repeats)
    n_vllm = sum(g.n_completion_tokens for g in gens)  # type: ignore[union-attr]
    print(f"transformers generate (batch {args.batch_size}): {n_hf} tokens in {t_hf:.1f}s = {n_hf / t_hf:.1f} tok/s")
    print(f"vLLM server ({args.n} concurrent):          {n_vllm} tokens in {t_vllm:.1f}s = {n_vllm / t_vllm:.1f} tok/s")
    binding = os.environ.get("VLLM_CPU_OMP_THREADS_BIND") or cpu_thread_binding(os.environ).get(
        "VLLM_CPU_OMP_THREADS_BIND", "vLLM auto")
    print(f"(medians of {args.repeats}; vLLM CPU thread binding: {binding})")
    print(f"throughput ratio vLLM / transformers: {(n_vllm / t_vllm) / (n_hf / t_hf):.2f}x (target >= 2x)")


if __name__ == "__main__":
    main()
