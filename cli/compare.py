"""`harness compare`: paired statistics and the non-inferiority gate. Exit 0 pass, 1 regression, 2 error."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cli import serving as cli_serving
from cli.compare_run import checkpoint_candidates, run_compare, write_compare
from harness import store
from harness.compare import CompareConfig
from harness.errors import HarnessError, Interrupted
from harness.models.names import named, unique_names
from harness.settings import Settings
from reports.export import compare_markdown
from reports.text import compare_text

HELP = "compare candidates against a baseline on a suite; exit 1 when a candidate regresses beyond a margin"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baseline", required=True, metavar="[NAME=]REF",
                   help="model reference scored once and shared by all candidates; NAME= names it in tables")
    p.add_argument("--candidate", action="append", default=[], dest="candidates", metavar="[NAME=]REF",
                   help="model reference (repeatable), shown as NAME (default: the adapter or checkpoint folder's "
                        "name, else the reference); checkpoints named checkpoint-N form a trend")
    p.add_argument("--checkpoints", action="append", default=[], metavar="FINETUNE_DIR",
                   help="add every checkpoint a finetune kept (train.keep_checkpoints) as a candidate named step-N, "
                        "in step order: the forgetting curve")
    p.add_argument("--suite", required=True, help="suite name (suites/*.yaml) or path")
    p.add_argument("--include-path", action="append", default=[], metavar="DIR",
                   help="a folder of your own lm-eval task YAMLs (repeatable; beside the suite's include_path)")
    p.add_argument("--golden", help="golden set (JSONL or a named set) for judge win rates")
    p.add_argument("--judge", help="judge model reference (default: the local SmolLM2)")
    cli_serving.add_backend_argument(p, "local models")
    p.add_argument("--limit", type=int, help="documents per subject, and golden prompts with --golden "
                                             "(quick looks; weakens the statistics)")
    p.add_argument("--confidence", type=float, default=0.95, help="interval level (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--no-canary", action="store_true",
                   help="skip the adapter canary: adapter candidates are unverified and the verdict is ERROR (exit 2)")
    p.add_argument("--format", choices=["text", "markdown", "json"], default="text",
                   help="markdown and json are fit for a CI comment")
    cli_serving.add_arguments(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.limit is not None and args.limit < 1:
        raise HarnessError(f"--limit {args.limit}: must be at least 1")
    store.check_writable(settings)  # before any scoring: a read-only or full disk must not waste a run
    baseline = named(args.baseline)
    # Checkpoints are named by their step; from two finetune folders, by folder and step.
    several = len(args.checkpoints) > 1
    candidates = unique_names([*(named(c) for c in args.candidates),
                               *(c for d in args.checkpoints
                                 for c in checkpoint_candidates(d, f"{Path(d).resolve().name}/" if several else ""))])
    cfg = CompareConfig(baseline=baseline.ref, baseline_name=baseline.name, candidates=tuple(c.ref for c in candidates),
                        names=tuple(c.name for c in candidates), suite=args.suite,
                        include_paths=tuple(args.include_path),
                        golden=args.golden, judge=args.judge, backend=args.backend, limit=args.limit,
                        confidence=args.confidence, seed=args.seed, check_canary=not args.no_canary,
                        backend_opts=cli_serving.backend_options(args, args.backend))
    try:
        compare, sources = run_compare(settings, cfg)
    except Interrupted as e:
        e.note = store.write_partial_runs(settings.runs_dir, e.runs)
        raise
    run_id = write_compare(settings, compare, sources)
    if args.format == "json":
        print(json.dumps({"run_id": run_id, **compare.aggregates}, indent=2, default=str))
    elif args.format == "markdown":
        print(compare_markdown(compare))
    else:
        print(compare_text(compare))
        print(f"\nrun {run_id} under {settings.runs_dir}; browse with: harness report")
    if compare.aggregates["unverified"]:
        # On stderr too: --format markdown|json go to a file in CI, and the job log must say why.
        print(f"harness: error: the gate passes no unverified adapter: {'; '.join(compare.aggregates['unverified'])}",
              file=sys.stderr)
    return {"regression": 1, "error": 2}.get(compare.aggregates["summary"]["verdict"], 0)
