"""Display tables, shared by the app and the exports, in two forms.

`*_frame` functions return numbers (the app sorts them numerically and
formats them with `column_formats`, which become Streamlit column configs);
`*_table` functions return the same content as strings, an interval in one
cell, for the static exports. `formatted(frame)` turns any `*_frame` into
strings with the same formats.

Accuracy differences and margins are in points (pt; 0.01 = 1 point),
perplexity differences and margins in log-perplexity (logppl, nats per
token), as `harness compare` prints them; every interval with its level.
NaN shows as "—".
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import pandas as pd

from harness.compare import is_perplexity

DASH = "—"
REFERENCE_NAMES = {"embedding_similarity": "MiniLM cosine to the ideal", "rouge_l": "ROUGE-L to the ideal"}


def _ok(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not math.isnan(x)


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


def unit_of(metric: Any) -> tuple[float, str]:
    """(scale, unit) of a metric's differences and margins, as reports.text.compare_text prints them.

    >>> unit_of("acc"), unit_of("token_perplexity")
    ((100.0, 'pt'), (1.0, 'logppl'))
    """
    return (1.0, "logppl") if is_perplexity(metric) else (100.0, "pt")


# printf formats (Streamlit NumberColumn and Python's % share them) per column name of the *_frame functions.
DIFF = "%+.2f"
COLUMN_FORMATS = {
    "difference": DIFF, "low": DIFF, "high": DIFF, "margin": "%.2f", "baseline": "%.3f", "candidate value": "%.3f",
    "p (Holm)": "%.3f", "n": "%d", "level %": "%.0f%%", "step": "%d",
    "difference (pt)": DIFF, "low (pt)": DIFF, "high (pt)": DIFF, "baseline %": "%.1f", "candidate %": "%.1f",
    "baseline ppl": "%.2f", "candidate ppl": "%.2f", "difference (logppl)": "%+.4f", "low (logppl)": "%+.4f",
    "high (logppl)": "%+.4f", "margin (logppl)": "%.4f", "ppl change %": "%+.1f%%", "margin, ppl change %": "%.1f%%",
    "prompts": "%d", "judge win rate %": "%.1f", "judge win rate low": "%.1f", "judge win rate high": "%.1f",
    "LC win rate %": "%.1f", "reference win rate %": "%.1f", "wins": "%d", "ties": "%d", "losses": "%d",
    "invalid": "%d", "order disagreements": "%d", "position consistency": "%.2f", "first-position win rate": "%.2f",
    "injection flip rate": "%.2f", "outcome": "%.1f", "p(baseline)": "%.2f",
    "output chars": "%d", "failed checks": "%d", "checks": "%d",
}
# Columns that are shares of a whole: shown as bars (Streamlit ProgressColumn) with their range.
PROGRESS = {"judge win rate %": (0, 100), "LC win rate %": (0, 100), "reference win rate %": (0, 100),
            "position consistency": (0, 1)}


def column_formats(frame: pd.DataFrame) -> dict[str, str]:
    """{column: printf format} for the numeric columns of `frame` that have one."""
    return {c: COLUMN_FORMATS[c] for c in frame.columns if c in COLUMN_FORMATS}


def formatted(frame: pd.DataFrame) -> pd.DataFrame:
    """A `*_frame` as strings with the app's formats (for static exports); NaN as "—".

    >>> formatted(pd.DataFrame({"difference": [-1.234, float("nan")], "task": ["a", "b"]}))["difference"].tolist()
    ['-1.23', '—']
    """
    out = frame.copy()
    for col, fmt in column_formats(frame).items():
        out[col] = [fmt % (int(v) if "%d" in fmt else v) if _ok(v) else DASH for v in frame[col]]
    return out


def _scaled(rows: pd.DataFrame, column: str) -> pd.Series:
    return pd.Series([_num_or_nan(v) * unit_of(m)[0] for v, m in zip(rows[column], rows["metric"])],
                     index=rows.index, dtype=float)


def _num_or_nan(x: Any) -> float:
    return float(x) if _ok(x) else math.nan


def summary_frame(results: pd.DataFrame) -> pd.DataFrame:
    """Task-level results as numbers: difference, interval and margin in the row's `unit` (pt or logppl)."""
    rows = results[results["scope"] == "task"]
    return pd.DataFrame({
        # The verdict and the difference come first: long model references push later columns off screen.
        "candidate": rows["candidate"], "task": rows["task"], "verdict": rows["verdict"].fillna(DASH),
        "difference": _scaled(rows, "diff"), "low": _scaled(rows, "lo"), "high": _scaled(rows, "hi"),
        "margin": _scaled(rows, "margin"), "unit": rows["metric"].map(lambda m: unit_of(m)[1]),
        "level %": rows["confidence"] * 100, "metric": rows["metric"], "n": pd.to_numeric(rows["n"], errors="coerce"),
        "baseline": rows["baseline"], "candidate value": rows["candidate_value"], "p (Holm)": rows["p_holm"],
        "reason": rows["reason"].fillna(""),
    }).reset_index(drop=True)


