"""Judgments per second through the harness's vLLM server: one batch vs one request at a time.

    HF_HUB_OFFLINE=1 HARNESS_HOME=.cache/harness HARNESS_DATA_DIR=../shared/datasets \
        .venv/bin/python bench/judge.py --n 16 --via logprobs generate

Builds `--n` pairwise judge prompts from the self-instruct golden set (its
ideal answer against the ideal cut in half, so prompts are realistic in
length), starts one vLLM engine for the judge (base only, so it scores
log-probabilities itself), and times `Judge.decide` on all prompts at once
(the backend keeps up to `max_concurrency` requests in flight; vLLM batches
them) against one `decide` call per prompt. No cache, so both sides compute
everything. The first request warms the engine and is not timed. Prints
judgments/s for each and the ratio.
"""
from __future__ import annotations

import argparse
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--judge", default="smollm2-135m-instruct")
    p.add_argument("--n", type=int, default=16, help="judge prompts (default %(default)s)")
    p.add_argument("--via", nargs="+", choices=["logprobs", "generate"], default=["logprobs", "generate"])
    p.add_argument("--max-new-tokens", type=int, default=32, help="judge reply cap on the generate path")
    args = p.parse_args()

    from harness.backends.vllm import VLLMServer
    from harness.settings import Settings
    from harness.suites.golden import load_golden_set
    from judges.config import load_judge_config
    from judges.judge import Judge
    from judges.pairwise import PairInput, pair_chats

    settings = Settings.from_env()
    items = [it for it in load_golden_set(settings, "self_instruct") if it.ideal and len(it.ideal) > 40][:args.n]
    pairs = [PairInput(it.id, it.prompt or "", it.ideal or "", (it.ideal or "")[: len(it.ideal or "") // 2])
             for it in items]
    base = load_judge_config("pairwise")
    print(f"{len(pairs)} judge prompts; judge {args.judge}; starting vLLM...")
    with VLLMServer.start(settings, args.judge) as server:
        backend = server.backend()
        for via in args.via:
            config = base.model_copy(update={"verdict_via": via, "max_new_tokens": args.max_new_tokens})
            judge = Judge(backend, config)
            chats = [pair_chats(judge, pr)[0] for pr in pairs]
            judge.decide(chats[:1])  # warm-up, untimed
            t0 = time.perf_counter()
            batched = judge.decide(chats)
            t_batched = time.perf_counter() - t0
            t0 = time.perf_counter()
            sequential = [v for c in chats for v in judge.decide([c])]
            t_seq = time.perf_counter() - t0
            agree = sum(a.label == b.label for a, b in zip(batched, sequential))
            rate_b, rate_s = len(chats) / t_batched, len(chats) / t_seq
            print(f"{via:9s} batched {rate_b:7.2f} judgments/s ({t_batched:6.1f} s)  sequential {rate_s:7.2f} "
                  f"judgments/s ({t_seq:6.1f} s)  ratio {rate_b / rate_s:5.2f}x  same verdicts {agree}/{len(chats)}")
        backend.close()


if __name__ == "__main__":
    main()
