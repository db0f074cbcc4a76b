"""Compare candidates against a baseline on a suite: paired statistics and the non-inferiority gate.

`compare_eval_runs` is a pure function of two eval runs (no I/O); `run_compare`
orchestrates: it scores the baseline once (the item cache makes every later
comparison against the same base free), scores each candidate, runs the
adapter canary, optionally judges golden-set win rates, and returns one Run
of kind "compare" (format: docs/run-format.md).

Units. Accuracy differences are fractions (0.01 = 1 point); suite margins for
accuracy are in points. Perplexity differences are in log-perplexity (NLL per
token, natural log), lower is better; a suite margin for perplexity is the
allowed rise in percent of the baseline's perplexity (5.0 = 5%).
The gate fails a task when the lower bound of the interval of
(candidate − baseline) falls below −margin (for perplexity: when the upper
bound of the log-ratio exceeds log(1 + margin/100)).
"""
from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from harness import stats
from harness.backends.base import DEFAULT_BACKEND
from harness.store import Run


@dataclass(frozen=True)
class CompareConfig:
    baseline: str
    candidates: tuple[str, ...]  # model references
    suite: str
    include_paths: tuple[str, ...] = ()  # folders of the user's lm-eval task YAMLs, beside the suite's own
    names: tuple[str, ...] = ()  # display names, one per candidate (default: harness.models.names.default_name)
    baseline_name: str | None = None
    golden: str | None = None
    golden_limit: int | None = None  # first N golden items
    judge: str | None = None  # default: the judges' default (local SmolLM2)
    backend: str = DEFAULT_BACKEND  # hf | vllm (endpoint references use their own)
    limit: int | None = None  # documents per subject, for quick looks
    confidence: float = 0.95
    seed: int = 0
    n_resamples: int = 2000
    check_canary: bool = True
    backend_opts: dict[str, Any] = field(default_factory=dict)


def is_perplexity(metric: str | None) -> bool:
    """Whether a result's metric is a perplexity (differences in log-perplexity, not points).

    Older runs label it "perplexity"; newer ones carry the suite's name, "token_perplexity".

    >>> is_perplexity("token_perplexity"), is_perplexity("acc_norm")
    (True, False)
    """
    return metric in ("perplexity", "token_perplexity")


def _est(e: stats.Estimate) -> dict[str, Any]:
    return {"value": e.value, "lo": e.lo, "hi": e.hi, "confidence": e.confidence, "method": e.method, "n": e.n}


def _accuracy_result(candidate: str, task: str, metric: str, scope: str, group: str | None, base: np.ndarray,
                     cand: np.ndarray, rng: np.random.Generator, confidence: float, n_resamples: int,
                     margin_points: float | None) -> dict[str, Any]:
    diff = stats.bootstrap_accuracy_diff(base, cand, rng, confidence=confidence, n_resamples=n_resamples)
    test = stats.mcnemar_exact(base, cand)
    result: dict[str, Any] = {
        "candidate": candidate, "task": task, "scope": scope, "group": group, "metric": metric, "n": int(len(base)),
        "baseline": float(base.mean()), "candidate_value": float(cand.mean()), "diff": _est(diff),
        "p_value": test.p_value, "n_regressed": test.n_regressed, "n_improved": test.n_improved,
        "mde": stats.min_detectable_effect(len(base), test.discordance_rate, alpha=1 - confidence),
        "margin": None if margin_points is None else margin_points / 100, "verdict": None, "reason": None}
    if margin_points is not None and scope == "task":
        v = stats.check_non_inferiority(diff, margin_points / 100)
        result.update(verdict="pass" if v.passed else "fail", reason=v.reason)
    return result


