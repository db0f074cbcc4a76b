"""`harness report`: open the Streamlit report, or export a comparison as a static file.

    harness report [--port 8501] [--address 127.0.0.1]        # streamlit run app.py on the run index, headless
    harness report export RUN_ID --format markdown|html --out FILE

The report reads HARNESS_RUNS_DIR (settings.runs_dir) and never writes to it.
An export of a compare run also includes the largest per-prompt regressions
of the judge runs it names in `source_runs`, when they are in the same store.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import webbrowser
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
    p.add_argument("--headless", action="store_true",
                   help="do not open a browser (none is opened without a display either); the URL is printed")
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


def streamlit_argv(*, port: int, address: str) -> list[str]:
    """`streamlit run app.py`, never prompting: headless (no onboarding e-mail prompt, no browser of its own)
    and with usage statistics off; `launch` opens the browser itself when there is a display."""
    return [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", address, "--server.port", str(port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false"]


def has_display() -> bool:
    """Whether a browser can be shown here: macOS and Windows always, elsewhere an X11 or Wayland display."""
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def launch(settings: Settings, *, port: int, address: str, is_headless: bool) -> int:
    """Serve the report until interrupted; returns streamlit's exit code (0 when stopped by a signal).

    Works without a terminal (nohup, a script, CI): stdin is not read, the child gets /dev/null. On
    SIGTERM or SIGINT the streamlit child is stopped and waited for, so its port is free when this exits.
    """
    if not APP.is_file():
        raise HarnessError(f"{APP} not found; `harness report` needs the repository checkout (app.py at its root)")
    env = {**os.environ, "HARNESS_RUNS_DIR": str(Path(settings.runs_dir).resolve())}
    url = f"http://{'localhost' if address in ('0.0.0.0', '::') else address}:{port}"
    try:
        child = subprocess.Popen(streamlit_argv(port=port, address=address), env=env, stdin=subprocess.DEVNULL)
    except OSError as e:
        raise HarnessError(f"could not start streamlit: {e}") from e
    print(f"report on {url} for {env['HARNESS_RUNS_DIR']} (Ctrl-C stops it)", flush=True)
    stopping: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        stopping.append(signum)
        if child.poll() is None:
            child.terminate()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if not is_headless and has_display():
            webbrowser.open(url)
        while True:
            try:
                code = child.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                continue
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if stopping else code
