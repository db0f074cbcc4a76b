"""GPU smoke test: a real vLLM engine with 2 LoRA adapters against hf, on the accelerator here.

    bash bench/gpu_smoke.sh [--model REF | --random-from DIR] [--n 64] [--max-new-tokens 128] [--repeats 3]

Prints, for the platform detected here:
  1. the platform, its GPUs and the engine command the harness builds (on CUDA:
     --gpu-memory-utilization, no --kv-cache-memory-bytes);
  2. the engine's own adapter log-likelihoods (the route a GPU LoRA engine takes
     once its engine check passes) against hf's for the same adapter: max |diff|
     in nats over the canary probes and some scored texts, per adapter;
  3. generation tokens/s (N chats x M new tokens) and scoring tokens/s (rolling
     log-likelihood of N texts), engine against hf in this process, as medians.
hf on the accelerator is also checked against hf on the CPU (float32), and the
shared-prefix multiple-choice scorer on the accelerator against plain hf there;
neither needs vLLM. Without vLLM installed (`pip install -e ".[gpu]"`), steps 1 to 3
say so and only the hf figures are printed.

`--random-from DIR` builds a randomly initialised checkpoint from DIR's
config.json and tokenizer (for a machine that holds no weights): throughput and
engine-vs-hf agreement do not depend on what the weights learned.
"""
from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.backends.platform import describe_platform, detect_platform  # noqa: E402
from harness.backends.probes import PROBES  # noqa: E402
from harness.records import GenerateRequest, LoglikelihoodRequest, RollingRequest  # noqa: E402
from harness.settings import Settings  # noqa: E402
from tests.helpers import make_lora  # noqa: E402

TOPICS = ("rivers", "prime numbers", "bread", "volcanoes", "sorting algorithms", "the moon", "tea", "bicycles")


def chats(n: int, max_new: int) -> list[GenerateRequest]:
    return [GenerateRequest.chat(f"Write a short paragraph about {TOPICS[i % len(TOPICS)]} (note {i}).",
                                 max_new_tokens=max_new) for i in range(n)]


def texts(n: int) -> list[RollingRequest]:
    body = ("{t} are a subject people study for many reasons. Some find them useful, others beautiful. "
            "This note, number {i}, lists a few facts about {t} and asks what else is worth knowing. ")
    return [RollingRequest(body.format(t=TOPICS[i % len(TOPICS)], i=i) * 6) for i in range(n)]


def multiple_choice(n: int) -> list[LoglikelihoodRequest]:
    """n questions x 4 choices behind one long few-shot prefix, as MMLU 5-shot is scored."""
    shots = "".join(f"Question: What is {i} plus {i}?\nAnswer: {2 * i}\n\n" for i in range(1, 30))
    return [LoglikelihoodRequest(f"{shots}Question: What is {q} plus {q}?\nAnswer:", f" {a}")
            for q in range(n) for a in (2 * q, 2 * q + 1, q, 3 * q)]


def random_checkpoint(src: Path, out: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src))
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                 "generation_config.json"):
        if (src / name).is_file():
            shutil.copy(src / name, out / name)
    return out


def median_rate(fn, repeats: int) -> tuple[float, float]:  # noqa: ANN001
    """(median tokens/s, median seconds) of fn() -> tokens over `repeats` calls."""
    secs, toks = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        toks.append(fn())
        secs.append(time.perf_counter() - t0)
    return statistics.median(t / s for t, s in zip(toks, secs)), statistics.median(secs)


def throughput(backend, gens: list[GenerateRequest], rolls: list[RollingRequest], repeats: int) -> dict:  # noqa: ANN001
    backend.generate(gens[:2])  # warm-up
    gen = median_rate(lambda: sum(g.n_completion_tokens for g in backend.generate(gens)), repeats)
    score = median_rate(lambda: sum(r.n_tokens for r in backend.loglikelihood_rolling(rolls)), repeats)
    return {"gen_tok_s": gen[0], "score_tok_s": score[0]}


