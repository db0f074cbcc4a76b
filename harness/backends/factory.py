"""Opening backends: `open_backend` and `open_models` are the one place that maps a backend name
to its class (the contract is harness.backends.base); the backends import torch, vLLM or openai
only when opened.

On vllm, an adapter vLLM cannot serve (IA3, prompt tuning, DoRA, or any option
vLLM's validator rejects) is recognised from its adapter_config.json before any
engine starts and scored on hf instead; the hf backend carries a one-line
`notice` saying so, which runs record in their manifest.
"""
from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from typing import Any, Iterator, Sequence

from harness.backends.base import BACKENDS, DEFAULT_BACKEND, Backend
from harness.backends.hf import HFBackend
from harness.backends.openai_api import OpenAIBackend
from harness.backends.vllm import VLLMServer, engine_max_model_len, refusal_memo, vllm_refusal
from harness.backends.vllm_attach import attach
from harness.errors import HarnessError
from harness.models.resolve import ResolvedModel, resolve
from harness.settings import Settings

log = logging.getLogger(__name__)


def open_backend(settings: Settings, ref: str | ResolvedModel, kind: str = DEFAULT_BACKEND, **opts: Any) -> Backend:
    """Open a backend for one model reference.

    `kind` is hf, vllm or openai; an openai:MODEL@URL reference always uses
    the openai backend, and a vllm:MODEL@URL reference the attached vLLM
    backend (harness.backends.vllm_attach, with the `tokenizer` option); then
    options meant for hf or vllm (dtype, batch size, engine arguments) are
    dropped: the endpoint runs its own weights. An adapter vLLM
    cannot serve uses hf (with a notice). For several models on one vLLM
    engine, use `open_models`.
    """
    resolved = ref if isinstance(ref, ResolvedModel) else resolve(settings, ref)
    opts = dict(opts)
    tokenizer = opts.pop("tokenizer", None)  # for vllm:MODEL@URL servers only
    if resolved.ref.kind == "vllm":
        return attach(resolved, tokenizer)
    if resolved.ref.kind == "openai":
        if kind != "openai":
            opts = {}
        kind = "openai"
    if kind == "hf":
        return HFBackend(resolved, **opts)
    if kind == "openai":
        return OpenAIBackend.from_resolved(resolved, **opts)
    if kind == "vllm":
        fallback = _hf_fallback(settings, resolved, opts.get("max_model_len"))
        if fallback is not None:
            return fallback
        server = VLLMServer.start(settings, resolved.ref.base_ref() if resolved.adapter_path else resolved.ref,
                                  adapters=[resolved] if resolved.adapter_path else [], **opts)
        return server.backend(resolved, owns_server=True)
    raise HarnessError(f"backend '{kind}' unknown; choose {', '.join(BACKENDS)}")


def _hf_fallback(settings: Settings, m: ResolvedModel, max_model_len: int | None = None) -> Backend | None:
    """An hf backend with a notice for an adapter vLLM would refuse; None if vLLM serves `m`.

    hf runs at its own default dtype (float32 on CPU, the adapter merged where exact) and the
    engine's context, as the hf delegate of a LoRA engine does, so these scores equal a LoRA engine's.
    """
    if m.adapter_path is None:
        return None

    reason = vllm_refusal(m.adapter_path, memo_dir=refusal_memo(settings))
    if reason is None:
        return None

    notice = f"'{m.ref.raw}' scored on hf, not vllm: {reason}"
    log.warning(notice)
    return HFBackend(m, max_length=engine_max_model_len(m.base_path, max_model_len), notice=notice)


@contextlib.contextmanager
def open_models(settings: Settings, refs: Sequence[str | ResolvedModel], kind: str = DEFAULT_BACKEND,
                opts: dict[str, Any] | None = None) -> Iterator[dict[str, Backend]]:
    """Backends for each distinct reference, keyed by the reference string, closed on exit.

    On vllm, references that share a base content hash share one engine (the
    base and all its adapters that vLLM serves); adapters vLLM cannot serve are
    scored on hf with a notice, and their base's log-likelihoods then go to hf
    too, so both are scored alike. Endpoints use their own backend whatever
    `kind` says (openai:, or vllm: attached). `opts` go to the engine (vllm) or
    to each backend (hf); `tokenizer` goes to vllm: references.
    """
    opts = dict(opts or {})
    tokenizer = opts.pop("tokenizer", None)  # for vllm:MODEL@URL servers only
    resolved = {}
    for r in refs:
        m = r if isinstance(r, ResolvedModel) else resolve(settings, r)
        resolved.setdefault(m.ref.raw, m)
    backends: dict[str, Backend] = {}
    closers: list[Any] = []
    try:
        if kind == "vllm":
            groups: dict[str, list[ResolvedModel]] = defaultdict(list)
            on_hf: set[str] = set()  # base hashes with an adapter scored on hf
            for m in resolved.values():
                if m.ref.is_endpoint:
                    continue
                fallback = _hf_fallback(settings, m, (opts or {}).get("max_model_len"))
                if fallback is not None:
                    backends[m.ref.raw] = fallback
                    closers.append(fallback.close)
                    on_hf.add(m.base_hash)
                else:
                    groups[m.base_hash].append(m)
            for base_hash, members in groups.items():
                # Lazy: the engine starts at the first request the item cache cannot answer.
                server = VLLMServer.start(settings, members[0].ref.base_ref(), lazy=True,
                                          adapters=[m for m in members if m.adapter_path],
                                          loglikelihood_via_hf=base_hash in on_hf, **(opts or {}))
                closers.append(server.close)
                for m in members:
                    backends[m.ref.raw] = server.backend(m)
                    closers.append(backends[m.ref.raw].close)
        for raw, m in resolved.items():
            if raw not in backends:
                attach_opts = {"tokenizer": tokenizer} if m.ref.kind == "vllm" else {}
                backends[raw] = open_backend(settings, m, kind=kind, **({} if kind == "vllm" else opts), **attach_opts)
                closers.append(backends[raw].close)
        yield backends
    finally:
        for close in reversed(closers):
            close()
