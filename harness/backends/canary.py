"""Adapter canary: refuse to use the scores of an adapter that is not applied or is damaged.

Silent no-op adapters are a known failure (an adapter whose weights are zero,
target modules that do not exist, a server that ignored --lora-modules: see
lm-eval issues 2432 and 808, vLLM issue 51594), and so are adapters read at the
wrong positions (a prompt-tuning adapter whose virtual tokens a backend forgot).
A few probe log-probabilities of base and adapter are compared:
  * applied: base and adapter must differ by more than `min_diff_nats` on some probe;
  * plausible: the adapter's mean log-likelihood per probe token must not be worse
    than the base's by more than `max_drop_nats_per_token`;
  * on a vLLM engine, the same adapter on vllm and on hf must agree within
    `tol_nats_per_token` per continuation token on every probe.

The outcome is a property of the adapter's content, not of the cache: it is
recorded per (base hash, adapter hash, backend, canary version) by
harness.backends.canary_store, and `verify_adapters` runs before any task of eval,
compare or judge is scored. A passing record lets a fully cached rerun skip the
probes (and the model load); anything else runs them. A refusal raises
CanaryError, so nothing is scored; `--no-canary` makes the run "unverified",
which the gate never passes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from harness.backends import canary_store
from harness.backends.base import Backend, EngineScored
from harness.backends.probes import PROBES, TOL_NATS_PER_TOKEN
from harness.errors import HarnessError
from harness.models.resolve import ResolvedModel
from harness.records import LoglikelihoodRequest, LoglikelihoodResult
from harness.settings import Settings

# Bump when the probes or thresholds change: records of an older version no longer count.
CANARY_VERSION = 2

DEFAULT_TOL_NATS_PER_TOKEN = TOL_NATS_PER_TOKEN  # vLLM against hf, per continuation token (see probes)
DEFAULT_MIN_DIFF_NATS = 1e-3
# Mean probe log-likelihood per token (31 tokens) on SmolLM2-135M-Instruct, hf float32:
#   base -2.09; adapter minus base:
#   LoRA fine-tuned 20 steps on Alpaca (finetune/configs/smollm2_lora_alpaca.yaml)  +0.05
#   seeded-noise LoRA on all projections (tests.helpers.make_lora), scale 0.02     -0.01
#                                                                      scale 0.05     -0.31
#                                                                      scale 0.1      -8.5
#                                                                      scale 0.5     -19.1
#   3-step prompt-tuning adapter read at the wrong positions (issue 14, item 13)    -8.0
# A uniform guess over SmolLM2's 49k tokens scores -10.8: beyond a 3 nats/token drop
# (20x the per-token perplexity) the adapter predicts little better than noise, which no
# fine-tune that still works does on plain English, arithmetic and code.
DEFAULT_MAX_DROP_NATS_PER_TOKEN = 3.0

PASSED = "passed"
NOT_APPLIED = "refused: not applied"
DAMAGED = "refused: damaged"
UNVERIFIED = "unverified"
NOT_AN_ADAPTER = "not an adapter"


class CanaryError(HarnessError):
    """The adapter is not applied, damaged, or two backends disagree about it.

    `outcome` is NOT_APPLIED or DAMAGED; `figures` holds what was measured."""

    def __init__(self, message: str, *, outcome: str = NOT_APPLIED, figures: dict[str, float] | None = None):
        super().__init__(message)
        self.outcome = outcome
        self.figures = dict(figures or {})


@dataclass(frozen=True)
class CanaryResult:
    max_abs_diff_nats: float  # over probes
    per_probe: tuple[float, ...]
    figures: dict[str, float] = field(default_factory=dict)


def thresholds() -> dict[str, float]:
    """The thresholds the current canary version applies (recorded with every outcome)."""
    return {"min_diff_nats": DEFAULT_MIN_DIFF_NATS, "max_drop_nats_per_token": DEFAULT_MAX_DROP_NATS_PER_TOKEN,
            "tol_nats_per_token": DEFAULT_TOL_NATS_PER_TOKEN}


def _probe(backend: Backend, probes: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
    # A vLLM engine with LoRA must not get batched prompt-logprob requests (it
    # crashes); its probe path sends them one at a time and reads vLLM's own scores.
    return backend.probe_loglikelihood(probes) if isinstance(backend, EngineScored) else backend.loglikelihood(probes)


def _compare(first: Backend, second: Backend, probes: Sequence[LoglikelihoodRequest]
             ) -> tuple[list[LoglikelihoodResult], list[LoglikelihoodResult], tuple[float, ...]]:
    """Both backends' probe results and the per-probe absolute differences in nats."""
    x = _probe(first, probes)
    y = _probe(second, probes)
    return x, y, tuple(abs(p.logprob - q.logprob) for p, q in zip(x, y))


def _per_token(results: Sequence[LoglikelihoodResult]) -> float:
    return sum(r.logprob for r in results) / max(1, sum(r.n_tokens for r in results))


