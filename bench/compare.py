"""What `harness compare` costs: one adapter, then four more on the same baseline, then an unchanged rerun.

    .venv/bin/python bench/compare.py [--suite forgetting-quick] [--backend hf] [--limit N]

Each step is a fresh `harness compare` process, as a user or CI runs it, on a
fresh item cache (HARNESS_CACHE in a temporary folder; prepared models and
lm-eval task files are reused):

  1. baseline vs adapter a1                 cold: scores the baseline and a1
  2. baseline vs adapters a2..a5            the baseline must come from the cache
  3. step 2 again, unchanged                everything from the cache

Printed: candidate-only cost of one adapter (step 1 minus the baseline's
scoring), step 2 against four times that (target: at most 4x, i.e. ratio <= 1),
the baseline's cache misses in step 2 (target 0: never rescored), and step 3's
wall time against step 2's (target: at most 10%).

The adapters are seeded random LoRAs of the same shape (rank 8 on q_proj and
v_proj, small weights): scoring cost does not depend on what they learned.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import header, settings

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness import store  # noqa: E402
from harness.models.resolve import resolve  # noqa: E402
from tests.helpers import make_lora  # noqa: E402

BASE = "smollm2-135m-instruct"


def compare(env: dict[str, str], candidates: list[Path], args: argparse.Namespace) -> tuple[float, dict]:
    """Run `harness compare` in a fresh process; (wall seconds, {source model ref: its eval run's cache stats})."""
    cmd = [sys.executable, "-m", "cli.main", "compare", "--baseline", BASE, "--suite", args.suite,
           "--backend", args.backend, "--format", "json", *(["--limit", str(args.limit)] if args.limit else [])]
    for c in candidates:
        cmd += ["--candidate", f"{BASE}+{c}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise SystemExit(f"harness compare failed (exit {proc.returncode})")
    run_id = json.loads(proc.stdout)["run_id"]
    runs_dir = Path(env["HARNESS_RUNS_DIR"])
    run = store.load_run(runs_dir, run_id)
    sources = {}
    for key, source_id in run.manifest["source_runs"].items():
        if key.startswith("eval:"):
            src = store.load_run(runs_dir, source_id)
            sources[key.removeprefix("eval:")] = {**src.manifest["cache"], "wall_s": src.manifest["wall_s"]}
    return wall, sources


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default="forgetting-quick")
    ap.add_argument("--backend", choices=["hf", "vllm"], default="hf")
    ap.add_argument("--limit", type=int, help="documents per subject, for a quick look at the harness itself")
    args = ap.parse_args()
    s = settings()
    header(f"compare ({args.suite}, backend {args.backend}{f', limit {args.limit}' if args.limit else ''})")
    base_dir = Path(resolve(s, BASE).base_path)
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        tmp_path = Path(tmp)
        adapters = [make_lora(base_dir, tmp_path / f"a{i}", seed=i, scale=2e-3) for i in range(1, 6)]
        env = {**os.environ, "HARNESS_HOME": str(s.home), "HARNESS_DATA_DIR": str(s.data_dir),
               "HARNESS_CACHE": str(tmp_path / "item-cache.sqlite"), "HARNESS_RUNS_DIR": str(tmp_path / "runs")}

        wall1, src1 = compare(env, adapters[:1], args)
        base_cost = src1[BASE]["wall_s"]
        one = wall1 - base_cost
        print(f"1 adapter (cold):        {wall1:7.1f} s; baseline scoring {base_cost:.1f} s "
              f"({src1[BASE]['misses']} items), candidate-only cost {one:.1f} s", flush=True)

        wall4, src4 = compare(env, adapters[1:], args)
        base_misses = src4[BASE]["misses"]
        print(f"4 more adapters:         {wall4:7.1f} s; baseline cache misses {base_misses} "
              f"(hits {src4[BASE]['hits']}), per adapter {wall4 / 4:.1f} s", flush=True)

        wall_re, src_re = compare(env, adapters[1:], args)
        misses_re = sum(v["misses"] for v in src_re.values())
        print(f"unchanged rerun:         {wall_re:7.1f} s; cache misses {misses_re}", flush=True)

    print(f"cost ratio 4 adapters / 1 adapter (candidate-only): {wall4 / one:.2f}x (target <= 4x)"
          f"; baseline rescored: {'no' if base_misses == 0 else f'YES ({base_misses} items)'}")
    print(f"unchanged rerun / its first run: {wall_re / wall4:.1%} (target <= 10%)")


if __name__ == "__main__":
    main()
