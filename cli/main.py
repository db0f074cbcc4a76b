"""`harness`: a thin CLI. Parse, build settings, call one function, return an exit code.

Exit codes: 0 pass, 1 regression (compare/gate), 2 error, 130 interrupted
(Ctrl-C; what was scored is stored as a partial run), 141 stdout closed early
(`harness runs list | head`; quiet, as any tool killed by SIGPIPE). Every error
prints one line without a traceback: a HarnessError as its message, an OSError
or SQLite error with the OS's reason, anything else as an internal error;
--debug shows the traceback. Exit 1 is never an error.

Each command lives in its own module of cli/ exposing HELP, add_arguments(parser)
and run(args, settings) -> int. Project modules are imported at the top of each
file; only torch, vLLM, lm-eval, transformers and streamlit load inside the
functions that need them, so `--help` stays fast.
"""
from __future__ import annotations

import argparse
import os
import select
import sqlite3
import sys
import traceback
from typing import Sequence

from cli import compare
from cli import eval as eval_command
from cli import finetune, judge, models, report, runs, serve
from harness import logs
from harness.errors import HarnessError
from harness.settings import Settings

COMMANDS = {"models": models, "runs": runs, "eval": eval_command, "judge": judge, "compare": compare,
            "serve": serve, "finetune": finetune, "report": report}
LOADS_MODELS = ("eval", "judge", "compare", "serve", "finetune", "models-prepare")  # import transformers anyway


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Evaluate fine-tuned LLMs against their base: perplexity, forgetting benchmarks, "
                    "golden sets and LLM-as-judge win rates, with paired statistics and a regression gate.",
        epilog="Exit codes: 0 pass, 1 regression, 2 error. Environment: HARNESS_HOME (model and item cache), "
               "HARNESS_RUNS_DIR (default ./runs), HARNESS_DATA_DIR (offline datasets).")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also show the libraries' log lines (lm-eval, transformers, vLLM, httpx, ...) on the "
                             "terminal; they always go to the log file under HARNESS_HOME/logs/")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        p = sub.add_parser(name, help=module.HELP.replace("%", "%%"), description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code. No exception escapes except argparse's SystemExit."""
    # Known before parsing, so an error while building the parser also honours it.
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    opened = False
    try:
        args = build_parser().parse_args(argv)
        settings = Settings.from_env()
        name = _command_name(args)
        if logs.current() is None:  # a program calling main() (the demo) keeps its own log
            logs.setup(settings.home, name, verbose=args.verbose, debug=args.debug)
            opened = True
        if args.command in LOADS_MODELS or name in LOADS_MODELS:
            logs.quiet_libraries()
        code = int(args._run(args, settings))
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers, not at interpreter exit
        return code
    except KeyboardInterrupt as e:
        note = getattr(e, "note", "")
        print(f"harness: interrupted{'; ' + note if note else ''}; finished items are cached and a rerun resumes",
              file=sys.stderr)
        return 130
    except BrokenPipeError as e:
        if _is_stdout_closed():
            _silence_stdout()
            return 141
        return _error(f"broken pipe: {e}", debug)
    except HarnessError as e:
        return _error(str(e), debug)
    except OSError as e:
        # A full disk, a read-only folder, a vanished file: the OS's reason and the path, as one line.
        return _error(str(e), debug)
    except sqlite3.Error as e:
        return _error(f"SQLite: {e} (the run index or the item cache)", debug)
    except Exception as e:  # a bug: still one line; --debug shows where
        return _error(f"internal error {type(e).__name__}: {e}; rerun with --debug for the traceback", debug)
    finally:
        if opened:
            _end_log()


def _command_name(args: argparse.Namespace) -> str:
    """'eval', 'judge-validate', ...: the log file's prefix."""
    sub = vars(args).get(f"{args.command}_action") or vars(args).get(f"{args.command}_command")
    return f"{args.command}-{sub}" if isinstance(sub, str) and sub.isidentifier() else args.command


def _end_log() -> None:
    """Close this invocation's log; name it on stderr when it holds a warning or an error."""
    line = logs.footer()
    logs.end()
    if line:
        try:
            print(line, file=sys.stderr)
        except OSError:
            pass


def _error(message: str, debug: bool) -> int:
    """Print `harness: error: MESSAGE` (the traceback first with --debug); returns exit code 2.

    HarnessError messages that list several problems (a golden file's bad
    lines) keep their lines; any other message is flattened to one line.
    """
    if debug:
        traceback.print_exc()
    exc = sys.exc_info()[1]
    text = message if isinstance(exc, HarnessError) else " ".join(message.split())
    print(f"harness: error: {text}", file=sys.stderr)
    return 2


def _is_stdout_closed() -> bool:
    """Whether the reader of stdout has gone (`| head`), as opposed to some other pipe or socket breaking."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):
        return False


def _silence_stdout() -> None:
    # Python flushes stdout at exit; onto a closed pipe that prints "Exception ignored ... BrokenPipeError".
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
