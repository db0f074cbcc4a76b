"""`harness serve REF [REF+ADAPTER ...]`: start the vLLM engine eval would start, and keep it up.

The engine serves the base and every adapter given (one base per engine), on
the platform detected (or `--platform`), with the user's engine arguments. It
prints the OpenAI base URL and the served model names, then waits until
Ctrl-C. `--dry-run` prints the exact command and environment as JSON and
starts nothing. Other tools (or `harness eval --model vllm:NAME@URL`) can then
use the server.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from cli import serving as cli_serving
from harness.backends.vllm import VLLMServer
from harness.errors import BackendError, HarnessError
from harness.models.resolve import resolve
from harness.settings import Settings

HELP = "start a vLLM engine for a base and its adapters, print its URL and model names, wait until Ctrl-C"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", metavar="REF",
                   help="the base and/or BASE+ADAPTER references, all over one base")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s; 0.0.0.0 for "
                                                       "other machines)")
    p.add_argument("--port", type=int, help="port to listen on (default: a free one)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the command, environment and platform as JSON; start nothing")
    cli_serving.add_arguments(p, hf=False)


def plan(settings: Settings, args: argparse.Namespace):  # -> VLLMServer (lazy, not started)
    """The engine for `args.models`, built exactly as eval builds it, not started."""
    resolved = [resolve(settings, r) for r in args.models]
    bases = {m.base_hash: m for m in resolved}
    if len(bases) > 1:
        raise HarnessError(f"{', '.join(m.ref.raw for m in resolved)}: one engine serves one base; "
                           "start one 'harness serve' per base")
    endpoints = [m.ref.raw for m in resolved if m.ref.is_endpoint]
    if endpoints:
        raise HarnessError(f"'{endpoints[0]}' is an endpoint already; serve local weights")
    base = resolved[0].ref.base_ref().raw
    return VLLMServer.start(settings, base, [m for m in resolved if m.adapter_path is not None], lazy=True,
                            engine_args=cli_serving.engine_args(args), platform=args.platform, host=args.host,
                            port=args.port)


def served_models(server) -> dict[str, str]:  # noqa: ANN001 (a VLLMServer)
    """Served model name -> the reference it stands for."""
    return {"base": server.base.ref.base_ref().raw, **{name: a.ref.raw for name, a in server.adapters.items()}}


def run(args: argparse.Namespace, settings: Settings) -> int:
    server = plan(settings, args)
    if args.dry_run:
        port = ["--port", str(args.port)] if args.port else []
        print(json.dumps({"platform": server.platform, "argv": [*server.argv, *port],
                          "env": {"VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "INFO"), **server.env},
                          "port": args.port, "models": served_models(server),
                          "engine_args": server.engine_args.values}, indent=2))
        server.close()
        return 0
    try:
        server.ensure_started()
        print(f"serving at {server.url} (log {server.log_path}); press Ctrl-C to stop")
        for name, ref in served_models(server).items():
            print(f"  {name:20s} {ref}")
        sys.stdout.flush()  # read by scripts while this waits
        while server.is_alive():
            time.sleep(1)
        raise BackendError(f"vLLM server exited (code {server.proc and server.proc.poll()}); log {server.log_path}:\n"
                           f"{server.log_tail()}")
    except KeyboardInterrupt:
        print("stopped")
        return 0
    finally:
        server.close()
