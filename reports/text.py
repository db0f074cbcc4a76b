"""Display only: the plain text the CLI prints: `harness compare` (results, win rates, verdict),
`harness judge` and `harness judge validate`.

Numbers come from the runs (judges.winrate, judges.validate); nothing is
computed here but formatting. An interval is printed only when it is one: a
zero-width or missing interval prints its reason instead (judges.trust).
"""
from __future__ import annotations

import math
import textwrap
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
    lines = [f"\nwin rate of {w['candidate']} vs baseline (judge {w['judge']}, {mode}):",
             f"  {mode:8s} {fmt_estimate(head, withheld=withheld)}",
             f"  discrete {fmt_estimate(w['win_rate'], withheld=withheld)}; "
             f"LC {pct((w.get('lc_win_rate') or {}).get('value'))}",
             f"  W/T/L {w['n_wins']}/{w['n_ties']}/{w['n_losses']}, invalid {w['n_invalid_verdicts']}, "
             f"order disagreements {w['n_disagreements']}, position consistency {pct(w['position_consistency'])}"]
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


WIDTH = 100  # `harness compare` text fits a terminal this wide (a long model reference gets a line of its own)


def _scale_unit(metric: str | None) -> tuple[float, str]:
    """Accuracy differences print in points, perplexity differences in log-perplexity."""
    return (1.0, "logppl") if is_perplexity(metric) else (100.0, "pt")


def diff_text(d: dict[str, Any], metric: str | None) -> str:
    """'-0.7 [-2.1, +0.7]' in points, '+0.012 [-0.003, +0.027]' in log-perplexity (unit in the column head)."""
    scale, unit = _scale_unit(metric)
    f = ".3f" if unit == "logppl" else ".1f"
    if d.get("value") is None:
        return "n/a"
    lo, hi = d.get("lo"), d.get("hi")
    if lo is None or hi is None:
        return f"{d['value'] * scale:+{f}}"
    return f"{d['value'] * scale:+{f}} [{lo * scale:+{f}}, {hi * scale:+{f}}]"


def margin_text(margin: float | None, metric: str | None) -> str:
    """A margin in the unit of the difference beside it (points, or log-perplexity); '-' when the suite sets none."""
    if margin is None:
        return "-"
    scale, unit = _scale_unit(metric)
    return f"{margin * scale:.3f}" if unit == "logppl" else f"{margin * scale:.1f}"


def _table(head: list[str], rows: list[list[str]], right: set[int], indent: str = "  ") -> list[str]:
    """Columns sized to their widest cell; the last column is left unpadded."""
    widths = [max(len(c) for c in col) for col in zip(head, *rows)]

    def line(cells: list[str]) -> str:
        out = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return (indent + " ".join(out)).rstrip()
    return [line(head), *(line(r) for r in rows)]


def model_names(manifest: dict[str, Any]) -> dict[str, str]:
    """{name: reference} of a compare run's candidates; runs from before names show the reference as the name."""
    out = {}
    for c in manifest.get("candidates") or []:
        if isinstance(c, dict) and c.get("ref"):
            out[str(c.get("name") or c["ref"])] = str(c["ref"])
    return out


def _model_lines(manifest: dict[str, Any]) -> list[str]:
    base = manifest.get("baseline") or {}
    names = model_names(manifest)
    width = max([len(n) for n in names] + [len(str(base.get("name") or ""))], default=0)
    lines = []
    for role, name, ref in [("baseline ", base.get("name") or base.get("ref", "?"), base.get("ref", "?")),
                            *(("candidate", n, r) for n, r in names.items())]:
        line = f"{role} {str(name):{width}s}"
        # A name equal to its reference is printed once; a reference too long for the line gets its own.
        if ref != name:
            line = f"{line}  {ref}" if len(line) + 2 + len(ref) <= WIDTH else f"{line.rstrip()}\n{'':12s}{ref}"
        lines.append(line.rstrip())
    return lines


