"""`harness runs list|show|reindex`."""
from __future__ import annotations

import argparse
import json

from harness import store
from harness.settings import Settings

HELP = "list and inspect stored runs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="runs_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="runs in the index, newest first")
    ls.add_argument("--kind")
    ls.add_argument("--model", help="substring of a model reference")
    ls.add_argument("--suite")
    ls.add_argument("--status", choices=["complete", "partial", "failed"])
    show = sub.add_parser("show", help="a run's manifest and aggregates")
    show.add_argument("run_id")
    sub.add_parser("reindex", help="rebuild runs/index.sqlite from the run folders")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.runs_command == "list":
        rows = store.list_runs(settings.runs_dir, kind=args.kind, model=args.model, suite=args.suite, status=args.status)
        if not rows:
            filters = {k: v for k, v in (("kind", args.kind), ("model", args.model), ("suite", args.suite),
                                         ("status", args.status)) if v}
            everything = store.list_runs(settings.runs_dir) if filters else []
            if everything:
                shown = ", ".join(f"--{k} {v}" for k, v in filters.items())
                print(f"no runs match {shown} ({len(everything)} runs under {settings.runs_dir})")
            else:
                print(f"no runs under {settings.runs_dir}")
        for r in rows:
            print(f"{r['run_id']:40s} {r['status']:9s} {r['suite'] or '-':20s} {', '.join(r['models'])}")
        return 0
    if args.runs_command == "reindex":
        print(f"indexed {store.reindex(settings.runs_dir)} runs")
        return 0
    run_ = store.load_run(settings.runs_dir, args.run_id)
    print(json.dumps({"manifest": run_.manifest, "aggregates": run_.aggregates, "n_items": len(run_.items)},
                     indent=2, default=str))
    return 0
