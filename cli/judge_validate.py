"""`harness judge validate`: agreement of a judge with human preference labels, stored as a run."""
from __future__ import annotations

import argparse
from typing import Any

from cli import serving as cli_serving
from harness.errors import HarnessError
from harness.settings import Settings
from harness.store import write_run
from judges.trust import CHANCE
from judges.validate import ValidateConfig, run_validation
from reports.text import fmt_estimate, pct

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
    folder = write_run(settings.runs_dir, result)
    print(format_validation(result.aggregates, cfg))
    print(f"run {result.run_id} stored in {folder}; later win rates of this judge carry it")
    return 0


def format_validation(agg: dict[str, Any], cfg: Any) -> str:
    """Display only: agreement per verdict mode with its interval, ties, invalid verdicts and position diagnostics."""
    s, d, c = agg["summary"], agg["discrete"], agg["calibrated"]
    lines = [f"judge {cfg.judge} with {s['judge_config']}@{s['judge_config_version']} on {s['n_pairs']} "
             f"{s['source']} pairs, both orders each (chance agreement {100 * CHANCE:.0f}%)",
             f"  agreement, discrete    {fmt_estimate(d['win_rate'], 'pairs')}  (judge ties count 0.5; "
             f"orders that disagree are a tie)",
             f"     judge ties {d['n_ties']} (orders disagreed on {d['n_disagreements']}), invalid verdicts "
             f"{d['n_invalid_verdicts']} of {2 * d['n_prompts']} ({d['n_invalid_prompts']} pairs left out)",
             f"     position consistency {pct(d['position_consistency'])}, first-position win rate "
             f"{pct(d['first_position_win_rate'])} (50% = no position bias)"]
    if c["win_rate"]["n"]:
        lines.append(f"  agreement, calibrated  {fmt_estimate(c['win_rate'], 'pairs')}  (label probabilities, "
                     f"both orders averaged; first-position bias {c['first_position_bias']:+.2f} cancelled)")
    else:
        lines.append("  agreement, calibrated  n/a: the judge gave no label probabilities (generated verdicts)")
    if agg["n_human_ties"]:
        lines.append(f"  {agg['n_human_ties']} pairs people called a tie are not in the agreement; the judge said "
                     f"tie on {agg['n_judge_ties_on_human_ties']} of them")
    skipped = {k: v for k, v in (agg.get("n_skipped") or {}).items() if v}
    if skipped:
        lines.append("  rows skipped while reading the splits: " + ", ".join(f"{v} ({k})" for k, v in skipped.items()))
    t = agg["judge_tokens"]
    lines.append(f"  judge tokens: prompt {t['prompt_tokens']:,}, completion {t['completion_tokens']:,} over "
                 f"{t['n_games']} games" + (f" ({t['n_games_prompt_uncounted']} games' prompts not countable here)"
                                            if t["n_games_prompt_uncounted"] else ""))
    return "\n".join(lines)