def group_frame(results: pd.DataFrame, scope: str) -> pd.DataFrame:
    """Subject- or category-level accuracy as numbers, most negative difference first (points)."""
    rows = results[(results["scope"] == scope) & ~results["metric"].map(is_perplexity)]
    rows = rows.sort_values("diff", kind="stable")
    return pd.DataFrame({
        "candidate": rows["candidate"], "task": rows["task"], scope: rows["group"],
        "difference (pt)": rows["diff"] * 100, "low (pt)": rows["lo"] * 100, "high (pt)": rows["hi"] * 100,
        "n": pd.to_numeric(rows["n"], errors="coerce"), "baseline %": rows["baseline"] * 100,
        "candidate %": rows["candidate_value"] * 100, "p (Holm)": rows["p_holm"],
    }).reset_index(drop=True)


def perplexity_frame(results: pd.DataFrame) -> pd.DataFrame:
    """Perplexity results as numbers: both perplexities, Δ log-perplexity with interval and margin, and the
    same as a relative change in perplexity (exp(Δ) − 1, so a 5% margin reads 5.0)."""
    rows = results[results["metric"].map(is_perplexity)]
    change = lambda col: rows[col].map(lambda d: math.expm1(d) * 100 if _ok(d) else math.nan)  # noqa: E731
    return pd.DataFrame({
        "candidate": rows["candidate"], "task": rows["task"], "scope": rows["scope"], "group": rows["group"].fillna(""),
        "baseline ppl": rows["baseline"], "candidate ppl": rows["candidate_value"],
        "difference (logppl)": rows["diff"], "low (logppl)": rows["lo"], "high (logppl)": rows["hi"],
        "margin (logppl)": rows["margin"], "ppl change %": change("diff"), "margin, ppl change %": change("margin"),
        "verdict": rows["verdict"].fillna(DASH),
    }).reset_index(drop=True)


def trend_frame(trend: pd.DataFrame) -> pd.DataFrame:
    """Checkpoint trend as numbers per candidate, task and step, in the task's unit."""
    return pd.DataFrame({
        "candidate": trend["candidate"], "task": trend["task"], "step": pd.to_numeric(trend["step"]).astype("Int64"),
        "difference": _scaled(trend, "diff"), "low": _scaled(trend, "lo"), "high": _scaled(trend, "hi"),
        "unit": trend["metric"].map(lambda m: unit_of(m)[1]),
    }).reset_index(drop=True)


def win_rate_frame(wins: pd.DataFrame) -> pd.DataFrame:
    """Win rates in % as numbers; an interval that measures nothing (undetermined judge, zero width) is left
    empty and `interval note` says why, as in `win_rate_table`."""
    if wins.empty:
        return pd.DataFrame()
    wins = _with_win_columns(wins)
    undetermined = wins["status"].eq("undetermined")
    head = wins["headline_win_rate"].where(wins["headline_win_rate"].map(_ok), wins["win_rate"])
    lo = wins["headline_win_rate_lo"].where(wins["headline_win_rate"].map(_ok), wins["win_rate_lo"])
    hi = wins["headline_win_rate_hi"].where(wins["headline_win_rate"].map(_ok), wins["win_rate_hi"])
    note = ["undetermined: no interval" if u else "zero-width interval: no information" if _ok(a) and a == b else ""
            for u, a, b in zip(undetermined, lo, hi)]
    blank = pd.Series([bool(n) for n in note], index=wins.index)
    return pd.DataFrame({
        "candidate": wins["candidate"], "judge": wins["judge"], "prompts": wins["n_prompts"],
        "judge win rate status": wins["status"].fillna(DASH), "why": wins["reasons"].fillna(""),
        "judge win rate %": head * 100, "judge win rate low": (lo * 100).mask(blank),
        "judge win rate high": (hi * 100).mask(blank), "interval note": note,
        "LC win rate %": wins["lc_win_rate"] * 100, "reference win rate %": wins["reference_win_rate"] * 100,
        "reference": wins["reference_metric"].map(lambda m: REFERENCE_NAMES.get(m, m) if m else ""),
        "mode": wins["verdict_mode"].fillna("discrete"), "level %": wins["confidence"] * 100,
        "judge agrees with people": wins["validation"].fillna("not validated"),
        "wins": wins["n_wins"], "ties": wins["n_ties"], "losses": wins["n_losses"],
        "invalid": wins["n_invalid_verdicts"], "order disagreements": wins["n_disagreements"],
        "position consistency": wins["position_consistency"],
        "first-position win rate": wins["first_position_win_rate"], "injection flip rate": wins["injection_flip_rate"],
    }).apply(lambda c: pd.to_numeric(c) if c.name in COLUMN_FORMATS else c)


