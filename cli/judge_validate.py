"""`harness judge validate`: agreement of a judge with human preference labels, stored as a run."""
from __future__ import annotations

import argparse

from cli import serving as cli_serving
from harness import logs
from harness.errors import HarnessError
from harness.settings import Settings
from harness.store import write_run
from judges.validate import ValidateConfig, run_validation
from reports.text import validation_text

HELP = "measure a judge's agreement with people on HH-RLHF test pairs (or your own), both verdict modes"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--judge", default="smollm2-135m-instruct",
                   help="judge model reference; openai:MODEL@URL reads the key from OPENAI_API_KEY (default %(default)s)")
    p.add_argument("--judge-config", default="pairwise", help="pairwise judge config name or YAML path (default %(default)s)")
    p.add_argument("--pairs", help="JSONL {id, prompt, a, b, preferred: a|b|tie}; default: the HH-RLHF test splits "
                                   "under HARNESS_DATA_DIR/hh-rlhf")
    p.add_argument("--limit", type=int, help="first N pairs (HH: interleaved across its four splits)")
    p.add_argument("--max-chars", type=int, help="HH only: leave out pairs longer than this many characters "
                                                 "(question and both answers); a cheaper, shorter-biased sample")
    cli_serving.add_backend_argument(p, "a local judge and its models")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default %(default)s)")
    cli_serving.add_arguments(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.limit is not None and args.limit < 1:
        raise HarnessError(f"--limit must be at least 1, got {args.limit}")
    cfg = ValidateConfig(judge=args.judge, judge_config=args.judge_config, pairs=args.pairs, limit=args.limit,
                         max_chars=args.max_chars, backend=args.backend, seed=args.seed,
                         backend_opts=cli_serving.backend_options(args, args.backend))
    result = run_validation(settings, cfg)
    folder = write_run(settings.runs_dir, result.amended(extra_files=logs.run_files()))
    print(validation_text(result.aggregates, cfg))
    print(f"run {result.run_id} stored in {folder}; later win rates of this judge carry it")
    return 0
