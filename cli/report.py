"""`harness report`: open the Streamlit report, or export a comparison as a static file.

    harness report [--port 8501] [--address 127.0.0.1]        # streamlit run app.py on the run index
    harness report export RUN_ID --format markdown|html --out FILE

The report reads HARNESS_RUNS_DIR (settings.runs_dir) and never writes to it.
An export of a compare run also includes the largest per-prompt regressions
of the judge runs it names in `source_runs`, when they are in the same store.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from harness import atomic, store
from harness.errors import HarnessError
from harness.settings import Settings
from reports.export import export_run

HELP = "browse runs and comparisons in a Streamlit report, or export a comparison as Markdown/HTML"
APP = Path(__file__).resolve().parent.parent / "app.py"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    p.add_argument("--address", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--headless", action="store_true", help="do not open a browser")
    sub = p.add_subparsers(dest="report_command", metavar="ACTION")
    ex = sub.add_parser("export", help="write a compare (or judge) run as a static Markdown or HTML file")
    ex.add_argument("run_id")
    ex.add_argument("--format", choices=["markdown", "html"], default="markdown")
    ex.add_argument("--out", type=Path, required=True, help="file to write")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if getattr(args, "report_command", None) == "export":
        return export(settings, args.run_id, args.format, args.out)
    return launch(settings, port=args.port, address=args.address, is_headless=args.headless)


def export(settings: Settings, run_id: str, fmt: str, out: Path) -> int:
    """Write the export atomically; returns 0."""
    run_ = store.load_run(settings.runs_dir, run_id)
    judge_runs = []
    for source in dict.fromkeys((run_.manifest.get("source_runs") or {}).values()):
        try:
            src = store.load_run(settings.runs_dir, str(source))
        except HarnessError:
            continue  # a source run kept in another store: the export still has the comparison itself
        if src.kind == "judge":
            judge_runs.append(src)
    atomic.write_text(out, export_run(run_, fmt, judge_runs))
    print(f"wrote {out}")
    return 0


def launch(settings: Settings, *, port: int, address: str, is_headless: bool) -> int:
    """Run `streamlit run app.py` in the foreground until interrupted; returns its exit code (2 if it fails to start)."""
    if not APP.is_file():
        raise HarnessError(f"{APP} not found; `harness report` needs the repository checkout (app.py at its root)")
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", address, "--server.port", str(port),
           "--server.headless", "true" if is_headless else "false", "--browser.gatherUsageStats", "false"]
    env = {**os.environ, "HARNESS_RUNS_DIR": str(Path(settings.runs_dir).resolve())}
    print(f"report on http://{address}:{port} for {env['HARNESS_RUNS_DIR']} (Ctrl-C stops it)")
    try:
        return subprocess.call(cmd, env=env)
    except OSError as e:
        raise HarnessError(f"could not start streamlit: {e}") from e
