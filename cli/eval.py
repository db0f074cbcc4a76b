"""`harness eval --model REF --suite NAME_OR_PATH`: evaluate one model on one suite and store a run."""
from __future__ import annotations

import argparse
import time

from cli import serving as cli_serving
from harness import logs, store
from harness.backends.base import HasServerLog
from harness.backends.canary import canary_refs, unverified, verify_adapters
from harness.backends.factory import open_models
from harness.errors import HarnessError, Interrupted
from harness.evaluate import check_suite_tasks, evaluate_suite
from harness.models.names import named
from harness.models.resolve import resolve
from harness.settings import Settings
from harness.store import Run
from harness.suites.spec import load_suite

HELP = "evaluate a model on a suite (forgetting, perplexity, golden sets) and store the run"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="[NAME=]REF",
                   help="model reference: alias, checkpoint dir, BASE+ADAPTER, openai:MODEL@URL; NAME= names it "
                        "(default: the adapter or checkpoint folder's name, else the reference)")
    p.add_argument("--suite", required=True, help="a shipped suite name (forgetting, forgetting-quick, perplexity, "
                                                  "golden-smoke, golden-self-instruct) or a path to a suite YAML")
    cli_serving.add_backend_argument(p, "local models")
    p.add_argument("--include-path", action="append", default=[], metavar="DIR",
                   help="a folder of your own lm-eval task YAMLs (repeatable; beside the suite's include_path)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="at most N documents per subject/task after the suite's sampling (smoke runs)")
    p.add_argument("--dtype", default="auto", help="hf backend weights dtype: auto, bfloat16, float32 (default auto)")
    p.add_argument("--batch-size", type=int, default=8, help="hf backend batch size (default 8)")
    p.add_argument("--no-canary", action="store_true",
                   help="skip the adapter canary (base vs adapter probe log-probabilities); the run is "
                        "marked unverified and no gate passes it")
    p.add_argument("--no-fast-scorer", action="store_true",
                   help="score multiple choice with the plain backend instead of the shared-prefix scorer")
    cli_serving.add_arguments(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.limit is not None and args.limit < 1:
        raise HarnessError(f"--limit {args.limit}: must be at least 1")
    suite = load_suite(args.suite, settings=settings, include_paths=args.include_path)
    store.check_writable(settings)  # before any scoring: a read-only or full disk must not waste a run
    tm = check_suite_tasks(settings, suite)  # a misspelt task name costs no model load or canary
    opts = cli_serving.with_suite_serving(cli_serving.backend_options(args, args.backend), suite, args.backend)
    t0 = time.time()
    given = named(args.model)
    resolved = resolve(settings, given.ref)
    with open_models(settings, [resolved, *canary_refs([resolved], enabled=not args.no_canary)], args.backend,
                     opts) as backends:
        # Before any task: a refused adapter scores nothing, and a passing record skips the probes.
        canary = verify_adapters(settings, [resolved], backends, enabled=not args.no_canary)
        try:
            run_ = evaluate_suite(settings, backends[resolved.ref.raw], suite, limit=args.limit,
                                  use_fast_scorer=not args.no_fast_scorer, task_manager=tm)
        except Interrupted as e:
            e.runs = [r.amended(manifest={"canary": canary[resolved.ref.raw], **_named(r, given.name)},
                                aggregates={"unverified": unverified(canary)}) for r in e.runs]
            e.note = store.write_partial_runs(settings.runs_dir, e.runs)
            raise
        answering = backends[resolved.ref.raw]
        log_text = answering.server_log() if isinstance(answering, HasServerLog) else None
        # The invocation's log (lm-eval, transformers, httpx, ...) travels with the run it explains.
        run_ = run_.amended(manifest={"canary": canary[resolved.ref.raw], **_named(run_, given.name)},
                            aggregates={"unverified": unverified(canary)},
                            extra_files={**logs.run_files(), **({"vllm-server.log": log_text} if log_text else {})})
    folder = store.write_run(settings.runs_dir, run_)
    print(f"{'task':24s} {'metric':18s} {'value':>9s} {'n':>6s} {'unscored':>8s}")
    for label, t in run_.aggregates["tasks"].items():
        if t.get("failure_reason"):
            print(f"{label:24s} {t['metric']:18s} {'FAILED':>9s}  {t['failure_reason']}")
            continue
        value = "-" if t.get("value") is None else f"{t['value']:.4f}"
        print(f"{label:24s} {t['metric']:18s} {value:>9s} {t['n']:6d} {t.get('n_unscored', 0):8d}")
    for label, t in run_.aggregates["tasks"].items():
        for u in t.get("unscored", [])[:10]:
            print(f"{label}: unscored {u['reason']}")
    for note in run_.aggregates["unverified"]:
        print(f"unverified: {note}")
    print(f"run {run_.run_id} ({run_.status}) written to {folder} in {time.time() - t0:.0f} s")
    return 0 if run_.status == "complete" else 2


def _named(run_: Run, name: str) -> dict:
    """The manifest's model entry with its display name; the reference and hashes stay as they are."""
    return {"models": [{"name": name, **m} for m in run_.manifest.get("models") or []]}
