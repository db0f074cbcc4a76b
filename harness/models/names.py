"""Display names for models: `--candidate NAME=REF`, or a short default taken from the reference.

A reference names files (`smollm2-135m-instruct+/home/me/ft/lora-a/checkpoint-40`)
and is too long for a table; cut to a fixed width, two adapters under the same
folder tree read alike. A name is what tables, exports and win rates show; the
full reference and the hashes stay in the run manifest, and the cache and runs
still key on the model's identity (content hashes), never on its name.

    parse_named("lora-a=smollm2-135m-instruct+out/a")   -> ("lora-a", "smollm2-135m-instruct+out/a")
    default_name("smollm2-135m-instruct+out/a/lora")    -> "lora"
    unique_names([...])                                  -> HarnessError on a duplicate

NAME=REF. A NAME is `[A-Za-z0-9][\\w.-]*` before the first '='. No reference
form starts that way and has an '=' before any '/', '+', ':' or '@' (an '=' in
a path or URL query comes after one of them), so `out=1/lora` is the one
ambiguous shape: a path that exists as given is read as a reference; write
`./out=1/lora` to be sure.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from harness.errors import HarnessError
from harness.models.ref import ENDPOINT_KINDS

_NAMED = re.compile(r"^([A-Za-z0-9][\w.\-]*)=(.*)$", re.S)
_STEP = re.compile(r"(?:^|[/_\-])(?:checkpoint|step)[-_]?(\d+)$")


@dataclass(frozen=True)
class NamedRef:
    """A model reference with the name it is shown under."""

    name: str
    ref: str
    is_explicit: bool = False  # given as NAME=REF (not derived from the reference)


def parse_named(text: str) -> tuple[str | None, str]:
    """(NAME, REF) for 'NAME=REF', (None, text) for a bare reference.

    >>> parse_named("lora-a=smollm2-135m-instruct+out/a")
    ('lora-a', 'smollm2-135m-instruct+out/a')
    >>> parse_named("smollm2-135m-instruct+out/a=b")
    (None, 'smollm2-135m-instruct+out/a=b')
    >>> parse_named("openai:gpt@http://h/v1?x=1")
    (None, 'openai:gpt@http://h/v1?x=1')
    >>> parse_named("./run=2")
    (None, './run=2')
    """
    text = text.strip()
    m = _NAMED.match(text)
    if not m or Path(text).expanduser().exists():
        return None, text
    if not m.group(2).strip():
        raise HarnessError(f"'{text}': nothing after '='; expected NAME=MODEL_REF")
    return m.group(1), m.group(2).strip()


def default_name(ref: str) -> str:
    """The adapter folder's name for BASE+ADAPTER, a local checkpoint folder's name, else the reference.

    >>> default_name("smollm2-135m-instruct+/home/me/ft/lora-a")
    'lora-a'
    >>> default_name("./out/merged/")
    'merged'
    >>> default_name("smollm2-135m-instruct"), default_name("HuggingFaceTB/SmolLM2-135M")
    ('smollm2-135m-instruct', 'HuggingFaceTB/SmolLM2-135M')
    """
    if ref.startswith(tuple(k + ":" for k in ENDPOINT_KINDS)):
        return ref
    base, plus, adapter = ref.partition("+")
    if plus and adapter.strip("/"):
        return Path(adapter.rstrip("/")).name
    if base.startswith((".", "/", "~")) or (Path(base).expanduser().exists() and "/" in base):
        return Path(base.rstrip("/")).expanduser().name or base
    return ref


def step_name(ref: str) -> str | None:
    """'step-40' for a reference ending in a checkpoint-40 (or step_40) folder, else None.

    >>> step_name("smollm2-135m-instruct+ft/checkpoints/checkpoint-40"), step_name("out/lora")
    ('step-40', None)
    """
    m = _STEP.search(ref.rstrip("/"))
    return f"step-{int(m.group(1))}" if m else None


def named(text: str, *, default: str | None = None) -> NamedRef:
    """A command-line model argument (REF or NAME=REF) with its name; `default` replaces default_name(REF)."""
    name, ref = parse_named(text)
    if name:
        return NamedRef(name, ref, is_explicit=True)
    return NamedRef(default or default_name(ref), ref)


def unique_names(models: Iterable[NamedRef], what: str = "candidate") -> list[NamedRef]:
    """The models, checked for two sharing a name: one line naming both references and the way out."""
    out: list[NamedRef] = []
    seen: dict[str, NamedRef] = {}
    for m in models:
        if m.name in seen:
            raise HarnessError(f"two {what}s are named '{m.name}': {seen[m.name].ref} and {m.ref}; "
                               f"name them with --{what} NAME=REF")
        seen[m.name] = m
        out.append(m)
    return out
