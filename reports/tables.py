"""Display tables: the frames of reports.data formatted as strings, shared by the app and the exports.

Formatting only; the numbers come from the run. Accuracy differences are
shown in points (0.01 = 1 point), perplexity differences in log-perplexity
(nats per token), every interval with its confidence level. NaN shows as "—".
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from harness.compare import is_perplexity

DASH = "—"
REFERENCE_NAMES = {"embedding_similarity": "MiniLM cosine to the ideal", "rouge_l": "ROUGE-L to the ideal"}


def _ok(x: Any) -> bool:
    return isinstance(x, (int, float)) and not (isinstance(x, float) and math.isnan(x))


def fmt_num(x: Any, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if _ok(x) else DASH


def fmt_interval(value: Any, lo: Any, hi: Any, *, scale: float = 1.0, digits: int = 1, signed: bool = True) -> str:
    """'−1.2 [−3.0, +0.6]' from a value and its interval, times `scale`; missing bounds are left out.

    >>> fmt_interval(-0.012, -0.03, 0.006, scale=100)
    '-1.2 [-3.0, +0.6]'
    """
    if not _ok(value):
        return DASH
    sign = "+" if signed else ""
    text = f"{value * scale:{sign}.{digits}f}"
    if _ok(lo) and _ok(hi):
        text += f" [{lo * scale:{sign}.{digits}f}, {hi * scale:{sign}.{digits}f}]"
    return text


def _level(confidence: Any) -> str:
    return f"{confidence:.0%}" if _ok(confidence) else "?"


def _diff_cell(row: pd.Series) -> str:
    if is_perplexity(row.get("metric")):
        return fmt_interval(row["diff"], row["lo"], row["hi"], digits=4)
    return fmt_interval(row["diff"], row["lo"], row["hi"], scale=100)


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Task-level results: one row per (candidate, task) with the difference, its interval and the gate verdict."""
    rows = results[results["scope"] == "task"]
    return pd.DataFrame({
        # The verdict and the difference come first: long model references push later columns off screen.
        "candidate": rows["candidate"], "task": rows["task"], "verdict": rows["verdict"].fillna(DASH),
        "difference [interval]": rows.apply(_diff_cell, axis=1) if len(rows) else [],
        "level": rows["confidence"].map(_level), "margin": rows["margin"].map(fmt_num), "metric": rows["metric"],
        "n": rows["n"], "baseline": rows["baseline"].map(fmt_num), "candidate value": rows["candidate_value"].map(fmt_num),
        "p (Holm)": rows["p_holm"].map(fmt_num), "reason": rows["reason"].fillna(""),
    }).reset_index(drop=True)


def group_table(results: pd.DataFrame, scope: str) -> pd.DataFrame:
    """Subject- or category-level accuracy differences, most negative first (in points)."""
    rows = results[(results["scope"] == scope) & ~results["metric"].map(is_perplexity)]
    rows = rows.sort_values("diff", kind="stable")
    return pd.DataFrame({
        "candidate": rows["candidate"], "task": rows["task"], scope: rows["group"], "n": rows["n"],
        "baseline": rows["baseline"].map(fmt_num), "candidate value": rows["candidate_value"].map(fmt_num),
        "difference, points [interval]": [fmt_interval(d, lo, hi, scale=100)
                                          for d, lo, hi in zip(rows["diff"], rows["lo"], rows["hi"])],
        "p (Holm)": rows["p_holm"].map(fmt_num),
    }).reset_index(drop=True)


def perplexity_table(results: pd.DataFrame) -> pd.DataFrame:
    """Perplexity results: both perplexities, the log-perplexity difference and the relative change."""
    rows = results[results["metric"].map(is_perplexity)]
    return pd.DataFrame({
        "candidate": rows["candidate"], "task": rows["task"], "scope": rows["scope"], "group": rows["group"].fillna(""),
        "baseline ppl": rows["baseline"].map(lambda x: fmt_num(x, 2)),
        "candidate ppl": rows["candidate_value"].map(lambda x: fmt_num(x, 2)),
        "Δ log-ppl [interval]": [fmt_interval(d, lo, hi, digits=4) for d, lo, hi in zip(rows["diff"], rows["lo"], rows["hi"])],
        # exp(Δ log-ppl) − 1 is the relative change in perplexity; lower is better.
        "change": rows["diff"].map(lambda d: f"{math.expm1(d):+.1%}" if _ok(d) else DASH),
        "verdict": rows["verdict"].fillna(DASH),
    }).reset_index(drop=True)


def _pct_interval(value: Any, lo: Any, hi: Any, undetermined: bool = False) -> str:
    """A win rate in % with its interval; a zero-width interval is shown as none, since it measures nothing,
    and so is the interval of an undetermined judge (judges.trust), whose numbers are kept but not a preference.

    >>> _pct_interval(0.5, 0.5, 0.5)
    '50.0 (zero-width interval: no information)'
    >>> _pct_interval(0.6, 0.5, 0.7, undetermined=True)
    '60.0 (undetermined: no interval)'
    """
    if _ok(value) and undetermined:
        return f"{value * 100:.1f} (undetermined: no interval)"
    if _ok(value) and _ok(lo) and lo == hi:
        return f"{value * 100:.1f} (zero-width interval: no information)"
    return fmt_interval(value, lo, hi, scale=100, signed=False)


