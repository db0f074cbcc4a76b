"""Rolling perplexity: the harness's hf backend vs a plain transformers loop vs lm-eval.

    .venv/bin/python bench/perplexity.py [--docs 64] [--max-length 512] [--repeats 1]

Same texts (Alpaca responses joined into documents longer than the window),
same checkpoint, float32 everywhere so NLL per token can be compared: the
three must agree within 1e-3 nats per token. Prints tokens/s and ratios.
"""
from __future__ import annotations

import argparse
import math

from _common import alpaca_texts, header, settings, timed

from harness.backends.hf import HFBackend
from harness.models.resolve import resolve
from harness.records import RollingRequest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    s = settings()
    header("perplexity")
    model = resolve(s, "smollm2-135m-instruct")
    rows = alpaca_texts(s.data_dir, args.docs * 4, offset=1000)
    texts = ["\n\n".join(r["output"] for r in rows[i: i + 4]) for i in range(0, len(rows), 4)]

    ours = HFBackend(model, dtype="float32", max_length=args.max_length, batch_size=8)
    t_ours, res = timed(lambda: ours.loglikelihood_rolling([RollingRequest(t) for t in texts]), args.repeats)
    n_tokens = sum(r.n_tokens for r in res)  # type: ignore[union-attr]
    nll_ours = -sum(r.logprob for r in res) / n_tokens  # type: ignore[union-attr]

    import torch

    lm, tok = ours.model, ours.tokenizer

    def plain_loop() -> float:
        # One document at a time, disjoint windows, BOS first: the textbook loop.
        total = 0.0
        for text in texts:
            ids = [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
            for start in range(0, len(ids) - 1, args.max_length):
                window = ids[start: start + args.max_length + 1]
                x = torch.tensor([window[:-1]])
                with torch.inference_mode():
                    logp = lm(x).logits[0].float().log_softmax(-1)
                total += float(logp.gather(-1, torch.tensor(window[1:])[:, None]).sum())
        return -total / n_tokens

    t_plain, nll_plain = timed(plain_loop, args.repeats)

    import lm_eval.models.huggingface as lm_hf
    from lm_eval.api.instance import Instance

    peer = lm_hf.HFLM(pretrained=model.base_path, dtype="float32", max_length=args.max_length, batch_size=8,
                      device="cpu")
    inst = [Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)]
    t_lm, lm_res = timed(lambda: peer.loglikelihood_rolling(inst, disable_tqdm=True), args.repeats)
    nll_lm = -sum(lm_res) / n_tokens  # type: ignore[arg-type]

    print(f"{len(texts)} documents, {n_tokens} tokens, window {args.max_length}")
    for name, t, nll in (("harness hf", t_ours, nll_ours), ("plain transformers", t_plain, nll_plain),
                         ("lm-eval HFLM", t_lm, nll_lm)):
        print(f"{name:20s} {n_tokens / t:8.1f} tok/s  NLL/token {nll:.6f}  ppl {math.exp(nll):.3f}")
    print(f"ratio harness / plain loop: {t_plain / t_ours:.2f}x; harness / lm-eval: {t_lm / t_ours:.2f}x")
    worst = max(abs(nll_ours - nll_plain), abs(nll_ours - nll_lm))
    print(f"max NLL/token disagreement: {worst:.2e} ({'OK' if worst < 1e-3 else 'FAIL'}: tolerance 1e-3)")


if __name__ == "__main__":
    main()