def _continuous_result(candidate: str, task: str, metric: str, base: np.ndarray, cand: np.ndarray,
                       rng: np.random.Generator, confidence: float, n_resamples: int,
                       margin_points: float | None) -> dict[str, Any]:
    """A task whose metric is continuous per item: a paired bootstrap of the mean difference and a paired
    t-test in place of McNemar; the margin is in points of the metric's scale x 100, as for accuracy."""
    r = stats.compare_paired_means(base, cand, rng, confidence=confidence, n_resamples=n_resamples)
    result: dict[str, Any] = {
        "candidate": candidate, "task": task, "scope": "task", "group": None, "metric": metric, "n": int(len(base)),
        "baseline": float(base.mean()), "candidate_value": float(cand.mean()), "diff": _est(r.diff),
        "p_value": r.p_value, "n_regressed": r.n_lower, "n_improved": r.n_higher, "mde": None, "continuous": True,
        "margin": None if margin_points is None else margin_points / 100, "verdict": None, "reason": None}
    if margin_points is not None:
        v = stats.check_non_inferiority(r.diff, margin_points / 100)
        result.update(verdict="pass" if v.passed else "fail", reason=v.reason)
    return result


def _perplexity_result(candidate: str, task: str, metric: str, base_rows: list[dict], cand_rows: list[dict],
                       rng: np.random.Generator, confidence: float, n_resamples: int,
                       margin_pct: float | None) -> dict[str, Any]:
    d = stats.bootstrap_perplexity_diff([r["nll"] for r in base_rows], [r["n_tokens"] for r in base_rows],
                                        [r["nll"] for r in cand_rows], [r["n_tokens"] for r in cand_rows], rng,
                                        confidence=confidence, n_resamples=n_resamples)
    result: dict[str, Any] = {
        "candidate": candidate, "task": task, "scope": "task", "group": None, "metric": metric,
        "n": len(base_rows), "baseline": d.baseline_ppl, "candidate_value": d.candidate_ppl,
        "diff": _est(d.log_ratio), "ratio": _est(d.ratio), "p_value": None, "mde": None,
        "margin": None if margin_pct is None else math.log1p(margin_pct / 100), "verdict": None, "reason": None}
    if margin_pct is not None:
        v = stats.check_non_inferiority(d.log_ratio, math.log1p(margin_pct / 100), is_higher_better=False)
        result.update(verdict="pass" if v.passed else "fail", reason=v.reason)
    return result




