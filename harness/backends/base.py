"""The one backend interface, mirroring lm-eval's three request kinds.

Every method takes a batch and returns a list of the same length and order.
A backend that cannot do a method raises UnsupportedMethodError naming itself
and the method. Judges, suites and comparisons see only this Protocol.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from harness.errors import ContextTooLongError
from harness.records import (
    GenerateRequest,
    Generation,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    RollingRequest,
    RollingResult,
)


@runtime_checkable
class Backend(Protocol):
    name: str  # e.g. "hf", "vllm", "openai"
    identity: str  # content hash of what answers (base + adapter); keys the cache

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
