"""`harness judge`: pairwise LLM-as-judge win rate of a candidate over a baseline on a golden set."""
from __future__ import annotations

import argparse

from cli import judge_validate as cli_validate
from cli import serving as cli_serving
from harness import logs
from harness.errors import HarnessError
from harness.models.names import named
from harness.settings import Settings
from harness.store import check_writable, write_run
from judges.run import JudgeRunConfig, run_judge
from reports.text import judge_text

HELP = "judge a candidate against a baseline on a golden set, both orders, with a 95% interval"


def add_arguments(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="judge_action", metavar="ACTION")
    cli_validate.add_arguments(actions.add_parser("validate", help=cli_validate.HELP, description=cli_validate.HELP))
    # Required unless the action is `validate`; run() checks, as argparse cannot say "required without a subcommand".
    p.add_argument("--golden", help="(required) golden JSONL, or a named set: smoke, self_instruct, alpaca_heldout")
    p.add_argument("--candidate", metavar="[NAME=]REF",
                   help="(required) model reference, e.g. smollm2-135m-instruct+out/lora; NAME= names it "
                        "(default: the adapter folder's name, else the reference)")
    p.add_argument("--baseline", metavar="[NAME=]REF", help="(required) model reference, optionally NAME=REF")
    p.add_argument("--judge", default="smollm2-135m-instruct",
                   help="judge model reference; openai:MODEL@URL reads the key from OPENAI_API_KEY (default %(default)s)")
    p.add_argument("--judge-config", default="pairwise",
                   help="judge config name in judges/configs (pairwise, reference-pairwise) or a YAML path")
    cli_serving.add_backend_argument(p, "local models")
    p.add_argument("--limit", type=int, help="first N golden items")
    p.add_argument("--max-new-tokens", type=int, default=256, help="answer length cap (default %(default)s)")
    p.add_argument("--grade", action="store_true", help="also grade each answer 1-10 (single-answer mode)")
    p.add_argument("--human-labels", help="JSONL {id, preferred: candidate|baseline|tie} for Cohen's kappa")
    p.add_argument("--no-injection-probe", action="store_true", help="skip the prompt-injection probe")
    p.add_argument("--no-embeddings", action="store_true", help="skip embedding similarity to the ideal answer")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default %(default)s)")
    p.add_argument("--verdict-mode", choices=["auto", "calibrated", "discrete"], default="auto",
                   help="headline win rate: calibrated (label probabilities, both orders averaged), discrete "
                        "(verdicts), auto = calibrated where the judge backend scores text (default %(default)s)")
    p.add_argument("--no-canary", action="store_true",
                   help="skip the adapter canary of adapter candidates, baselines and judges; the run is "
                        "marked unverified")
    cli_serving.add_arguments(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.judge_action == "validate":
        return cli_validate.run(args, settings)
    missing = [f"--{k}" for k in ("golden", "candidate", "baseline") if not getattr(args, k)]
    if missing:
        raise HarnessError(f"harness judge needs {', '.join(missing)} (or the action: harness judge validate)")
    if args.limit is not None and args.limit < 1:
        raise HarnessError(f"--limit must be at least 1, got {args.limit}")
    cand, base = named(args.candidate), named(args.baseline)
    cfg = JudgeRunConfig(golden=args.golden, candidate=cand.ref, baseline=base.ref, judge=args.judge,
                         judge_config=args.judge_config, backend=args.backend, limit=args.limit,
                         max_new_tokens=args.max_new_tokens, grade=args.grade, human_labels=args.human_labels,
                         use_injection_probe=not args.no_injection_probe, use_embeddings=not args.no_embeddings,
                         seed=args.seed, verdict_mode=args.verdict_mode, check_canary=not args.no_canary,
                         backend_opts=cli_serving.backend_options(args, args.backend))
    check_writable(settings)  # before any scoring: a read-only or full disk must not waste a run
    result = run_judge(settings, cfg)
    names = {"candidate": cand.name, "baseline": base.name}
    # Names for display beside each role's reference and hashes, which stay as run_judge wrote them.
    result = result.amended(manifest={"models": [{**({"name": names[m["role"]]} if m.get("role") in names else {}),
                                                  **m} for m in result.manifest.get("models") or []]})
    folder = write_run(settings.runs_dir, result.amended(extra_files=logs.run_files()))
    print(judge_text(result.aggregates, cfg, names=(cand.name, base.name)))
    for note in result.aggregates["unverified"]:
        print(f"unverified: {note}")
    print(f"run {result.run_id} stored in {folder}")
    return 0