def win_rate_table(wins: pd.DataFrame) -> pd.DataFrame:
    """Win rate and length-controlled win rate with intervals (in %), counts and judge diagnostics."""
    if wins.empty:
        return pd.DataFrame()
    for col in ("status", "verdict_mode", "reasons", "validation", "reference_metric", "headline_win_rate",
                "headline_win_rate_lo", "headline_win_rate_hi", "reference_win_rate", "reference_win_rate_lo",
                "reference_win_rate_hi"):
        if col not in wins:  # frames built before these columns existed
            wins = wins.assign(**{col: None})
    undetermined = wins["status"].eq("undetermined")
    pct = lambda c: [_pct_interval(v, lo, hi, u)  # noqa: E731
                     for v, lo, hi, u in zip(wins[c], wins[f"{c}_lo"], wins[f"{c}_hi"], undetermined)]
    return pd.DataFrame({
        "candidate": wins["candidate"], "judge": wins["judge"], "prompts": wins["n_prompts"],
        # The status comes first: an undetermined judge win rate must not be read as a preference.
        "judge win rate status": wins["status"].fillna(DASH), "why": wins["reasons"].fillna(""),
        "mode": wins["verdict_mode"].fillna("discrete"),
        "judge win rate % [interval]": [_pct_interval(v, lo, hi, u) if _ok(v) else w
                                        for v, lo, hi, u, w in zip(wins["headline_win_rate"], wins["headline_win_rate_lo"],
                                                                   wins["headline_win_rate_hi"], undetermined,
                                                                   pct("win_rate"))],
        "reference win rate % [interval] (no judge)": [
            _pct_interval(v, lo, hi) + (f" ({REFERENCE_NAMES.get(m, m)})" if _ok(v) else "")
            for v, lo, hi, m in zip(wins["reference_win_rate"], wins["reference_win_rate_lo"],
                                    wins["reference_win_rate_hi"], wins["reference_metric"])],
        "judge agrees with people": wins["validation"].fillna("not validated"),
        "discrete win rate % [interval]": pct("win_rate"), "LC win rate % [interval]": pct("lc_win_rate"),
        "level": wins["confidence"].map(_level),
        "W / T / L": [f"{w} / {t} / {l}" for w, t, l in zip(wins["n_wins"], wins["n_ties"], wins["n_losses"])],
        "invalid": wins["n_invalid_verdicts"], "order disagreements": wins["n_disagreements"],
        "position consistency": wins["position_consistency"].map(lambda x: fmt_num(x, 2)),
        "first-position win rate": wins["first_position_win_rate"].map(lambda x: fmt_num(x, 2)),
        "injection flip rate": wins["injection_flip_rate"].map(lambda x: fmt_num(x, 2)),
    })


def trend_table(trend: pd.DataFrame) -> pd.DataFrame:
    """Checkpoint trend per candidate, task and step: accuracy in points, perplexity in log-perplexity."""
    return pd.DataFrame({
        "candidate": trend["candidate"], "task": trend["task"], "step": trend["step"].map(lambda s: fmt_num(s, 0)),
        "difference [interval]": [fmt_interval(d, lo, hi, digits=4) if is_perplexity(m) else
                                  fmt_interval(d, lo, hi, scale=100) + " points"
                                  for m, d, lo, hi in zip(trend["metric"], trend["diff"], trend["lo"], trend["hi"])],
    })

def runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The run list as shown: id, kind, status, date, suite, models and the headline numbers."""
    return pd.DataFrame({
        "run": runs["run_id"], "kind": runs["kind"], "status": runs["status"],
        "created (UTC)": runs["created"].dt.strftime("%Y-%m-%d %H:%M"), "suite": runs["suite"].fillna(""),
        "models": runs["models"].map(lambda ms: ", ".join(ms or [])),
        "summary": runs["summary"].map(_headline),
    }).reset_index(drop=True)


def _headline(summary: Any) -> str:
    if not isinstance(summary, dict):
        return ""
    parts = [f"{k}={fmt_num(v) if isinstance(v, float) else v}" for k, v in list(summary.items())[:4]]
    return ", ".join(parts)


def prompt_table(prompts: pd.DataFrame, max_chars: int = 80) -> pd.DataFrame:
    """A compact per-prompt overview: id, outcome, both verdicts and the starts of the texts."""
    cut = lambda s: s if len(s) <= max_chars else s[:max_chars - 1] + "…"  # noqa: E731
    return pd.DataFrame({
        "item": prompts["item_id"], "outcome": prompts["outcome"].map(lambda x: fmt_num(x, 1)),
        "judge (candidate first)": prompts["verdict_candidate_first"],
        "judge (candidate second)": prompts["verdict_candidate_second"],
        "p(baseline)": prompts["p_baseline"].map(lambda x: fmt_num(x, 2)),
        "prompt": prompts["question"].map(cut), "tuned answer": prompts["candidate_output"].map(cut),
        "base answer": prompts["baseline_output"].map(cut),
    })