def _candidate_block(name: str, rows: list[dict[str, Any]], conf: float) -> list[str]:
    """One candidate's task results: an accuracy table in points and a perplexity table in log-perplexity."""
    lines = [f"\n{name}"]
    level = format(conf, ".0%")
    acc = [r for r in rows if not is_perplexity(r["metric"])]
    ppl = [r for r in rows if is_perplexity(r["metric"])]
    if acc:
        body = []
        for r in acc:
            p = r.get("p_holm")
            note = r["verdict"] or "-"
            if r["verdict"] != "fail" and p is not None and p >= 0.05:
                note += " (n.s.)"
            body.append([r["task"], str(r["n"]), f"{r['baseline']:.3f}", f"{r['candidate_value']:.3f}",
                         diff_text(r["diff"], r["metric"]), margin_text(r.get("margin"), r["metric"]),
                         "-" if p is None else f"{p:.3f}",
                         "-" if r.get("mde") is None else f"{r['mde'] * 100:.1f}", note])
        lines += _table(["task", "n", "base", "cand", f"diff pt [{level}]", "margin pt", "p(holm)", "MDE pt",
                         "verdict"], body, right={1, 2, 3, 5, 6, 7})
    if ppl:
        body = [[r["task"], str(r["n"]), f"{r['baseline']:.2f}", f"{r['candidate_value']:.2f}",
                 diff_text(r["diff"], r["metric"]), margin_text(r.get("margin"), r["metric"]), r["verdict"] or "-"]
                for r in ppl]
        lines += _table(["task", "n", "base ppl", "cand ppl", f"diff logppl [{level}]", "margin logppl", "verdict"],
                        body, right={1, 2, 3, 5})
    return lines


def trend_lines(trend: list[dict[str, Any]], conf: float | None = None) -> list[str]:
    """The forgetting curve: one row per checkpoint in step order, per task the difference with its interval.

    Tasks go in column groups that fit WIDTH, so many tasks wrap into several tables rather than a wide line.
    """
    if not trend:
        return []
    tasks = list(dict.fromkeys(t["task"] for t in trend))
    units = {t["task"]: _scale_unit(t.get("metric"))[1] for t in trend}
    order = sorted({(t.get("step") if t.get("step") is not None else -1, t["candidate"]) for t in trend})
    cell = {(t["candidate"], t["task"]): diff_text(t["diff"], t.get("metric")) for t in trend}
    level = f" [{conf:.0%}]" if conf else ""
    lines = [f"\ncheckpoint trend: candidate − baseline per task{level}, in step order"]
    first = [[name, "-" if step < 0 else str(step)] for step, name in order]
    lead = max(len(r[0]) for r in first) + 1 + max(len(r[1]) for r in first + [["", "step"]]) + 3
    groups: list[list[str]] = [[]]
    used = lead
    for task in tasks:
        w = max(len(f"{task} ({units[task]})"), *(len(cell.get((n, task), "-")) for _, n in order)) + 1
        if groups[-1] and used + w > WIDTH:
            groups.append([])
            used = lead
        groups[-1].append(task)
        used += w
    for g in groups:
        body = [[*f, *(cell.get((name, t), "-") for t in g)] for f, (_, name) in zip(first, order)]
        lines += _table(["checkpoint", "step", *(f"{t} ({units[t]})" for t in g)], body, right={1})
    return lines


