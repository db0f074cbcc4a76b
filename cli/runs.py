"""`harness runs list|show|reindex`."""
from __future__ import annotations

import argparse
import json

from harness import store
from harness.errors import HarnessError
from harness.settings import Settings
from reports.text import run_summary_text

HELP = "list and inspect stored runs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="runs_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="runs in the index, newest first")
    ls.add_argument("--kind")
    ls.add_argument("--model", help="substring of a model reference")
    ls.add_argument("--suite")
    ls.add_argument("--status", choices=["complete", "partial", "failed"])
    show = sub.add_parser("show", help="a run's summary: models, suite, status, results, cache, canary")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true", help="the raw record: manifest and aggregates as JSON")
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
    if args.json:
        print(json.dumps({"manifest": run_.manifest, "aggregates": run_.aggregates, "n_items": len(run_.items)},
                         indent=2, default=str))
        return 0
    print(run_summary_text(run_, _sources(settings, run_)))
    return 0


def _sources(settings: Settings, run_: store.Run) -> list[store.Run]:
    """The runs a compare run names in `source_runs` that are still in this store (for their cache counts)."""
    out = []
    for run_id in dict.fromkeys((run_.manifest.get("source_runs") or {}).values()):
        try:
            out.append(store.load_run(settings.runs_dir, str(run_id)))
        except HarnessError:
            continue  # removed or kept in another store: the summary says "not recorded" for it
    return out
