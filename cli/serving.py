"""How models are served, as flags shared by eval, compare, judge and serve.

vLLM: `--engine-arg KEY=VALUE` (repeatable), `--serve-config FILE` (a YAML
`serving:` block) and `--platform` (override detection). hf: `--device`.
Endpoints attached as `vllm:MODEL@URL`: `--tokenizer`. A suite's own `serving:`
block applies under these flags (`with_suite_serving`).
"""
from __future__ import annotations

import argparse
from typing import Any

from harness.backends import engine
from harness.backends.base import DEFAULT_BACKEND, LOCAL_BACKENDS
from harness.backends.platform import KNOWN


def add_backend_argument(p: argparse.ArgumentParser, what: str) -> None:
    """--backend, with the one default every command shares."""
    p.add_argument("--backend", choices=LOCAL_BACKENDS, default=DEFAULT_BACKEND,
                   help=f"how {what} run: hf, transformers in-process; vllm, one engine for a base and all its "
                        f"adapters (default %(default)s)")


def add_arguments(p: argparse.ArgumentParser, *, hf: bool = True) -> None:
    g = p.add_argument_group("serving")
    g.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE", dest="engine_args",
                   help="a vLLM engine argument, e.g. tensor_parallel_size=2 (repeatable; checked against "
                        "vLLM's own parser; overrides --serve-config and the suite's serving: block)")
    g.add_argument("--serve-config", metavar="FILE",
                   help="YAML file with a serving: block of vLLM engine arguments (docs/scaling.md)")
    g.add_argument("--platform", choices=KNOWN,
                   help="the platform the vLLM command is built for (default: detected)")
    g.add_argument("--tokenizer", metavar="PATH_OR_ID",
                   help="tokenizer of a vllm:MODEL@URL server (default: the model's path the server reports)")
    if hf:
        g.add_argument("--device", help="hf backend device, e.g. cpu, cuda, cuda:1 (default: cuda if "
                                        "available; several GPUs: device_map auto)")


def engine_args(args: argparse.Namespace) -> engine.EngineArgs:
    """The user's engine arguments from --serve-config and --engine-arg (the latter win), validated."""
    user = engine.load_serve_config(args.serve_config) if args.serve_config else engine.EngineArgs()
    user = user.merged(engine.from_pairs(args.engine_args))
    engine.validate(user)
    return user


def backend_options(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    """Options for harness.backends.factory.open_models: the hf model's settings, or the engine's, and the
    tokenizer of vllm:MODEL@URL references (which open_models hands to those alone)."""
    tokenizer = {"tokenizer": args.tokenizer} if getattr(args, "tokenizer", None) else {}
    return {**_options(args, backend), **tokenizer}


def _options(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    if backend == "hf":
        opts: dict[str, Any] = {"device": getattr(args, "device", None)}
        for name in ("dtype", "batch_size"):
            if getattr(args, name, None) is not None:
                opts[name] = getattr(args, name)
        if args.engine_args or args.serve_config:
            raise engine.EngineArgError("--engine-arg and --serve-config configure vLLM; add --backend vllm")
        return opts
    return {"engine_args": engine_args(args), "platform": args.platform}


def with_suite_serving(opts: dict[str, Any], suite: Any, backend: str) -> dict[str, Any]:
    """`opts` with the suite's serving: block under the user's engine arguments (vLLM only)."""
    if backend != "vllm" or not suite.serving:
        return opts
    source = f"{suite.path or suite.name}: serving"
    merged = engine.from_mapping(suite.serving, source).merged(opts.get("engine_args") or engine.EngineArgs())
    engine.validate(merged)
    return {**opts, "engine_args": merged}
