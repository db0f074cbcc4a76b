"""`harness runs list|show|reindex|export|log`."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from harness import store
from harness.errors import HarnessError
from harness.settings import Settings
from reports import lmeval_export, trackers
from reports.text import run_summary_text

HELP = "list, inspect, export (lm-eval files) and log (MLflow, TensorBoard) stored runs"


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
    export = sub.add_parser("export", help="a run's lm-eval tasks as lm-eval's results and samples files")
    export.add_argument("run_id")
    export.add_argument("--format", choices=lmeval_export.FORMATS, required=True)
    export.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="writes DIR/<model>/results_<time>.json and samples_<task>_<time>.jsonl")
    log = sub.add_parser("log", help="log a run's aggregates (metrics) and manifest (params) to a tracker")
    log.add_argument("run_id")
    log.add_argument("--to", choices=trackers.TRACKERS, required=True)
    where = log.add_mutually_exclusive_group()
    where.add_argument("--dir", type=Path, help="tensorboard: the log folder (default ./tensorboard); "
                                                "mlflow: a local file store (default MLFLOW_TRACKING_URI, else ./mlruns)")
    where.add_argument("--tracking-uri", help="mlflow only: any tracking URI (http://..., file:...)")
    log.add_argument("--experiment", default=trackers.EXPERIMENT, help="mlflow experiment (default %(default)s)")


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
    if args.runs_command == "export":
        runs = lmeval_export.eval_runs_to_export(run_, lambda run_id: store.load_run(settings.runs_dir, run_id))
        exports = [lmeval_export.lmeval_export(r) for r in runs]  # all checked before anything is written
        for e in exports:
            paths = lmeval_export.write_export(e, args.out)
            print(f"{e.model_folder}: {len(paths) - 1} task(s) -> {paths[0]}")
        return 0
    if args.runs_command == "log":
        return _log(args, run_)
    if args.json:
        print(json.dumps({"manifest": run_.manifest, "aggregates": run_.aggregates, "n_items": len(run_.items)},
                         indent=2, default=str))
        return 0
    print(run_summary_text(run_, _sources(settings, run_)))
    return 0


def _log(args: argparse.Namespace, run_: store.Run) -> int:
    record = trackers.tracker_record(run_)
    if args.to == "tensorboard":
        if args.tracking_uri:
            raise HarnessError("harness runs log --to tensorboard: --tracking-uri is for mlflow; use --dir")
        folder, is_new = trackers.log_tensorboard(record, args.dir or Path("tensorboard"))
        what = f"{len(record.metrics)} metrics, {len(record.params)} params" if is_new else "already logged"
        print(f"{run_.run_id}: {what} -> {folder}")
        return 0
    uri = trackers.mlflow_uri(args.dir, args.tracking_uri, dict(os.environ))
    mlflow_id, is_new = trackers.log_mlflow(record, uri, args.experiment)
    what = f"{len(record.metrics)} metrics, {len(record.params)} params" if is_new else "already logged"
    print(f"{run_.run_id}: {what} -> mlflow run {mlflow_id} in experiment '{args.experiment}' at {uri}")
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
