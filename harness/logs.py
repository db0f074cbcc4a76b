"""Where output goes: steps, progress bars and results on the terminal; library chatter in a log file.

A command's terminal is for the person running it: its steps, one progress
bar per task and its result. lm-eval, httpx, datasets, transformers, vLLM,
urllib3, filelock, accelerate, PEFT, TRL and Python warnings (torch's) log
hundreds of INFO lines and bars per run; `setup` sends every log record to
a per-invocation file, HARNESS_HOME/logs/<command>-<time>-<pid>.log, and
lets only the harness's own warnings (loggers harness, judges, finetune,
reports, cli: "scored on hf, not vllm", canary refusals, leakage) through
to stderr. `-v` shows every INFO record on the terminal as well, `--debug`
every DEBUG record. `run_files()` is the log so far, for a run folder's
extra files; `footer()` is the one line naming the log, printed only when
something was logged at WARNING or above.

Libraries that install handlers of their own (transformers, datasets) or
draw bars a user need not see (transformers' "Loading weights", datasets'
"Generating split") are tamed by `quiet_libraries`, which imports them:
call it where a command is about to load models anyway.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

OWN = ("harness", "judges", "finetune", "reports", "cli", "__main__")
LOG_NAME = "harness.log"  # the log's name inside a run folder
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TERMINAL_FORMAT = "%(levelname)s %(name)s: %(message)s"


def is_own(name: str) -> bool:
    """Whether a logger belongs to the harness (its records may reach the terminal by default)."""
    return any(name == p or name.startswith(p + ".") for p in OWN)


class _TerminalFilter(logging.Filter):
    """Pass the harness's own records at `own_level`, everyone else's at `other_level`."""

    def __init__(self, own_level: int, other_level: int):
        super().__init__()
        self.own_level, self.other_level = own_level, other_level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= (self.own_level if is_own(record.name) else self.other_level)


class _Counter(logging.Handler):
    """Counts records at WARNING or above, so the log's path is printed only when worth opening."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


@dataclass
class LogSession:
    path: Path
    handlers: list[logging.Handler] = field(default_factory=list)
    counter: _Counter = field(default_factory=_Counter)

    def text(self) -> str:
        for h in self.handlers:
            h.flush()
        try:
            return self.path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def footer(self) -> str | None:
        n = self.counter.count
        what = "1 warning or error" if n == 1 else f"{n} warnings or errors"
        return f"log: {self.path} ({what})" if n else None

    def close(self) -> None:
        root = logging.getLogger()
        for h in [*self.handlers, self.counter]:
            root.removeHandler(h)
            h.close()


_session: LogSession | None = None


def setup(home: Path, command: str, *, verbose: bool = False, debug: bool = False) -> LogSession:
    """Route logging for one invocation (replacing an earlier session's handlers); returns the session.

    The file gets INFO and up (DEBUG with --debug) from every logger; the
    terminal (stderr) gets the harness's own WARNING and up, or everything at
    INFO (-v) or DEBUG (--debug). Python warnings become log records.
    """
    global _session
    if _session is not None:
        _session.close()
    name = f"{command.replace(' ', '-')}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        (home / "logs").mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(home / "logs" / name, encoding="utf-8")
    except OSError:
        # An unwritable HARNESS_HOME is the command's to report (store.check_writable names it);
        # the log goes to the temporary folder meanwhile.
        file_handler = logging.FileHandler(Path(tempfile.gettempdir()) / f"harness-{name}", encoding="utf-8")
    path = Path(file_handler.baseFilename)
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    file_handler.setLevel(logging.DEBUG if debug else logging.INFO)
    file_handler.setFormatter(logging.Formatter(FORMAT))
    terminal = logging.StreamHandler(sys.stderr)
    terminal.setFormatter(logging.Formatter(TERMINAL_FORMAT))
    if debug:
        terminal.addFilter(_TerminalFilter(logging.DEBUG, logging.DEBUG))
    elif verbose:
        terminal.addFilter(_TerminalFilter(logging.INFO, logging.INFO))
    else:
        terminal.addFilter(_TerminalFilter(logging.WARNING, logging.CRITICAL + 1))
    session = LogSession(path=path, handlers=[file_handler, terminal])
    for h in (file_handler, terminal, session.counter):
        root.addHandler(h)
    logging.captureWarnings(True)
    _session = session
    quiet_libraries(import_them=False)
    return session


def current() -> LogSession | None:
    return _session


def run_files() -> dict[str, str]:
    """{LOG_NAME: the log so far} for a run folder's extra files; empty outside a session."""
    text = _session.text() if _session is not None else ""
    return {LOG_NAME: text} if text else {}


def footer() -> str | None:
    """'log: PATH (N warnings or errors)' when something was logged at WARNING or above, else None."""
    return _session.footer() if _session is not None else None


def quiet_libraries(*, import_them: bool = True) -> None:
    """Send transformers' and datasets' records through the root logger (so into the file), and switch
    off their own progress bars. With import_them false only libraries already imported are tamed
    (nothing slow is imported); call it again with import_them true before loading models."""
    if _session is None:
        return
    for name in ("transformers", "datasets"):
        if not import_them and name not in sys.modules:
            continue
        if name not in sys.modules and importlib.util.find_spec(name) is None:
            continue
        if name == "transformers":
            import transformers.utils.logging as tlog

            tlog.disable_default_handler()
            tlog.enable_propagation()
            tlog.disable_progress_bar()
        else:
            import datasets.utils.logging as dlog
            from datasets.utils.tqdm import disable_progress_bars

            for h in list(dlog.get_logger().handlers):  # its plain StreamHandler to stderr
                if type(h) is logging.StreamHandler:
                    dlog.get_logger().removeHandler(h)
            disable_progress_bars()


def progress(**kwargs: Any) -> Any:
    """A tqdm bar on stderr with the harness's defaults: on a terminal it redraws twice a second; into
    a file or pipe (a CI log, `make demo > log`) it writes at most once a minute, so a transcript
    holds a few lines per bar rather than hundreds."""
    tty = sys.stderr.isatty() if hasattr(sys.stderr, "isatty") else False
    kwargs.setdefault("mininterval", 0.5 if tty else 60.0)
    kwargs.setdefault("dynamic_ncols", tty)
    kwargs.setdefault("file", sys.stderr)
    return tqdm(**kwargs)


def end() -> None:
    """Close the session's handlers; later records go nowhere new until the next `setup`."""
    global _session
    if _session is not None:
        _session.close()
        logging.captureWarnings(False)
        _session = None
