"""Display only: the plain text the CLI prints: `harness compare` (results, win rates, verdict),
`harness judge` and `harness judge validate`.

Numbers come from the runs (judges.winrate, judges.validate); nothing is
computed here but formatting. An interval is printed only when it is one: a
zero-width or missing interval prints its reason instead (judges.trust).
"""
from __future__ import annotations

import math
from typing import Any

from harness.compare import is_perplexity
from harness.store import Run
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


def compare_text(compare: Run) -> str:
    """`harness compare`'s text: one line per task result, the win rates, flips, and the verdict."""
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


def validation_text(agg: dict[str, Any], cfg: Any) -> str:
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


def judge_text(agg: dict[str, Any], cfg: Any) -> str:
    """Display only: formats the aggregates run_judge computed."""
    w, lc = agg["win_rate"], agg["lc_win_rate"]
    withheld = withheld_reason(agg.get("headline"))
    est = w["win_rate"]
    lines = [
        f"judge {agg['judge']['name']}@{agg['judge']['version']} ({cfg.judge}): {cfg.candidate} vs {cfg.baseline}",
        f"  win rate         {pct(est['value'])}  {interval_text(est, withheld)}  over {est['n']} prompts (discrete "
        f"verdicts; ties count 0.5)",
        f"  LC win rate      {pct(lc['lc_win_rate']['value'])}  {interval_text(lc['lc_win_rate'], withheld)}  "
        f"length coef {lc['length_coef']:+.3g}",
        f"  wins/ties/losses {w['n_wins']}/{w['n_ties']}/{w['n_losses']}  "
        f"(orders disagreed, counted as ties: {w['n_disagreements']})",
        f"  invalid verdicts {w['n_invalid_verdicts']} of {2 * w['n_prompts']}  "
        f"({w['n_invalid_prompts']} prompts left out)",
        f"  position consistency {pct(w['position_consistency'])}  first-position win rate "
        f"{pct(w['first_position_win_rate'])} (50% = no position bias)",
    ]
    for side in ("candidate", "baseline"):
        m = agg["metrics"][side]
        lines.append(f"  {side:9s} checks {pct(m['checks_passed']['mean'])} (n={m['checks_passed']['n_scored']})  "
                     f"exact {pct(m['exact_match']['mean'])}  ROUGE-L {m['rouge_l']['mean']:.3f}  "
                     f"embedding sim {m['embedding_similarity']['mean']:.3f}")
    for side, g in agg.get("grades", {}).items():
        lines.append(f"  {side:9s} grade {g['mean']:.2f}/10 over {g['n_graded']} ({g['n_invalid']} invalid)")
    if "kappa_vs_human" in agg:
        k = agg["kappa_vs_human"]
        lines.append(f"  Cohen's kappa vs human labels {k['kappa']:.3f} over {k['n']} items ({k['n_missing']} missing)")
    for u in agg.get("unscored", [])[:10]:
        lines.append(f"  not judged: {u['reason']}")
    if "injection" in agg:
        lines.append(injection_line(agg["injection"]))
    if "headline" in agg:
        lines += judge_run_lines(agg)
    return "\n".join(lines)