def _with_win_columns(wins: pd.DataFrame) -> pd.DataFrame:
    for col in ("status", "verdict_mode", "reasons", "validation", "reference_metric", "headline_win_rate",
                "headline_win_rate_lo", "headline_win_rate_hi", "reference_win_rate", "reference_win_rate_lo",
                "reference_win_rate_hi"):
        if col not in wins:  # frames built before these columns existed
            wins = wins.assign(**{col: None})
    return wins


def _diff_cell(row: pd.Series) -> str:
    scale, unit = unit_of(row.get("metric"))
    return fmt_interval(row["diff"], row["lo"], row["hi"], scale=scale, digits=2) + f" {unit}"


def _margin_cell(row: pd.Series) -> str:
    scale, unit = unit_of(row.get("metric"))
    return f"{row['margin'] * scale:.2f} {unit}" if _ok(row["margin"]) else DASH


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Task-level results: one row per (candidate, task) with the difference, its interval and the gate verdict."""
    rows = results[results["scope"] == "task"]
    return pd.DataFrame({
        # The verdict and the difference come first: long model references push later columns off screen.
        "candidate": rows["candidate"], "task": rows["task"], "verdict": rows["verdict"].fillna(DASH),
        "difference [interval]": rows.apply(_diff_cell, axis=1) if len(rows) else [],
        "level": rows["confidence"].map(_level),
        "margin": rows.apply(_margin_cell, axis=1) if len(rows) else [], "metric": rows["metric"],
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
        "difference, pt [interval]": [fmt_interval(d, lo, hi, scale=100)
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
        "Δ logppl [interval]": [fmt_interval(d, lo, hi, digits=4)
                                for d, lo, hi in zip(rows["diff"], rows["lo"], rows["hi"])],
        # exp(Δ log-ppl) − 1 is the relative change in perplexity; lower is better.
        "change": rows["diff"].map(lambda d: f"{math.expm1(d):+.1%}" if _ok(d) else DASH),
        "margin": [f"{m:.4f} logppl ({math.expm1(m):.1%} ppl)" if _ok(m) else DASH for m in rows["margin"]],
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
    wins = _with_win_columns(wins)
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
                                  fmt_interval(d, lo, hi, scale=100) + " pt"
                                  for m, d, lo, hi in zip(trend["metric"], trend["diff"], trend["lo"], trend["hi"])],
    })


def runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The run list as shown: id, kind, status, date, suite, models and the headline numbers."""
    return pd.DataFrame({
        "run": runs["run_id"], "kind": runs["kind"], "status": runs["status"],
        "created (UTC)": runs["created"], "suite": runs["suite"].fillna(""),
        "models": runs["models"].map(lambda ms: ", ".join(ms or [])),
        "summary": runs["summary"].map(_headline),
    }).reset_index(drop=True)


def _headline(summary: Any) -> str:
    if not isinstance(summary, dict):
        return ""
    parts = [f"{k}={fmt_num(v) if isinstance(v, float) else v}" for k, v in list(summary.items())[:4]]
    return ", ".join(parts)


def prompt_frame(prompts: pd.DataFrame, max_chars: int = 80) -> pd.DataFrame:
    """`prompt_table` with numbers left as numbers (outcome, p(baseline))."""
    return prompt_table(prompts, max_chars).assign(outcome=prompts["outcome"].to_numpy(),
                                                   **{"p(baseline)": prompts["p_baseline"].to_numpy()})


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