def compare_text(compare: Run) -> str:
    """`harness compare`'s text: the models by name, per candidate its task results (accuracy in points,
    perplexity in log-perplexity, margins in the same unit), the checkpoint trend, win rates, flips, verdict."""
    agg = compare.aggregates
    conf = compare.manifest["confidence"]
    lines = _model_lines(compare.manifest)
    by_cand: dict[str, list[dict]] = {}
    for r in agg["results"]:
        if r["scope"] == "task":
            by_cand.setdefault(str(r["candidate"]), []).append(r)
    for name, rows in by_cand.items():
        lines += _candidate_block(name, rows, conf)
    if by_cand:
        lines.append("\ndifferences are candidate − baseline: accuracy in points (pt), perplexity in log-perplexity")
        lines.append("(logppl, lower is better; a margin m lets perplexity rise by e^m − 1); n.s.: p(holm) >= 0.05")
    lines += trend_lines(agg.get("trend") or [], conf)
    if agg.get("win_rates"):
        for w in agg["win_rates"]:
            lines += compare_entry_lines(WinRateEntry.from_json(w))
    for cand, by_subject in agg.get("flips", {}).items():
        n = sum(len(v) for v in by_subject.values())
        if n:
            worst = sorted(by_subject.items(), key=lambda kv: -len(kv[1]))[:5]
            lines.append(f"\n{cand}: {n} items flipped right -> wrong; most in:\n  "
                         + ", ".join(f"{s} ({len(v)})" for s, v in worst))
    for e in agg.get("task_errors", []):
        lines.append(f"\nnot scored: {e}")
    for e in agg.get("unverified", []):
        lines.append(f"\nunverified: {e}; the gate passes no unverified adapter")
    lines.append(f"\nverdict: {agg['summary']['verdict'].upper()}"
                 + (f" ({'; '.join(agg['failures'])})" if agg.get("failures") else ""))
    return fit_width("\n".join(lines))


def fit_width(text: str, width: int = WIDTH) -> str:
    """Prose lines longer than `width` wrapped at spaces, continuing two spaces further in; tables already fit,
    and a single word longer than the width (a model reference) is left whole on its line.

    >>> print(fit_width("  status: UNDETERMINED (position consistency 19% is below 50%)", width=40))
      status: UNDETERMINED (position
        consistency 19% is below 50%)
    """
    out = []
    for line in text.split("\n"):
        if len(line) <= width:
            out.append(line)
            continue
        indent = line[:len(line) - len(line.lstrip())]
        out += textwrap.wrap(line, width=width, subsequent_indent=indent + "  ", break_long_words=False,
                             break_on_hyphens=False) or [line]
    return "\n".join(out)


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