def compare_eval_runs(baseline: Run, candidate: Run, *, candidate_label: str, margins: dict[str, float | None],
                      rng: np.random.Generator, confidence: float = 0.95,
                      n_resamples: int = 2000) -> tuple[list[dict], list[dict], dict[str, list[str]]]:
    """Paired statistics of one candidate against the baseline, from two eval runs.

    Items are paired by (task, item_id); an item scored on one side only is
    left out (and counted in `n_unpaired`). Returns (results, paired items,
    right-to-wrong flips by subject). Holm correction is applied across the
    candidate's task-level p-values.
    """
    by_task: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in baseline.items:
        by_task[r["task"]][r["item_id"]] = r
    cand_by: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in candidate.items:
        cand_by[r["task"]][r["item_id"]] = r
    results: list[dict] = []
    items: list[dict] = []
    flips: dict[str, list[str]] = defaultdict(list)
    # Each result carries the metric its suite names (acc_norm stays acc_norm), read from the baseline
    # run's task summary; runs from before task summaries carried it fall back to the row's kind.
    metrics = {task: t.get("metric") for task, t in (baseline.aggregates.get("tasks") or {}).items()}
    for task, base_items in by_task.items():
        ids = [i for i in base_items if i in cand_by[task]]
        if not ids:
            continue
        pairs = [(base_items[i], cand_by[task][i]) for i in ids]
        first = pairs[0][0]
        if "nll" in first:
            for b, c in pairs:
                items.append({"candidate": candidate_label, "task": task, "item_id": b["item_id"],
                              "subject": b.get("subject"), "baseline_nll": b["nll"], "candidate_nll": c["nll"],
                              "n_tokens": b["n_tokens"]})
            res = _perplexity_result(candidate_label, task, metrics.get(task) or "token_perplexity",
                                     [b for b, _ in pairs], [c for _, c in pairs], rng, confidence, n_resamples,
                                     margins.get(task))
            res["n_unpaired"] = len(base_items) - len(ids)
            results.append(res)
            continue
        # lm-eval rows carry the suite metric's value as `score`; older runs and golden rows a 0/1 field.
        key = "score" if "score" in first else "correct" if "correct" in first else "passed" if "passed" in first \
            else None
        if key is None:
            continue
        scored = [(b, c) for b, c in pairs if b.get(key) is not None and c.get(key) is not None]
        if not scored:
            continue
        metric = metrics.get(task) or ("check_pass_rate" if key == "passed" else "acc")
        if not all(float(x[key]) in (0.0, 1.0) for pair in scored for x in pair):
            res = _continuous_result(candidate_label, task, metric, np.array([float(b[key]) for b, _ in scored]),
                                     np.array([float(c[key]) for _, c in scored]), rng, confidence, n_resamples,
                                     margins.get(task))
            res["n_unpaired"] = len(base_items) - len(scored)
            results.append(res)
            for b, c in scored:
                items.append({"candidate": candidate_label, "task": task, "item_id": b["item_id"],
                              "subject": b.get("subject"), "category": b.get("category"),
                              "baseline_score": float(b[key]), "candidate_score": float(c[key])})
            continue
        for b, c in scored:
            flip = None if b[key] == c[key] else ("right_to_wrong" if b[key] else "wrong_to_right")
            items.append({"candidate": candidate_label, "task": task, "item_id": b["item_id"],
                          "subject": b.get("subject"), "category": b.get("category"),
                          "baseline_correct": bool(b[key]), "candidate_correct": bool(c[key]), "flip": flip})
            if flip == "right_to_wrong":
                flips[b.get("subject") or task].append(b["item_id"])
        base = np.array([float(b[key]) for b, _ in scored])
        cand = np.array([float(c[key]) for _, c in scored])
        res = _accuracy_result(candidate_label, task, metric, "task", None, base, cand, rng, confidence, n_resamples,
                               margins.get(task))
        res["n_unpaired"] = len(base_items) - len(scored)
        results.append(res)
        for scope in ("subject", "category"):
            groups: dict[str, list[int]] = defaultdict(list)
            for j, (b, _) in enumerate(scored):
                if b.get(scope):
                    groups[b[scope]].append(j)
            if len(groups) > 1:
                for g, idx in sorted(groups.items()):
                    results.append(_accuracy_result(candidate_label, task, metric, scope, g, base[idx], cand[idx],
                                                    rng, confidence, n_resamples, None))
    task_level = [r for r in results if r["scope"] == "task" and r["p_value"] is not None]
    if task_level:
        for r, p in zip(task_level, stats.holm_adjust([r["p_value"] for r in task_level])):
            r["p_holm"] = float(p)
    return results, items, dict(flips)


def checkpoint_step(ref: str) -> int | None:
    """The training step in a checkpoint reference ('out/checkpoint-200' -> 200), if any."""
    m = re.search(r"(?:checkpoint|step)[-_]?(\d+)", ref)
    return int(m.group(1)) if m else None


def trend_of(results: Sequence[dict], candidates: Sequence[str],
             steps: dict[str, int | None] | None = None) -> list[dict]:
    """Task-level differences per checkpoint, in step order: the forgetting curve.

    `candidates` are the names results carry; `steps` maps each to its training step (default: the step a
    name spells, 'step-40' or '.../checkpoint-40')."""
    steps = {c: (steps or {}).get(c, checkpoint_step(c)) for c in candidates}
    rows = [{"candidate": r["candidate"], "step": steps[r["candidate"]], "task": r["task"], "metric": r["metric"],
             "diff": r["diff"]} for r in results if r["scope"] == "task" and r["candidate"] in steps]
    return sorted(rows, key=lambda r: (r["task"], r["step"] if r["step"] is not None else -1))


def overall_verdict(results: Sequence[dict]) -> str:
    return "regression" if any(r.get("verdict") == "fail" for r in results) else "pass"
