"""`harness compare`: paired statistics and the non-inferiority gate. Exit 0 pass, 1 regression, 2 error."""
from __future__ import annotations

import argparse
import json
import sys

from cli import serving as cli_serving
from cli.compare_run import checkpoint_candidates, run_compare, write_compare
from harness import store
from harness.compare import CompareConfig, is_perplexity
from harness.errors import HarnessError, Interrupted
from harness.settings import Settings
from judges.winrate import WinRateEntry
from reports.export import compare_markdown
from reports.text import compare_entry_lines

HELP = "compare candidates against a baseline on a suite; exit 1 when a candidate regresses beyond a margin"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baseline", required=True, help="model reference scored once and shared by all candidates")
    p.add_argument("--candidate", action="append", default=[], dest="candidates",
                   help="model reference (repeatable); checkpoints named checkpoint-N form a trend")
    p.add_argument("--checkpoints", action="append", default=[], metavar="FINETUNE_DIR",
                   help="add every checkpoint a finetune kept (train.keep_checkpoints) as a candidate, in step "
                        "order: the forgetting curve")
    p.add_argument("--suite", required=True, help="suite name (suites/*.yaml) or path")
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
    candidates = [*args.candidates, *(c for d in args.checkpoints for c in checkpoint_candidates(d))]
    cfg = CompareConfig(baseline=args.baseline, candidates=tuple(candidates), suite=args.suite,
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
        print(format_text(compare))
        print(f"\nrun {run_id} under {settings.runs_dir}; browse with: harness report")
    if compare.aggregates["unverified"]:
        # On stderr too: --format markdown|json go to a file in CI, and the job log must say why.
        print(f"harness: error: the gate passes no unverified adapter: {'; '.join(compare.aggregates['unverified'])}",
              file=sys.stderr)
    return {"regression": 1, "error": 2}.get(compare.aggregates["summary"]["verdict"], 0)


def format_text(compare) -> str:  # type: ignore[no-untyped-def]

    agg = compare.aggregates
    conf = compare.manifest["confidence"]
    lines = [f"{'candidate':40s} {'task':22s} {'n':>5s} {'base':>7s} {'cand':>7s} {'diff [' + format(conf, '.0%') + ' interval]':>28s} "
             f"{'p(holm)':>8s} {'MDE':>6s} {'margin':>7s} verdict"]
    for r in agg["results"]:
        if r["scope"] != "task":
            continue
        d = r["diff"]
        scale, unit = (1, "logppl") if is_perplexity(r["metric"]) else (100, "pt")
        diff = f"{d['value'] * scale:+.2f} [{d['lo'] * scale:+.2f}, {d['hi'] * scale:+.2f}] {unit}"
        p = r.get("p_holm")
        mde = f"{r['mde'] * 100:.1f}" if r.get("mde") is not None else "-"
        margin = f"{r['margin'] * scale:.2f}" if r.get("margin") is not None else "-"
        note = r["verdict"] or "-"
        if r["verdict"] != "fail" and p is not None and p >= 0.05 and r.get("mde") is not None:
            note += f" (n.s.; MDE {r['mde'] * 100:.1f} pt)"
        lines.append(f"{r['candidate'][:40]:40s} {r['task'][:22]:22s} {r['n']:5d} {r['baseline']:7.3f} "
                     f"{r['candidate_value']:7.3f} {diff:>28s} {'-' if p is None else format(p, '.3f'):>8s} "
                     f"{mde:>6s} {margin:>7s} {note}")
    if agg.get("win_rates"):
        for w in agg["win_rates"]:
            lines += compare_entry_lines(WinRateEntry.from_json(w))
    for cand, by_subject in agg.get("flips", {}).items():
        n = sum(len(v) for v in by_subject.values())
        if n:
            worst = sorted(by_subject.items(), key=lambda kv: -len(kv[1]))[:5]
            lines.append(f"\n{cand}: {n} items flipped right -> wrong; most in: "
                         + ", ".join(f"{s} ({len(v)})" for s, v in worst))
    for e in agg.get("task_errors", []):
        lines.append(f"\nnot scored: {e}")
    for e in agg.get("unverified", []):
        lines.append(f"\nunverified: {e}; the gate passes no unverified adapter")
    lines.append(f"\nverdict: {agg['summary']['verdict'].upper()}"
                 + (f" ({'; '.join(agg['failures'])})" if agg["failures"] else ""))
    return "\n".join(lines)
