"""Runs as pandas frames, for the Streamlit report and the exports.

Pure functions on `harness.store` runs: no Streamlit, no printing, no writes.
Readers are tolerant: a key missing from a run (an older format, a partial
or failed run) becomes NaN/None in the frame, never an exception, because
the report must show whatever is in the store. Inputs are never mutated.

Differences are candidate − baseline (docs/run-format.md). In a judge run,
game 0 shows the candidate as answer A and game 1 shows it as answer B, so
a verdict "a" means "candidate" in game 0 and "baseline" in game 1.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from harness.store import Run, list_runs
from judges.winrate import WinRateEntry

FINETUNE_MANIFEST = "harness_manifest.json"  # harness.models.resolve.MANIFEST; named here to avoid importing torch-side code
RUN_COLUMNS = ["run_id", "kind", "status", "created_utc", "suite", "suite_version", "models", "summary", "path"]
# Verdicts in the judge's terms mapped to the candidate's side, per game order.
_SIDE = ({"a": "candidate", "b": "baseline", "tie": "tie"}, {"a": "baseline", "b": "candidate", "tie": "tie"})


def runs_frame(runs_dir: Path) -> pd.DataFrame:
    """The run index as a frame, newest first; empty (with the columns) when there is no index.

    `created` is a UTC timestamp (NaT when unparseable); `models` stays a list.
    """
    df = pd.DataFrame(list_runs(Path(runs_dir)), columns=RUN_COLUMNS)
    df["created"] = pd.to_datetime(df["created_utc"], utc=True, errors="coerce", format="ISO8601")
    return df


def filter_runs(df: pd.DataFrame, *, model: str = "", suites: Sequence[str] = (), kinds: Sequence[str] = (),
                statuses: Sequence[str] = (), since: Any = None, until: Any = None) -> pd.DataFrame:
    """Rows matching every given filter: model substring, suite/kind/status membership, date range.

    Empty filters match everything; `since`/`until` are dates (inclusive, UTC).
    """
    keep = pd.Series(True, index=df.index)
    if model:
        keep &= df["models"].map(lambda ms: any(model in m for m in ms or []))
    for column, allowed in (("suite", suites), ("kind", kinds), ("status", statuses)):
        if allowed:
            keep &= df[column].isin(list(allowed))
    if since is not None:
        keep &= df["created"] >= pd.Timestamp(since, tz="UTC")
    if until is not None:
        keep &= df["created"] < pd.Timestamp(until, tz="UTC") + pd.Timedelta(days=1)
    return df[keep]


def _estimate(d: Any) -> tuple[float, float, float]:
    """(value, lo, hi) from an estimate dict; NaN for whatever is missing."""
    d = d if isinstance(d, dict) else {}
    return tuple(_num(d.get(k)) for k in ("value", "lo", "hi"))  # type: ignore[return-value]


def _num(x: Any) -> float:
    try:
        return float(x) if x is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _candidate_fields(r: dict[str, Any]) -> tuple[str | None, float]:
    """(candidate reference, candidate metric value) from one result row.

    docs/run-format.md names both "candidate" (a JSON object keeps only the
    last), so the reference may also come as candidate_ref/model and the
    value as candidate_value; whichever of them is present is used.
    """
    cand = r.get("candidate")
    ref = cand if isinstance(cand, str) else r.get("candidate_ref") or r.get("model")
    value = r.get("candidate_value", cand if not isinstance(cand, str) else None)
    return ref, _num(value)


def compare_results(run: Run) -> pd.DataFrame:
    """A compare run's `results` flattened: one row per (candidate, task, scope, group).

    Adds `diff`, `lo`, `hi`, `confidence` from the nested `diff` estimate.
    """
    rows = []
    for r in run.aggregates.get("results") or []:
        value, lo, hi = _estimate(r.get("diff"))
        ref, cand_value = _candidate_fields(r)
        rows.append({"candidate": ref, "task": r.get("task"), "scope": r.get("scope", "task"),
                     "group": r.get("group"), "metric": r.get("metric"), "n": r.get("n"),
                     "baseline": _num(r.get("baseline")), "candidate_value": cand_value,
                     "diff": value, "lo": lo, "hi": hi, "confidence": _num((r.get("diff") or {}).get("confidence")),
                     "p_value": _num(r.get("p_value")), "p_holm": _num(r.get("p_holm")), "mde": _num(r.get("mde")),
                     "margin": _num(r.get("margin")), "verdict": r.get("verdict"), "reason": r.get("reason")})
    return pd.DataFrame(rows, columns=["candidate", "task", "scope", "group", "metric", "n", "baseline",
                                       "candidate_value", "diff", "lo", "hi", "confidence", "p_value", "p_holm",
                                       "mde", "margin", "verdict", "reason"])


def win_rates(run: Run) -> pd.DataFrame:
    """Win-rate rows from a compare run's `win_rates`, or the one row a judge run holds.

    Columns: candidate, judge, n_prompts, win_rate/lo/hi, lc_win_rate/lo/hi,
    confidence, n_wins, n_ties, n_losses, n_invalid_verdicts, n_disagreements,
    position_consistency, first_position_win_rate, injection_flip_rate;
    and (runs since judges.winrate) verdict_mode, headline_win_rate/lo/hi,
    status (determined | unverified | undetermined), reasons,
    reference_metric, reference_win_rate/lo/hi (judge-free), validation
    (the judge's agreement with people, as text).
    """
    if run.kind == "judge":
        entries = [_judge_win_row(run)]
    else:
        entries = [WinRateEntry.from_json(w) for w in run.aggregates.get("win_rates") or []]
    rows = []
    for entry in entries:
        w = entry.to_json()
        wr, lc = _estimate(w.get("win_rate")), _estimate(w.get("lc_win_rate"))
        head, ref = _estimate(w.get("headline_win_rate")), _estimate(w.get("reference_win_rate"))
        rows.append({"candidate": w.get("candidate"), "judge": w.get("judge"), "n_prompts": w.get("n_prompts"),
                     "win_rate": wr[0], "win_rate_lo": wr[1], "win_rate_hi": wr[2],
                     "lc_win_rate": lc[0], "lc_win_rate_lo": lc[1], "lc_win_rate_hi": lc[2],
                     "confidence": _num((w.get("win_rate") or {}).get("confidence")),
                     **{k: w.get(k) for k in ("n_wins", "n_ties", "n_losses", "n_invalid_verdicts",
                                                          "n_disagreements")},
                     **{k: _num(w.get(k)) for k in ("position_consistency", "first_position_win_rate",
                                                     "injection_flip_rate")},
                     "verdict_mode": w.get("verdict_mode"), "headline_win_rate": head[0],
                     "headline_win_rate_lo": head[1], "headline_win_rate_hi": head[2], "status": w.get("status"),
                     "reasons": "; ".join(w.get("reasons") or []), "reference_metric": w.get("reference_metric"),
                     "reference_win_rate": ref[0], "reference_win_rate_lo": ref[1], "reference_win_rate_hi": ref[2],
                     "validation": _validation_text(w.get("validation"), w.get("verdict_mode"))})
    return pd.DataFrame(rows)


def _validation_text(validation: Any, mode: Any) -> str | None:
    """'51% [47%, 55%] of 500 HH pairs (run ...)' for the verdict mode shown, or None when never validated."""
    if not isinstance(validation, dict):
        return None
    est = (validation.get("modes") or {}).get(mode)
    if not isinstance(est, dict):
        return f"no {mode} agreement in run {validation.get('run_id')}"
    value, lo, hi = _estimate(est)
    return (f"{value:.0%} [{lo:.0%}, {hi:.0%}] of {validation.get('n_pairs')} {validation.get('source')} pairs "
            f"(run {validation.get('run_id')})")


def _judge_win_row(run: Run) -> WinRateEntry:
    """A judge run's win rates as the entry a compare run stores."""
    roles = {m.get("role"): m.get("name") or m.get("ref")  # names since #18; older runs show their reference
             for m in run.manifest.get("models") or [] if isinstance(m, dict)}
    judge = run.aggregates.get("judge") or run.manifest.get("judge") or {}
    return WinRateEntry.from_judge(roles.get("candidate"), roles.get("judge") or judge.get("name"), run.aggregates)


def trend_frame(run: Run) -> pd.DataFrame:
    """A compare run's checkpoint `trend`: candidate, step, task, metric, diff, lo, hi (by task, then step).

    `step` is NaN for a candidate whose reference names no step; `metric` is None when absent.
    """
    rows = [{"candidate": t.get("candidate"), "step": _num(t.get("step")), "task": t.get("task"), "metric": t.get("metric"),
             **dict(zip(("diff", "lo", "hi"), _estimate(t.get("diff"))))}
            for t in run.aggregates.get("trend") or []]
    df = pd.DataFrame(rows, columns=["candidate", "step", "task", "metric", "diff", "lo", "hi"])
    return df.sort_values(["task", "step", "candidate"], kind="stable").reset_index(drop=True)


def _rationale(game: dict[str, Any]) -> str:
    """What the judge said: its replies, or the label probabilities when it was scored by log-probabilities."""
    raw = game.get("raw") or {}
    if raw.get("replies"):
        return "\n---\n".join(str(r) for r in raw["replies"])
    if raw.get("p"):
        return ", ".join(f"p({k})={_num(v):.3f}" for k, v in raw["p"].items())
    return ""


def _game_side(game: dict[str, Any], order: int) -> str:
    verdict = game.get("verdict")
    if verdict is None:
        return f"invalid: {game.get('failure_reason') or 'no reason given'}"
    return _SIDE[order].get(str(verdict), str(verdict))


def _p_baseline(games: list[dict[str, Any]]) -> float:
    """Mean probability the judge gave the baseline over the games scored by log-probabilities (NaN if none)."""
    ps = []
    for order, g in enumerate(games[:2]):
        p = (g.get("raw") or {}).get("p") or {}
        label = "b" if order == 0 else "a"
        if label in p:
            ps.append(_num(p[label]))
    return sum(ps) / len(ps) if ps else math.nan


def judge_prompts(run: Run) -> pd.DataFrame:
    """One row per judged prompt: texts, both verdicts from the candidate's side, rationale, regression keys.

    `loss` is 1 − outcome (1 = the baseline won both orders, NaN = invalid);
    `p_baseline` breaks ties among equal losses. Sort with `sort_by_regression`.
    """
    rows = []
    for it in run.items:
        games = [g for g in it.get("games") or [] if isinstance(g, dict)]
        games += [{}] * (2 - len(games))
        cand, base = it.get("candidate") or {}, it.get("baseline") or {}
        outcome = _num(it.get("outcome"))
        rows.append({"item_id": str(it.get("item_id", "")), "question": str(it.get("question") or ""),
                     "ideal": it.get("ideal"), "candidate_output": str(cand.get("output") or ""),
                     "baseline_output": str(base.get("output") or ""), "outcome": outcome, "loss": 1 - outcome,
                     "p_baseline": _p_baseline(games),
                     "verdict_candidate_first": _game_side(games[0], 0), "verdict_candidate_second": _game_side(games[1], 1),
                     "rationale_candidate_first": _rationale(games[0]), "rationale_candidate_second": _rationale(games[1]),
                     "orders_disagree": bool(it.get("orders_disagree")),
                     "candidate_tokens": cand.get("n_tokens"), "baseline_tokens": base.get("n_tokens")})
    return pd.DataFrame(rows, columns=["item_id", "question", "ideal", "candidate_output", "baseline_output", "outcome",
                                       "loss", "p_baseline", "verdict_candidate_first", "verdict_candidate_second",
                                       "rationale_candidate_first", "rationale_candidate_second", "orders_disagree",
                                       "candidate_tokens", "baseline_tokens"])


def sort_by_regression(prompts: pd.DataFrame) -> pd.DataFrame:
    """Largest regression first: baseline wins, then by the judge's confidence in the baseline; invalid last."""
    return prompts.sort_values(["loss", "p_baseline", "item_id"], ascending=[False, False, True],
                               na_position="last", kind="stable").reset_index(drop=True)


def item_regressions(run: Run) -> pd.DataFrame:
    """A compare run's per-item rows with `regression` (> 0 is worse), largest first.

    Accuracy items: 1 for right→wrong, −1 for wrong→right, 0 otherwise.
    Continuous metrics (a per-item F1): baseline − candidate score.
    Perplexity items: candidate − baseline NLL per token.
    """
    df = pd.DataFrame(run.items)
    if df.empty:
        return pd.DataFrame(columns=["candidate", "task", "subject", "category", "item_id", "regression"])
    for col in ("candidate", "task", "subject", "category", "item_id", "flip", "baseline_nll", "candidate_nll",
                "n_tokens", "baseline_score", "candidate_score"):
        if col not in df:
            df[col] = None
    flip = df["flip"].map({"right_to_wrong": 1.0, "wrong_to_right": -1.0}).fillna(0.0)
    drop = pd.to_numeric(df["baseline_score"], errors="coerce") - pd.to_numeric(df["candidate_score"], errors="coerce")
    per_token = (pd.to_numeric(df["candidate_nll"], errors="coerce") - pd.to_numeric(df["baseline_nll"], errors="coerce")) \
        / pd.to_numeric(df["n_tokens"], errors="coerce")
    df = df.assign(regression=per_token.where(per_token.notna(), drop.where(drop.notna(), flip)))
    return df.sort_values("regression", ascending=False, kind="stable").reset_index(drop=True)


def paginate(df: pd.DataFrame, page: int, page_size: int) -> tuple[pd.DataFrame, int]:
    """(rows of 1-based `page`, number of pages); a page past the end is clamped to the last one."""
    n_pages = max(1, math.ceil(len(df) / page_size))
    page = min(max(1, page), n_pages)
    return df.iloc[(page - 1) * page_size: page * page_size], n_pages


def model_dirs(refs: Iterable[str]) -> list[Path]:
    """Local directories named by model references: `./ckpt`, or the adapter of `BASE+ADAPTER`."""
    out: list[Path] = []
    for ref in refs:
        part = str(ref).split("+", 1)[1] if "+" in str(ref) else str(ref)
        if ":" in part.split("/")[0]:
            continue  # openai:MODEL@URL: nothing local to read
        p = Path(part).expanduser()
        if p not in out:
            out.append(p)
    return out


def training_manifests(dirs: Iterable[Path]) -> dict[str, dict[str, Any]]:
    """{directory: finetune manifest} for each directory holding a readable harness_manifest.json."""
    found: dict[str, dict[str, Any]] = {}
    for d in dirs:
        path = Path(d) / FINETUNE_MANIFEST
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # not a finetune output, or damaged: the training view just leaves it out
        if isinstance(manifest, dict):
            found[str(d)] = manifest
    return found


def loss_frame(manifest: dict[str, Any]) -> pd.DataFrame:
    """A finetune manifest's `loss_history` as rows of (split, step, loss); empty when absent."""
    history = manifest.get("loss_history") or {}
    rows = [{"split": split, "step": _num(p.get("step")), "loss": _num(p.get("loss"))}
            for split, points in history.items() if isinstance(points, list)
            for p in points if isinstance(p, dict)]
    return pd.DataFrame(rows, columns=["split", "step", "loss"])


GOLDEN_COLUMNS = ["item_id", "output chars", "failed checks", "checks", "result", "task", "subject", "passed",
                  "check list", "prompt", "output", "failure_reasons", "finish_reason", "ideal", "unscored_reason"]


def golden_items(run: Run) -> pd.DataFrame:
    """An eval run's golden-set items (rows with an `output`): prompt, output, checks and pass/fail.

    `result` is pass, fail, unchecked (the item has no checks) or unscored (no
    output, e.g. a prompt longer than the context). `checks` describes the
    item's checks when the run stored them; `failed checks` counts the
    failure reasons. Other items (multiple choice, perplexity) are left out.
    """
    rows = []
    for it in run.items:
        if "output" not in it:
            continue
        passed, reasons = it.get("passed"), [str(r) for r in it.get("failure_reasons") or []]
        result = ("unscored" if it.get("unscored_reason") else "unchecked" if passed is None
                  else "pass" if passed else "fail")
        checks = it.get("checks") if isinstance(it.get("checks"), dict) else {}
        n_checks = (checks.get("regex") is not None) + len(checks.get("must_include") or []) \
            + (checks.get("json_schema") is not None) if checks else math.nan
        output = it.get("output")
        rows.append({"task": it.get("task"), "item_id": str(it.get("item_id", "")), "subject": it.get("subject"),
                     "passed": passed, "result": result, "failed checks": len(reasons), "checks": n_checks,
                     "check list": check_text(checks),
                     "output chars": len(output) if isinstance(output, str) else math.nan,
                     "finish_reason": it.get("finish_reason"), "prompt": _prompt_text(it),
                     "output": "" if output is None else str(output), "failure_reasons": "; ".join(reasons),
                     "ideal": it.get("ideal"), "unscored_reason": it.get("unscored_reason") or ""})
    return pd.DataFrame(rows, columns=GOLDEN_COLUMNS)


def _prompt_text(item: dict[str, Any]) -> str:
    """The item's prompt, or its chat turns one per line; empty when the run did not store it."""
    if item.get("prompt") is not None:
        return str(item["prompt"])
    turns = item.get("messages") or []
    return "\n".join(f"{t.get('role')}: {t.get('content')}" for t in turns if isinstance(t, dict))


def check_text(checks: Any) -> str:
    """An item's checks in one line ('regex ^\\W*bonjour; must include: bonjour'); empty when none."""
    if not isinstance(checks, dict):
        return ""
    parts = [f"regex {checks['regex']}"] if checks.get("regex") is not None else []
    parts += [f"must include: {', '.join(map(str, checks['must_include']))}"] if checks.get("must_include") else []
    parts += ["JSON schema: " + json.dumps(checks["json_schema"])] if checks.get("json_schema") is not None else []
    return "; ".join(parts)


def stepped_trend(trend: pd.DataFrame) -> pd.DataFrame:
    """The trend rows whose candidate is a checkpoint (has a step), with a `line` per training run and task.

    A training run is the candidate name with its step left out ('out/checkpoint-200' -> 'out/checkpoint-*'),
    so the checkpoints of one run join into one line per task; empty when no candidate names a step.
    """
    rows = trend[trend["step"].notna()]
    family = rows["candidate"].astype(str).str.replace(r"(checkpoint|step)([-_]?)\d+", r"\1\2*", regex=True)
    single = family.nunique() <= 1
    line = rows["task"].astype(str) if single else family + " · " + rows["task"].astype(str)
    return rows.assign(line=line).reset_index(drop=True)
