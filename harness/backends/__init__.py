"""Model backends behind one narrow interface (see harness.backends.base.Backend).

`open_backend` is the one place that maps a backend name to a module; the
modules themselves import torch, vLLM or openai only when opened.
"""
from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Any, Iterator, Sequence

from harness.backends.base import Backend
from harness.errors import HarnessError
from harness.models import ResolvedModel, resolve
from harness.settings import Settings

BACKENDS = ("hf", "vllm", "openai")


def open_backend(settings: Settings, ref: str | ResolvedModel, kind: str = "hf", **opts: Any) -> Backend:
    """Open a backend for one model reference.

    `kind` is hf, vllm or openai; an openai:MODEL@URL reference always uses
    the openai backend, and then options meant for hf or vllm (dtype, batch
    size) are dropped: the endpoint runs its own weights. For several models
    on one vLLM engine, start a harness.backends.vllm.VLLMServer and ask it
    for each model's backend.
    """
    resolved = ref if isinstance(ref, ResolvedModel) else resolve(settings, ref)
    if resolved.ref.kind == "openai":
        if kind != "openai":
            opts = {}
        kind = "openai"
    if kind == "hf":
        from harness.backends.hf import HFBackend

        return HFBackend(resolved, **opts)
    if kind == "openai":
        from harness.backends.openai_api import OpenAIBackend

        return OpenAIBackend.from_resolved(resolved, **opts)
    if kind == "vllm":
        from harness.backends.vllm import VLLMServer

        server = VLLMServer.start(settings, resolved.ref.base_ref() if resolved.adapter_path else resolved.ref,
                                  adapters=[resolved] if resolved.adapter_path else [], **opts)
        return server.backend(resolved, owns_server=True)
    raise HarnessError(f"backend '{kind}' unknown; choose {', '.join(BACKENDS)}")


@contextlib.contextmanager
def open_models(settings: Settings, refs: Sequence[str | ResolvedModel], kind: str = "hf",
                opts: dict[str, Any] | None = None) -> Iterator[dict[str, Backend]]:
    """Backends for each distinct reference, keyed by the reference string, closed on exit.

    On vllm, references that share a base content hash share one engine (the
    base and all its adapters); endpoints use the openai backend whatever
    `kind` says. `opts` go to the engine (vllm) or to each backend (hf).
    """
    resolved = {}
    for r in refs:
        m = r if isinstance(r, ResolvedModel) else resolve(settings, r)
        resolved.setdefault(m.ref.raw, m)
    backends: dict[str, Backend] = {}
    closers: list[Any] = []
    try:
        if kind == "vllm":
            from harness.backends.vllm import VLLMServer

            groups: dict[str, list[ResolvedModel]] = defaultdict(list)
            for m in resolved.values():
                if m.ref.kind != "openai":
                    groups[m.base_hash].append(m)
            for members in groups.values():
                # Lazy: the engine starts at the first request the item cache cannot answer.
                server = VLLMServer.start(settings, members[0].ref.base_ref(), lazy=True,
                                          adapters=[m for m in members if m.adapter_path], **(opts or {}))
                closers.append(server.close)
                for m in members:
                    backends[m.ref.raw] = server.backend(m)
                    closers.append(backends[m.ref.raw].close)
        for raw, m in resolved.items():
            if raw not in backends:
                backends[raw] = open_backend(settings, m, kind=kind, **({} if kind == "vllm" else opts or {}))
                closers.append(backends[raw].close)
        yield backends
    finally:
        for close in reversed(closers):
            close()
