"""`harness models list|prepare|show`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness.models import resolve as models
from harness.models.names import named
from harness.models.ref import ALIASES
from harness.settings import Settings

HELP = "list, prepare and inspect model references"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    sub.add_parser("list", help="packaged aliases and whether each is prepared")
    prep = sub.add_parser("prepare", help="convert a packaged alias into a cached safetensors checkpoint (once)")
    prep.add_argument("alias")
    show = sub.add_parser("show", help="resolve a model reference: paths, content hash, size, adapter check")
    show.add_argument("ref", help="ALIAS, ./DIR, ORG/NAME, BASE+ADAPTER_DIR or openai:MODEL@URL (a NAME= prefix "
                                  "is accepted and shown)")
    show.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.models_command == "list":
        for alias, spec in sorted(ALIASES.items()):
            man = models.alias_manifest(settings, alias)
            state = f"prepared {man['content_hash'][:19]} at {models.alias_dir(settings, alias)}" if man else "not prepared"
            print(f"{alias:28s} {spec['hub_id']:40s} {state}")
        return 0
    if args.models_command == "prepare":
        path = models.prepare_alias(settings, args.alias)
        man = models.alias_manifest(settings, args.alias) or {}
        print(f"{args.alias}: {path}\n  hash {man.get('content_hash')}\n  size {_mib(man.get('size_bytes', 0))}")
        return 0
    given = named(args.ref)
    resolved = models.resolve(settings, given.ref, prepare=False)
    info = {"name": given.name, **resolved.describe()}
    if not resolved.ref.is_endpoint:
        base = Path(resolved.base_path)
        info["base_size_bytes"] = sum(p.stat().st_size for p in base.iterdir() if p.is_file())
        if resolved.adapter_path:
            info["adapter_size_bytes"] = adapter_size(resolved.adapter_path)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        kind = f"adapter over a {resolved.ref.kind} base" if resolved.adapter_path else resolved.ref.kind
        print(f"{resolved.ref.raw}\n  name    {given.name}\n  kind    {kind}\n  base    {resolved.base_path}"
              f"\n  hash    {resolved.base_hash}")
        if "base_size_bytes" in info:
            print(f"  size    {_mib(info['base_size_bytes'])}")
        if resolved.adapter_path:
            print(f"  adapter {resolved.adapter_path}\n  adapter hash {resolved.adapter_hash}"
                  f"\n  adapter size {_mib(info['adapter_size_bytes'])}\n  adapter fits its base: yes")
    return 0


def adapter_size(adapter: Path) -> int:
    """Bytes of the adapter itself: its weights and config (adapter_*), not the tokenizer files saved beside it."""
    return sum(p.stat().st_size for p in adapter.iterdir() if p.is_file() and p.name.startswith("adapter_"))


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB ({n} bytes)"