def check_adapter_applied(base: Backend, adapter: Backend, *, label: str = "adapter",
                          probes: Sequence[LoglikelihoodRequest] = PROBES,
                          min_diff_nats: float = DEFAULT_MIN_DIFF_NATS,
                          max_drop_nats_per_token: float = DEFAULT_MAX_DROP_NATS_PER_TOKEN) -> CanaryResult:
    """Raise CanaryError unless the adapter moves some probe by more than `min_diff_nats` (else NOT_APPLIED)
    and its mean log-likelihood per probe token is at most `max_drop_nats_per_token` below the base's
    (else DAMAGED). The base's tokens count for both means, so the two are over the same text."""
    x, y, diffs = _compare(base, adapter, probes)
    base_lp = _per_token(x)
    adapter_lp = sum(r.logprob for r in y) / max(1, sum(r.n_tokens for r in x))
    figures = {"vs_base_max_abs_diff_nats": max(diffs), "base_nats_per_token": base_lp,
               "adapter_nats_per_token": adapter_lp, "drop_nats_per_token": base_lp - adapter_lp}
    if max(diffs) <= min_diff_nats:
        raise CanaryError(
            f"{label}: log-probabilities equal the base's on all {len(probes)} probes (max |diff| "
            f"{max(diffs):.2e} nats on {adapter.name}); the adapter is not applied (zero weights, "
            "wrong target modules, or the server ignored it)", outcome=NOT_APPLIED, figures=figures)
    if base_lp - adapter_lp > max_drop_nats_per_token:
        raise CanaryError(
            f"{label}: damaged: mean probe log-likelihood {adapter_lp:.2f} nats/token against the base's "
            f"{base_lp:.2f} on {adapter.name}, {base_lp - adapter_lp:.2f} worse, beyond "
            f"{max_drop_nats_per_token} nats/token; its scores would be noise (broken weights, or an "
            "adapter read at the wrong positions)", outcome=DAMAGED, figures=figures)
    return CanaryResult(max(diffs), diffs, figures)


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
                f"{p.n_tokens} tokens; the adapter may be applied on one backend only",
                outcome=NOT_APPLIED, figures={f"{first.name}_vs_{second.name}_max_abs_diff_nats": max(diffs)})
    return CanaryResult(max(diffs), diffs)


def adapter_canary(base: Backend, adapter: Backend, *, label: str = "adapter") -> dict[str, float]:
    """The full check before scoring an adapter: it moves the base's probes, plausibly, and, on a
    vLLM engine, vLLM's own scores agree with hf for the same adapter. Returns the figures
    (for the run manifest); raises CanaryError otherwise."""
    if not isinstance(adapter, EngineScored) and isinstance(base, EngineScored):
        # An adapter vLLM cannot serve is scored on hf beside a vLLM base (harness.backends.factory.open_models):
        # probe the base on hf too, so the difference is the adapter's, not bf16 vLLM against float32 hf.
        base = base.loglikelihood_delegate() or base
    out = dict(check_adapter_applied(base, adapter, label=label).figures)
    hf = adapter.loglikelihood_delegate() if isinstance(adapter, EngineScored) else None  # a LoRA engine's scorer
    if hf is not None:
        try:
            out["vllm_vs_hf_max_abs_diff_nats"] = check_backends_agree(adapter, hf, label=label).max_abs_diff_nats
        except CanaryError as e:
            raise CanaryError(str(e), outcome=e.outcome, figures={**out, **e.figures}) from e
    return out


def canary_refs(models: Sequence[ResolvedModel], *, enabled: bool = True) -> list[str]:
    """The base references the canary of `models` needs open beside them (none when disabled)."""
    return [m.ref.base_ref().raw for m in models if enabled and m.adapter_path is not None]


def verify_adapters(settings: Settings, models: Sequence[ResolvedModel], backends: dict[str, Backend], *,
                    enabled: bool = True) -> dict[str, dict[str, Any]]:
    """The canary status of each model, by reference, for a run manifest; call before scoring anything.

    Not an adapter: {"outcome": "not an adapter"}. `enabled` false: {"outcome": "unverified",
    "reason"}. Otherwise a passing record for the adapter's content (harness.backends.canary_store) is
    reused without probes ("source": "record"); failing that the probes run on `backends` (which
    must hold each adapter and its base, see `canary_refs`) and their outcome is recorded. A
    refusal is recorded too, then raised as CanaryError: the caller scores nothing.
    """
    out: dict[str, dict[str, Any]] = {}
    for m in models:
        raw = m.ref.raw
        if raw in out:
            continue
        if m.adapter_path is None:
            out[raw] = {"outcome": NOT_AN_ADAPTER}
            continue
        if not enabled:
            out[raw] = {"outcome": UNVERIFIED, "reason": "the adapter canary was skipped (--no-canary)"}
            continue
        adapter = backends[raw]
        key = canary_store.CanaryKey(m.base_hash, m.adapter_hash or "", adapter.name, CANARY_VERSION)
        found = canary_store.find_passed(settings.runs_dir, key)
        if found is not None:
            out[raw] = {**found, "source": "record"}
            continue
        try:
            figures = adapter_canary(backends[m.ref.base_ref().raw], adapter, label=raw)
        except CanaryError as e:
            canary_store.record(settings.runs_dir, key, outcome=e.outcome, figures=e.figures,
                                thresholds=thresholds(), reason=str(e), ref=raw)
            raise
        out[raw] = {**canary_store.record(settings.runs_dir, key, outcome=PASSED, figures=figures,
                                          thresholds=thresholds(), reason=None, ref=raw), "source": "probes"}
    return out


def unverified(statuses: dict[str, dict[str, Any]]) -> list[str]:
    """'REF: reason' for each model `verify_adapters` could not vouch for (a gate passes none of them)."""
    return [f"{ref}: {s.get('reason') or s['outcome']}" for ref, s in statuses.items() if s["outcome"] == UNVERIFIED]
