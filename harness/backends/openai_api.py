"""`openai`: any OpenAI-compatible endpoint (OpenAI, a remote vLLM, TGI), for generation and judging.

The API key is read from the environment variable named by `api_key_env`
(default OPENAI_API_KEY) and lives only in the client object: it is never
logged, put in an error message, a manifest or a cache key.

Log-likelihoods use the legacy completions API with echo=True and
logprobs (vLLM and TGI return prompt log-probabilities that way); the
endpoint tokenizes, so the continuation's tokens are found by character
offset: a token that straddles the end of the context (e.g. "\n   " merged
into one token) counts with the context, so such continuations can differ
from the hf/vllm backends, which split tokens as lm-eval does. Endpoints that
return no prompt log-probabilities (OpenAI's chat models) raise
UnsupportedMethodError.

What answers behind the URL is fingerprinted when the reference is resolved
(harness.models.fingerprint), and the fingerprint is this backend's
`identity`, so another model behind the same URL and name is scored afresh.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence, TypeVar

from harness.errors import BackendError, ContextTooLongError, HarnessError, UnsupportedMethodError
from harness.models.resolve import ResolvedModel
from harness.records import (
    GenerateRequest, Generation, LoglikelihoodRequest, LoglikelihoodResult, RollingRequest, RollingResult
)

T = TypeVar("T")


def generate_with_client(client: Any, model: str, r: GenerateRequest) -> Generation:
    """One request through an OpenAI client: chat completions for messages, completions for a prompt."""
    common: dict[str, Any] = {"model": model, "max_tokens": r.max_new_tokens, "temperature": r.temperature,
                              "top_p": r.top_p}
    if r.stop:
        common["stop"] = list(r.stop)
    if r.seed is not None:
        common["seed"] = r.seed
    if r.messages is not None:
        resp = client.chat.completions.create(messages=[{"role": m.role, "content": m.content} for m in r.messages],
                                              **common)
        text = resp.choices[0].message.content or ""
    else:
        resp = client.completions.create(prompt=r.prompt, **common)
        text = resp.choices[0].text
    return Generation(text=text, finish_reason="length" if resp.choices[0].finish_reason == "length" else "stop",
                      n_completion_tokens=resp.usage.completion_tokens if resp.usage else 0)


class OpenAIBackend:
    name = "openai"

    def __init__(self, model: str, url: str, identity: str, *, api_key_env: str = "OPENAI_API_KEY",
                 max_concurrency: int = 8, timeout_s: float = 300):
        import openai

        key = os.environ.get(api_key_env)
        if key is None and "api.openai.com" in url:
            raise HarnessError(f"endpoint {url} needs an API key: set {api_key_env}")
        self.model = model
        self.url = url
        self.identity = identity
        self.max_concurrency = max_concurrency
        self.client = openai.OpenAI(base_url=url, api_key=key or "EMPTY", max_retries=2, timeout=timeout_s)
        self.scoring_params = {"endpoint": url, "model": model}
        self.notice: str | None = None
        self.runtime: dict[str, Any] | None = None  # the endpoint's own business
        self.resolved: ResolvedModel | None = None

    @classmethod
    def from_resolved(cls, resolved: ResolvedModel, **opts: Any) -> "OpenAIBackend":
        if resolved.ref.kind != "openai" or resolved.ref.url is None:
            raise HarnessError(f"'{resolved.ref.raw}' is not an openai:MODEL@URL reference")
        backend = cls(resolved.ref.base, resolved.ref.url, resolved.identity, **opts)
        backend.resolved = resolved  # the full reference, for run manifests and messages
        return backend

    def _map(self, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        import openai

        try:
            with ThreadPoolExecutor(self.max_concurrency) as pool:
                return list(pool.map(fn, items))
        except openai.BadRequestError as e:
            if "context" in str(e).lower() or "maximum" in str(e).lower():
                raise ContextTooLongError(f"endpoint {self.url} refused a request as too long: {e}") from e
            raise BackendError(f"endpoint {self.url} ({self.model}) refused a request: {e}") from e
        except openai.APIError as e:
            raise BackendError(f"endpoint {self.url} ({self.model}) failed: {type(e).__name__}: {e}") from e

    def generate(self, requests: Sequence[GenerateRequest]) -> list[Generation]:
        return self._map(self._generate_one, requests)

    def _generate_one(self, r: GenerateRequest) -> Generation:
        return generate_with_client(self.client, self.model, r)

    def _echo(self, prompt: str) -> tuple[list[int], list[float | None], list[str], list[dict[str, float] | None]]:
        resp = self.client.completions.create(model=self.model, prompt=prompt, max_tokens=1, temperature=0.0,
                                              echo=True, logprobs=1)
        lp = resp.choices[0].logprobs
        if lp is None or not lp.token_logprobs or lp.text_offset is None:
            raise UnsupportedMethodError("openai", "loglikelihood",
                                         f"endpoint {self.url} returned no prompt log-probabilities (echo+logprobs)")
        # The echo is followed by one generated token; keep the prompt's tokens only.
        n = sum(1 for off in lp.text_offset if off < len(prompt))
        return lp.text_offset[:n], lp.token_logprobs[:n], lp.tokens[:n], (lp.top_logprobs or [None] * n)[:n]

    def _score_continuation(self, r: LoglikelihoodRequest) -> LoglikelihoodResult:
        offsets, logprobs, tokens, tops = self._echo(r.context + r.continuation)
        total, greedy, n = 0.0, True, 0
        for off, lp, tok, top in zip(offsets, logprobs, tokens, tops):
            if off < len(r.context):
                continue
            if lp is None:
                raise UnsupportedMethodError("openai", "loglikelihood", "the continuation's first token has no log-probability")
            total += lp
            n += 1
            greedy = greedy and (top is None or max(top, key=top.get) == tok)
        if n == 0:
            raise BackendError(f"endpoint {self.url}: continuation {r.continuation!r} got no tokens of its own")
        return LoglikelihoodResult(logprob=total, is_greedy=greedy, n_tokens=n)

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        return self._map(self._score_continuation, requests)

    def _score_text(self, r: RollingRequest) -> RollingResult:
        _, logprobs, _, _ = self._echo(r.text)
        # The endpoint scores every token after the first; the first has no context (None).
        scored = [lp for lp in logprobs if lp is not None]
        return RollingResult(logprob=float(sum(scored)), n_tokens=len(scored))

    def loglikelihood_rolling(self, requests: Sequence[RollingRequest]) -> list[RollingResult]:
        return self._map(self._score_text, requests)

    def close(self) -> None:
        self.client.close()
