"""The vLLM engine's command line: the harness's settings per platform, plus the user's engine arguments.

User engine arguments come from three places, later ones winning:
  * a suite's `serving:` block (YAML: vLLM argument name -> value);
  * `--serve-config FILE`, a YAML file with the same `serving:` block;
  * repeatable `--engine-arg KEY=VALUE` on eval, compare, judge and serve.
Names take vLLM's spelling with underscores or dashes (`tensor_parallel_size`);
`true` makes a flag, `false` its `--no-` form. They are checked against vLLM's
own `vllm serve` argument parser, so a typo is one line naming its source,
and vLLM stays the authority on what it accepts.

Platform settings (the choice, and why):
  * cpu: an explicit KV-cache size (`--kv-cache-memory-bytes`, 1 GiB unless the
    user sets one): vLLM-CPU checks --gpu-memory-utilization against the free
    memory of one NUMA node and refuses to start on small machines; and thread
    binding for small machines (`cpu_thread_binding`).
  * cuda and other GPUs: `--gpu-memory-utilization` (0.9 unless the user sets it
    or a KV-cache size); nothing CPU-specific.
Which scorer reads log-likelihoods on a LoRA engine also depends on the
platform: see harness.backends.vllm.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from harness.errors import HarnessError
from harness.textfile import read_utf8

DEFAULT_KV_CACHE_GIB = 1.0
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9
# Arguments the harness sets itself: the served names and the address are how it finds the models.
HARNESS_OWNED = ("model", "served_model_name", "host", "port", "lora_modules", "enable_lora")


class EngineArgError(HarnessError):
    """An engine argument vLLM would not accept, or one the harness sets itself."""


@dataclass(frozen=True)
class EngineArgs:
    """User engine arguments (normalized names -> values) and where each came from."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def merged(self, other: "EngineArgs") -> "EngineArgs":
        """These arguments overridden by `other`'s."""
        return EngineArgs({**self.values, **other.values}, {**self.sources, **other.sources})

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    def argv(self, without: Sequence[str] = ()) -> list[str]:
        """The arguments as vLLM command-line flags, less those named in `without`."""
        return [a for k, v in self.values.items() if k not in without for a in _flag(k, v)]


def normalize(name: str) -> str:
    return name.strip().lstrip("-").replace("-", "_")


def _flag(name: str, value: Any) -> list[str]:
    opt = "--" + name.replace("_", "-")
    if value is True:
        return [opt]
    if value is False:
        return ["--no-" + name.replace("_", "-")]
    if isinstance(value, (dict, list)):
        return [opt, json.dumps(value)]
    return [opt, str(value)]


def from_mapping(mapping: Any, source: str) -> EngineArgs:
    """Engine arguments from a `serving:` block; `source` names it in errors ('suites/x.yaml: serving')."""
    if mapping is None:
        return EngineArgs()
    if not isinstance(mapping, dict):
        raise EngineArgError(f"{source}: expected a mapping of vLLM engine arguments, got {type(mapping).__name__}")
    values, sources = {}, {}
    for key, value in mapping.items():
        name = normalize(str(key))
        values[name] = value
        sources[name] = f"{source}.{key}"
    return EngineArgs(values, sources)


def from_pairs(pairs: Sequence[str]) -> EngineArgs:
    """Engine arguments from repeated `--engine-arg KEY=VALUE` (a bare KEY means true; VALUE is read as YAML)."""
    values, sources = {}, {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not key.strip():
            raise EngineArgError(f"--engine-arg '{pair}': expected KEY=VALUE (a vLLM engine argument)")
        try:
            value = yaml.safe_load(raw) if sep else True
        except yaml.YAMLError:
            value = raw
        name = normalize(key)
        values[name] = raw if value is None else value
        sources[name] = f"--engine-arg {pair}"
    return EngineArgs(values, sources)


def load_serve_config(path: str | Path) -> EngineArgs:
    """The `serving:` block of a YAML file (--serve-config)."""
    p = Path(path)
    if not p.is_file():
        raise EngineArgError(f"--serve-config {p}: not found")
    try:
        doc = yaml.safe_load(read_utf8(p, what="serve config")) or {}
    except yaml.YAMLError as e:
        raise EngineArgError(f"{p}: not valid YAML: {' '.join(str(e).split())}") from e
    if not isinstance(doc, dict) or set(doc) - {"serving"}:
        raise EngineArgError(f"{p}: expected one top-level key, serving: (vLLM engine arguments)")
    return from_mapping(doc.get("serving"), f"{p}: serving")


@lru_cache(maxsize=1)
def _vllm_parser() -> Any:
    """vLLM's `vllm serve` parser, raising instead of exiting (built once: it imports vLLM)."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    class Parser(FlexibleArgumentParser):
        def error(self, message: str) -> Any:  # argparse's default prints usage and exits
            raise EngineArgError(message)

    return make_arg_parser(Parser(prog="vllm serve"))


def validate(args: EngineArgs) -> None:
    """Raise EngineArgError (one line, naming the argument's source) unless vLLM accepts every argument."""
    for name, source in args.sources.items():
        if name in HARNESS_OWNED:
            raise EngineArgError(f"{source}: '{name}' is set by the harness (it names the served models "
                                 "and their address); leave it out")
    if not args.values:
        return
    parser = _vllm_parser()
    for name, value in args.values.items():
        try:
            parser.parse_args(["--model", "x", *_flag(name, value)])
        except EngineArgError as e:
            raise EngineArgError(f"{args.sources[name]}: vLLM rejects it: {' '.join(str(e).split())}") from None


def cpu_thread_binding(environ: Mapping[str, str], cpus: Sequence[int] | None = None) -> dict[str, str]:
    """vLLM-CPU thread binding for small machines, unless the user set VLLM_CPU_OMP_THREADS_BIND.

    vLLM's automatic binding reserves one core for its scheduler and API
    process and runs the model on the rest: on a 2-core machine, on one core.
    The scheduler mostly waits, so on machines with at most 4 usable cores the
    model gets all of them (measured on 2 cores, 64 chats x 128 new tokens:
    157 tok/s with the automatic binding, 266 tok/s bound to both cores; see
    bench/generation.py). Larger machines keep vLLM's choice. Not for GPUs:
    vLLM ignores these variables there.
    """
    if "VLLM_CPU_OMP_THREADS_BIND" in environ:
        return {}
    usable = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
    if len(usable) > 4:
        return {}
    return {"VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, usable)), "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}


def platform_args(platform: str, user: EngineArgs) -> list[str]:
    """The memory settings the harness adds for `platform`, unless the user gave their own."""
    if platform == "cpu":
        if "kv_cache_memory_bytes" in user.values:
            return []
        return ["--kv-cache-memory-bytes", str(int(DEFAULT_KV_CACHE_GIB * 2**30))]
    if "gpu_memory_utilization" in user.values or "kv_cache_memory_bytes" in user.values:
        return []
    return ["--gpu-memory-utilization", str(DEFAULT_GPU_MEMORY_UTILIZATION)]


def platform_env(platform: str, environ: Mapping[str, str]) -> dict[str, str]:
    """Environment variables the harness adds for `platform` (CPU thread binding only)."""
    return cpu_thread_binding(environ) if platform == "cpu" else {}