def judge_text(agg: dict[str, Any], cfg: Any, names: tuple[str, str] | None = None) -> str:
    """Display only: formats the aggregates run_judge computed; `names` (candidate, baseline) are shown for the
    references in `cfg`."""
    w, lc = agg["win_rate"], agg["lc_win_rate"]
    cand, base = names or (cfg.candidate, cfg.baseline)
    withheld = withheld_reason(agg.get("headline"))
    est = w["win_rate"]
    lines = [
        f"judge {agg['judge']['name']}@{agg['judge']['version']} ({cfg.judge}): {cand} vs {base}",
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


def _model_label(m: dict[str, Any]) -> str:
    name, ref = m.get("name"), m.get("ref", "?")
    return f"{name}  {ref}" if name and name != ref else str(ref)


def _canary_text(canary: Any) -> list[str]:
    """'REF: passed (record)' per model; an eval run stores one status, a compare run one per reference."""
    if not isinstance(canary, dict) or not canary:
        return ["canary     not recorded"]
    statuses = {"": canary} if "outcome" in canary else canary
    out = []
    for ref, s in statuses.items():
        if not isinstance(s, dict):
            continue
        text = str(s.get("outcome", "?")) + (f" ({s['source']})" if s.get("source") else "") \
            + (f": {s['reason']}" if s.get("reason") else "")
        out.append(f"canary     {ref + ': ' if ref else ''}{text}")
    return out


def _cache_text(runs: list[Run]) -> str:
    hits = sum(int((r.manifest.get("cache") or {}).get("hits") or 0) for r in runs)
    misses = sum(int((r.manifest.get("cache") or {}).get("misses") or 0) for r in runs)
    if not any((r.manifest.get("cache") or {}) for r in runs):
        return "cache      not recorded"
    total = hits + misses
    share = f" ({100 * hits / total:.0f}% reused)" if total else ""
    return f"cache      {hits:,} hits, {misses:,} misses{share}"


def run_summary_text(run: Run, sources: list[Run] = ()) -> str:
    """`harness runs show`: what ran and what came out, for a person; `--json` has the whole record.

    `sources` are the eval runs a compare run was built from (for their cache counts), where still stored.
    """
    m, agg = run.manifest, run.aggregates
    suite = m.get("suite") or {}
    suite_text = f"{suite.get('name', '?')} v{suite.get('version', '?')}" if isinstance(suite, dict) else str(suite)
    lines = [f"run        {run.run_id}", f"kind       {run.kind}", f"status     {run.status}"
             + (f" ({m['error']})" if m.get("error") else "") + (" (interrupted)" if m.get("interrupted") else ""),
             f"created    {m.get('created_utc', '?')}", f"suite      {suite_text}"]
    if run.kind == "compare":
        base = m.get("baseline") or {}
        lines.append(f"baseline   {_model_label(base)}")
        lines += [f"candidate  {_model_label(c)}" for c in m.get("candidates") or [] if isinstance(c, dict)]
    elif run.kind == "judge":
        lines += [f"{str(mm.get('role', 'model')):10s} {_model_label(mm)}" for mm in m.get("models") or []]
    else:
        lines += [f"model      {_model_label(mm)}" for mm in m.get("models") or []]
    if m.get("wall_s") is not None:
        lines.append(f"wall time  {m['wall_s']} s")
    lines.append(_cache_text([run] if run.kind == "eval" else [s for s in sources if s.kind == "eval"]))
    lines += _canary_text(m.get("canary"))
    if run.kind == "eval":
        body = []
        for label, t in (agg.get("tasks") or {}).items():
            value = "FAILED" if t.get("failure_reason") else "-" if t.get("value") is None else f"{t['value']:.4f}"
            body.append([label, str(t.get("metric", "?")), value, str(t.get("n", "-")),
                         str(t.get("n_unscored", 0)), t.get("failure_reason") or ""])
        if body:
            lines += ["", *_table(["task", "metric", "value", "n", "unscored", ""], body, right={2, 3, 4}, indent="")]
    elif run.kind == "compare":
        summary = agg.get("summary") or {}
        conf = m.get("confidence") or 0.95
        by_cand: dict[str, list[dict]] = {}
        for r in agg.get("results") or []:
            if r.get("scope") == "task":
                by_cand.setdefault(str(r.get("candidate")), []).append(r)
        for name, rows in by_cand.items():
            lines += _candidate_block(name, rows, conf)
        lines += trend_lines(agg.get("trend") or [], conf)
        for w in agg.get("win_rates") or []:
            lines += compare_entry_lines(WinRateEntry.from_json(w))
        lines.append(f"\nverdict: {str(summary.get('verdict', '?')).upper()}"
                     + (f" ({'; '.join(agg['failures'])})" if agg.get("failures") else ""))
    elif run.kind == "judge" and agg.get("win_rate"):
        w = agg["win_rate"]
        head = agg.get("headline") or {}
        lines.append(f"\nwin rate   {fmt_estimate(w['win_rate'], withheld=withheld_reason(head))}  "
                     f"W/T/L {w.get('n_wins')}/{w.get('n_ties')}/{w.get('n_losses')}")
        if head:
            lines.append(verdict_line(head))
    else:
        keys = ", ".join(sorted(agg)) or "none"
        lines.append(f"aggregates {keys} (harness runs show {run.run_id} --json)")
    for note in agg.get("unverified") or []:
        lines.append(f"unverified: {note}")
    lines.append(f"\nthe whole record: harness runs show {run.run_id} --json; items: {len(run.items):,}")
    return "\n".join(lines)