def max_diff(a, b) -> float:  # noqa: ANN001
    return max(abs(x.logprob - y.logprob) for x, y in zip(a, b))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct", help="model reference (default %(default)s)")
    ap.add_argument("--random-from", type=Path, help="build random weights from this checkpoint's config")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cpu-n", type=int, default=16, help="chats and texts for the hf-on-CPU peer (slower)")
    args = ap.parse_args()

    from harness.backends.hf import HFBackend
    from harness.models.resolve import resolve

    settings = Settings.from_env()
    work = Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
    base_ref = str(random_checkpoint(args.random_from, work / "base")) if args.random_from else args.model
    base = resolve(settings, base_ref)
    adapters = [resolve(settings, f"{base_ref}+{make_lora(Path(base.base_path), work / f'lora{i}', seed=i, scale=0.02)}")
                for i in (1, 2)]
    platform = detect_platform()
    print(f"platform: {describe_platform(platform)}")
    has_vllm = importlib.util.find_spec("vllm") is not None
    gens, rolls = chats(args.n, args.max_new_tokens), texts(args.n)
    scored = [*PROBES, *(LoglikelihoodRequest(r.text[:200], r.text[200:400]) for r in rolls[:16])]

    hf_gpu = {a.ref.raw: HFBackend(a) for a in adapters}
    hf_cpu = {a.ref.raw: HFBackend(a, device="cpu") for a in adapters}
    for raw in hf_gpu:
        print(f"hf {hf_gpu[raw].device} {hf_gpu[raw].scoring_params['dtype']} vs hf cpu float32, {raw}: "
              f"max |diff| {max_diff(hf_gpu[raw].loglikelihood(scored), hf_cpu[raw].loglikelihood(scored)):.4f} nats "
              f"over {len(scored)} continuations")
    a0 = adapters[0].ref.raw
    from harness.backends.hf_prefix import SharedPrefixScorer

    mc = multiple_choice(24)
    print(f"shared-prefix scorer vs plain hf on {hf_gpu[a0].device}, {len(mc)} choices: max |diff| "
          f"{max_diff(SharedPrefixScorer(hf_gpu[a0]).loglikelihood(mc), hf_gpu[a0].loglikelihood(mc)):.4f} nats")
    results = {"hf " + hf_gpu[a0].device: throughput(hf_gpu[a0], gens, rolls, args.repeats),
               "hf cpu": throughput(hf_cpu[a0], gens[:args.cpu_n], rolls[:args.cpu_n], 1)}

    if not has_vllm or platform == "cpu":
        from harness.backends.vllm import VLLMServer

        # Building the command for the base alone needs no vLLM (adapters are checked by vLLM's validator).
        plan = VLLMServer.start(settings, base, lazy=True, max_model_len=2048)
        print("engine command for the base here (not started):", " ".join(plan.argv[1:]), plan.env or "")
        print("engine steps (engine vs hf, engine throughput) skipped: "
              + ("vLLM is not installed here" if not has_vllm else "vLLM-CPU crashes on concurrent prompt-logprob "
                 "requests to a LoRA engine (harness.backends.vllm)"))
    else:
        from harness.backends.vllm import VLLMServer

        with VLLMServer.start(settings, base, adapters, max_model_len=2048) as server:
            print("engine command:", " ".join(server.argv))
            engine = {a.ref.raw: server.backend(a) for a in adapters}
            engine[a0].loglikelihood(PROBES[:1])  # settles the route: the engine check
            print(f"engine check: {server.engine_check}")
            for raw, b in engine.items():
                print(f"engine vs hf {hf_gpu[raw].scoring_params['dtype']}, {raw}: max |diff| "
                      f"{max_diff(b.engine_loglikelihood(scored), hf_gpu[raw].loglikelihood(scored)):.4f} nats "
                      f"over {len(scored)} continuations")
            results["vllm engine"] = throughput(engine[a0], gens, rolls, args.repeats)
    print(f"\n{'scorer':16s} {'generation tok/s':>17s} {'scoring tok/s':>14s}")
    for name, r in results.items():
        print(f"{name:16s} {r['gen_tok_s']:17.1f} {r['score_tok_s']:14.1f}")
    ref = results.get("vllm engine")
    if ref:
        peer = results["hf " + hf_gpu[a0].device]
        print(f"engine / hf on {hf_gpu[a0].device}: generation {ref['gen_tok_s'] / peer['gen_tok_s']:.2f}x, "
              f"scoring {ref['score_tok_s'] / peer['score_tok_s']:.2f}x")
    gpu = results["hf " + hf_gpu[a0].device]
    print(f"hf {hf_gpu[a0].device} / hf cpu: generation {gpu['gen_tok_s'] / results['hf cpu']['gen_tok_s']:.2f}x, "
          f"scoring {gpu['score_tok_s'] / results['hf cpu']['score_tok_s']:.2f}x")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
