"""The one backend contract, mirroring lm-eval's three request kinds, and its optional abilities.

Every method takes a batch and returns a list of the same length and order.
A backend that cannot do a method raises UnsupportedMethodError naming itself
and the method. Judges, suites and comparisons see only these Protocols.

Abilities only some backends have are declared as Protocols below, and
callers ask with `isinstance` (after `unwrap` for wrappers such as the item
cache), never with `getattr` or a backend's name:

    RendersChat      the exact prompt text a chat becomes (hf)
    Tokenizes        its Hugging Face tokenizer (hf, vllm)
    Wraps            a wrapper's inner backend (the item cache, the shared-prefix scorer)
    EngineScored     a vLLM engine's model: its own scores one request at a time, and an
                     in-process hf copy that may score its log-likelihoods (vllm)
    HasServerLog     the log of the server it runs on (vllm)
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from harness.errors import ContextTooLongError
from harness.models.resolve import ResolvedModel
from harness.records import (
    GenerateRequest, Generation, LoglikelihoodRequest, LoglikelihoodResult, RollingRequest, RollingResult
)

BACKENDS = ("hf", "vllm", "openai")
LOCAL_BACKENDS = ("hf", "vllm")  # what --backend chooses for local models; endpoints bring their own
DEFAULT_BACKEND = "hf"  # for every command: in-process, no server to start, lm-eval's own scoring path


@runtime_checkable
class Backend(Protocol):
    name: str  # e.g. "hf", "vllm", "openai"
    identity: str  # content hash of what answers (base + adapter); keys the cache
    scoring_params: dict[str, Any]  # what else shapes its scores (dtype, context, route); keys the cache too
    notice: str | None  # one line runs record, e.g. why an adapter is scored on hf, not vllm
    runtime: dict[str, Any] | None  # where and how it runs (platform, engine); runs record it
    resolved: ResolvedModel | None  # the model reference it answers for, None for a bare test double

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        """log P(continuation | context) for each request; see LoglikelihoodRequest for edge cases."""
        ...

    def loglikelihood_rolling(self, requests: Sequence[RollingRequest]) -> list[RollingResult]:
        """Total log-likelihood of each text, every token scored once (perplexity)."""
        ...

    def generate(self, requests: Sequence[GenerateRequest]) -> list[Generation]:
        """Text for each prompt or chat; greedy when temperature is 0."""
        ...

    def close(self) -> None:
        """Release the model or server; safe to call twice."""
        ...


@runtime_checkable
class RendersChat(Protocol):
    def render_prompt(self, request: GenerateRequest) -> str:
        """The exact text the model sees for a request: its chat template applied to messages."""
        ...


@runtime_checkable
class Tokenizes(Protocol):
    tokenizer: Any  # the model's own Hugging Face tokenizer


@runtime_checkable
class Wraps(Protocol):
    inner: Backend  # the backend this one answers for (its abilities are the inner one's)


@runtime_checkable
class EngineScored(Protocol):
    loglikelihood_via_hf: bool  # whether its log-likelihoods now go to the in-process hf copy

    def probe_loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        """The engine's own log-likelihoods, one request at a time (safe on a LoRA engine); for the canary."""
        ...

    def loglikelihood_delegate(self) -> Backend | None:
        """The hf copy that scores (or may score) its log-likelihoods, or None where the engine scores its own."""
        ...


@runtime_checkable
class HasServerLog(Protocol):
    def server_log(self) -> str | None:
        """The text of its server's log, for the run's files (None when there is none to read)."""
        ...


def unwrap(backend: Backend) -> Backend:
    """The backend that answers under any wrappers (Wraps), whose abilities count."""
    while isinstance(backend, Wraps):
        backend = backend.inner
    return backend


def call_per_item_on_overflow(method: Callable[[list[Any]], list[Any]], requests: Sequence[Any],
                              group: int = 1) -> list[Any]:
    """method(requests), except that a request too long for the context fails only its own group.

    Requests come in groups of `group` consecutive requests that stand or
    fall together (a judge prompt's label scorings). Where the batch raises
    ContextTooLongError it is split in halves, group-aligned, until the
    groups at fault are alone; their places hold the ContextTooLongError, so
    the caller can record why each one is unscored. Halving keeps the other
    requests batched, and batches that succeeded are not asked again when
    `method` is a CachedBackend's. Other errors (a dead server) propagate:
    they are no single item's fault.
    """
    requests = list(requests)
    try:
        return list(method(requests)) if requests else []
    except ContextTooLongError as e:
        n_groups = -(-len(requests) // group)
        if n_groups <= 1:
            return [e] * len(requests)
    half = (n_groups // 2) * group
    return (call_per_item_on_overflow(method, requests[:half], group)
            + call_per_item_on_overflow(method, requests[half:], group))
