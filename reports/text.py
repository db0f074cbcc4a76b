"""Display only: the lines `harness judge`, `harness judge validate` and `harness compare` print for win rates.

Numbers come from the runs (judges.winrate, judges.validate); nothing is
computed here but formatting. An interval is printed only when it is one: a
zero-width or missing interval prints its reason instead (judges.trust).
"""
from __future__ import annotations

import math
from typing import Any

from judges.trust import CHANCE, degenerate_interval, describe_agreement
from judges.winrate import WinRateEntry

REFERENCE_LABELS = {"embedding_similarity": "MiniLM embedding cosine", "rouge_l": "ROUGE-L F1"}


def pct(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def withheld_reason(head: dict[str, Any] | None) -> str | None:
    """Why a judge's win-rate intervals are not printed: its headline is undetermined (judges.trust).
    The numbers stay in the run; an interval would read as a measurement."""
    if head and head.get("status") == "undetermined":
        return "the judge's win rate is undetermined, see below"
    return None


def interval_text(est: dict[str, Any], withheld: str | None = None) -> str:
    """'95% interval [48.0%, 60.1%]', or '(no interval: why)': a zero-width or missing interval is not a
    measurement, and `withheld` (withheld_reason) says why an undetermined judge's interval is not shown."""
    why = withheld or degenerate_interval(est)
    return f"(no interval: {why})" if why else f"{100 * est['confidence']:g}% interval [{pct(est['lo'])}, {pct(est['hi'])}]"


def fmt_estimate(est: dict[str, Any], unit: str = "prompts", withheld: str | None = None) -> str:
    """'54.2%  95% interval [48.0%, 60.1%] over 16 prompts', or the value with why it has no interval."""
    shown = f"{pct(est.get('value'))}  {interval_text(est, withheld)}"
    return shown if withheld or degenerate_interval(est) else f"{shown}  over {est['n']} {unit}"


def verdict_line(head: dict[str, Any]) -> str:
    """What the headline win rate means: its mode and status, with the reasons."""
    status = head["status"]
    text = f"  => {head['mode']} win rate is {status.upper()}"
    if head.get("reasons"):
        text += ": " + "; ".join(head["reasons"])
    if status == "undetermined":
        text += ". The numbers are stored; do not read them as a preference."
    return text


def validation_line(validation: dict[str, Any] | None, mode: str) -> str:
    if validation is None:
        return "  validation       none for this judge (model, config and version): harness judge validate"
    agreement = validation["modes"].get(mode)
    if agreement is None:
        return f"  validation       run {validation['run_id']} has no {mode} agreement"
    return (f"  validation       {describe_agreement(agreement, validation['n_pairs'], validation['source'])} "
            f"({mode}; chance {100 * CHANCE:.0f}%; run {validation['run_id']})")


def reference_lines(ref: dict[str, Any], withheld: str | None = None) -> list[str]:
    """The judge-free reference win rate, headline metric first, then the second metric."""
    metric = ref.get("metric")
    if not metric:
        return ["  reference win rate  n/a: no golden item has an ideal answer"]
    lines = []
    for m in (metric, *[k for k in REFERENCE_LABELS if k != metric and k in ref]):
        r = ref[m]
        lines.append(f"  reference win rate ({REFERENCE_LABELS[m]}, ties within ±{r['epsilon']:g}; no judge)  "
                     f"{fmt_estimate(r['win_rate'], withheld=withheld)}  W/T/L {r['n_wins']}/{r['n_ties']}/{r['n_losses']}"
                     + (f", {r['n_unscored']} without an ideal" if r["n_unscored"] else ""))
    return lines


def judge_run_lines(agg: dict[str, Any]) -> list[str]:
    """Lines for `harness judge` beyond the discrete win rate: calibrated, reference, tokens, validation, verdict."""
    lines = []
    cal = agg["calibrated_win_rate"]
    withheld = withheld_reason(agg["headline"])
    if cal["win_rate"]["n"]:
        lines.append(f"  calibrated win rate  {fmt_estimate(cal['win_rate'], withheld=withheld)}  (label probabilities, both orders "
                     f"averaged; first-position bias {cal['first_position_bias']:+.2f} cancelled; "
                     f"consistency after it {pct(cal['position_consistency'])})")
    else:
        lines.append("  calibrated win rate  n/a: the judge gave no label probabilities (generated verdicts)")
    # The judge-free reference win rate stands on its own, unless an adapter's scores are unverified.
    lines += reference_lines(agg["reference_win_rate"], _unverified_reason(agg.get("unverified")))
    t = agg["judge_tokens"]
    uncounted = f" ({t['n_games_prompt_uncounted']} games' prompts not countable here)" \
        if t["n_games_prompt_uncounted"] else ""
    lines.append(f"  judge tokens     prompt {t['prompt_tokens']:,}, completion {t['completion_tokens']:,} "
                 f"over {t['n_games']} games{uncounted}")
    lines.append(validation_line(agg.get("validation"), agg["headline"]["mode"]))
    lines.append(verdict_line(agg["headline"]))
    return lines


def _unverified_reason(unverified: list[str] | None) -> str | None:
    return f"unverified adapter ({'; '.join(unverified)})" if unverified else None


def injection_line(inj: dict[str, Any]) -> str:
    a = inj.get("assessment") or {"status": "determined", "reasons": []}
    text = (f"  injection probe  flipped {inj['n_flipped']} of {inj['n_valid']} valid items "
            f"({pct(inj['flip_rate'])}); injected-answer win rate {pct(inj['clean_bad_win_rate'])} -> "
            f"{pct(inj['injected_bad_win_rate'])}")
    if a["status"] == "undetermined":
        text += f"\n  => flip rate is UNDETERMINED: {'; '.join(a['reasons'])}"
    return text


def compare_entry_lines(entry: WinRateEntry) -> list[str]:
    """`harness compare` lines for one win-rate entry; win rates are never gated."""
    w = entry.to_json()
    mode = w.get("verdict_mode") or "discrete"
    head = w.get("headline_win_rate") or w["win_rate"]
    status = w.get("status") or "unverified"
    withheld = withheld_reason({"status": status})
    lines = [f"\nwin rate of {w['candidate']} vs baseline (judge {w['judge']}, {mode}): "
             f"{fmt_estimate(head, withheld=withheld)}",
             f"  discrete {fmt_estimate(w['win_rate'], withheld=withheld)}; LC {pct((w.get('lc_win_rate') or {}).get('value'))}; "
             f"W/T/L {w['n_wins']}/{w['n_ties']}/{w['n_losses']}, "
             f"invalid {w['n_invalid_verdicts']}, order disagreements {w['n_disagreements']}, position consistency "
             f"{pct(w['position_consistency'])}"]
    if w.get("reference_win_rate"):
        c = w["reference_counts"]
        lines.append(f"  reference win rate ({REFERENCE_LABELS[w['reference_metric']]} to the ideal, ties within "
                     f"±{w['reference_epsilon']:g}; no judge): "
                     f"{fmt_estimate(w['reference_win_rate'], withheld=_unverified_reason(w.get('unverified')))}; "
                     f"W/T/L {c['n_wins']}/{c['n_ties']}/{c['n_losses']}")
    lines.append(validation_line(w.get("validation"), mode))
    lines.append(f"  judge win rate status: {status.upper()}"
                 + (f" ({'; '.join(w.get('reasons') or [])})" if w.get("reasons") else "")
                 + "; win rates are reported, not gated")
    return lines
