"""The win rates of a judge run beyond the discrete one: calibrated, judge-free, and what they mean.

    calibrated   from the label log-probabilities of each order: P(candidate
                 better) = p(its label) + 0.5 · p(tie), averaged over the two
                 orders (balanced position calibration, Wang et al. 2023,
                 "Large Language Models are not Fair Evaluators"); only where
                 the backend scores text (hf, vllm)
    discrete     today's verdicts: argmax label per order, orders reduced
                 (harness.stats.estimate_win_rate)
    reference    no judge: on each golden item with an `ideal`, the answer
                 whose embedding (MiniLM) is closer to it wins, ties within
                 EPSILON; ROUGE-L F1 as a second metric

`headline` picks the verdict mode the run reports (auto: calibrated where
label probabilities exist) and says, through judges.trust, whether that win
rate is determined, unverified or undetermined, and why.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Sequence

import numpy as np

from harness import stats
from judges.pairwise import PairJudgment
from judges.trust import assess_win_rate

VERDICT_MODES = ("auto", "calibrated", "discrete")
# Near-equal similarity to the reference is a tie. 0.01 is below the run-to-run spread of either
# metric between two paraphrases of one answer, and above float noise.
EPSILON = {"embedding_similarity": 0.01, "rouge_l": 0.01}
REFERENCE_METRICS = ("embedding_similarity", "rouge_l")  # the first one scored is the headline reference metric


def candidate_probabilities(judged: Sequence[PairJudgment]) -> np.ndarray:
    """(n_prompts, 2) P(candidate better) per order from the stored label probabilities; NaN where none.

    Game 0 shows the candidate as A, game 1 as B. Only log-probability games
    carry probabilities; a generated verdict has none (NaN).
    """
    out = np.full((len(judged), 2), np.nan)
    for i, j in enumerate(judged):
        for col, (game, label) in enumerate(zip(j.games, ("a", "b"))):
            p = (game.raw or {}).get("p") if game.via == "logprobs" else None
            if p and all(k in p for k in ("a", "b", "tie")):
                total = p["a"] + p["b"] + p["tie"]  # stored rounded to 1e-6: renormalise
                out[i, col] = (p[label] + 0.5 * p["tie"]) / total
    return out


def reference_win_rates(metrics: dict[str, list[dict[str, Any]]], rng: np.random.Generator, *,
                        confidence: float, n_resamples: int) -> dict[str, Any]:
    """{metric: ReferenceWinRate as a dict} for each reference metric scored on some item; `metric` names the headline."""
    out: dict[str, Any] = {}
    for m in REFERENCE_METRICS:
        cand = [np.nan if r.get(m) is None else float(r[m]) for r in metrics["candidate"]]
        base = [np.nan if r.get(m) is None else float(r[m]) for r in metrics["baseline"]]
        if not np.isfinite(cand).any():
            continue
        out[m] = asdict(stats.estimate_reference_win_rate(cand, base, rng, epsilon=EPSILON[m], confidence=confidence,
                                                          n_resamples=n_resamples))
    out["metric"] = next((m for m in REFERENCE_METRICS if m in out), None)
    return out


def judge_win_aggregates(judged: Sequence[PairJudgment], discrete: stats.WinRate,
                         metrics: dict[str, list[dict[str, Any]]], rng: np.random.Generator, *, confidence: float,
                         n_resamples: int, verdict_mode: str, validation: dict[str, Any] | None,
                         judge_ref: str) -> dict[str, Any]:
    """Aggregates to add to a judge run: calibrated_win_rate, reference_win_rate, validation, headline, judge_tokens."""
    if verdict_mode not in VERDICT_MODES:
        raise ValueError(f"verdict mode '{verdict_mode}' unknown; choose {', '.join(VERDICT_MODES)}")
    calibrated = stats.estimate_calibrated_win_rate(candidate_probabilities(judged), rng, confidence=confidence,
                                                    n_resamples=n_resamples)
    mode = verdict_mode if verdict_mode != "auto" else ("calibrated" if calibrated.win_rate.n else "discrete")
    est, consistency = ((calibrated.win_rate, calibrated.position_consistency) if mode == "calibrated"
                        else (discrete.win_rate, discrete.position_consistency))
    assessment = assess_win_rate(asdict(est), consistency, validation, mode=mode, judge_ref=judge_ref)
    return {
        "calibrated_win_rate": asdict(calibrated),
        "reference_win_rate": reference_win_rates(metrics, rng, confidence=confidence, n_resamples=n_resamples),
        "validation": validation,
        "headline": {"mode": mode, "win_rate": asdict(est), "position_consistency": consistency,
                     **assessment.to_json()},
        "judge_tokens": token_totals(judged),
    }


def token_totals(judged: Sequence[PairJudgment]) -> dict[str, Any]:
    """Prompt and completion tokens over all games; games whose prompt tokens could not be counted are counted apart."""
    games = [g for j in judged for g in j.games if g.via != "none"]
    prompt = [g.n_prompt_tokens for g in games if g.n_prompt_tokens is not None]
    completion = [g.n_completion_tokens for g in games if g.n_completion_tokens is not None]
    return {"n_games": len(games), "prompt_tokens": int(sum(prompt)), "completion_tokens": int(sum(completion)),
            "n_games_prompt_uncounted": len(games) - len(prompt),
            "n_games_completion_uncounted": len(games) - len(completion)}


@dataclass(frozen=True)
class WinRateEntry:
    """One candidate's win rates against the baseline: the one layout a compare run's `win_rates` rows,
    the report and the CLI read (docs/run-format.md). Estimates are harness.stats estimates as dicts
    ({value, lo, hi, confidence, ...}); names follow harness.stats (n_invalid_verdicts)."""
    candidate: str | None
    judge: str | None
    n_prompts: int | None = None
    win_rate: dict[str, Any] | None = None  # the discrete win rate
    lc_win_rate: dict[str, Any] | None = None  # length-controlled
    n_wins: int | None = None
    n_ties: int | None = None
    n_losses: int | None = None
    n_invalid_verdicts: int | None = None
    n_disagreements: int | None = None
    position_consistency: float | None = None
    first_position_win_rate: float | None = None
    injection_flip_rate: float | None = None
    injection_status: str | None = None
    calibrated_win_rate: dict[str, Any] | None = None
    verdict_mode: str | None = None  # which estimate is the headline: calibrated | discrete
    headline_win_rate: dict[str, Any] | None = None
    status: str | None = None  # determined | unverified | undetermined (judges.trust)
    reasons: list[str] = field(default_factory=list)
    validation: dict[str, Any] | None = None  # the judge's agreement with people (judges.validate)
    unverified: list[str] = field(default_factory=list)  # adapters the canary could not verify
    reference_metric: str | None = None  # the judge-free reference win rate's metric
    reference_epsilon: float | None = None
    reference_win_rate: dict[str, Any] | None = None
    reference_counts: dict[str, Any] | None = None

    @classmethod
    def from_judge(cls, candidate: str | None, judge_ref: str | None, agg: dict[str, Any]) -> "WinRateEntry":
        """From a judge run's aggregates (judges.run)."""
        w, lc = agg.get("win_rate") or {}, agg.get("lc_win_rate") or {}
        head = agg.get("headline") or {}
        ref = agg.get("reference_win_rate") or {}
        metric = ref.get("metric")
        injection = agg.get("injection") or {}
        return cls(
            candidate=candidate, judge=judge_ref, n_prompts=w.get("n_prompts"), win_rate=w.get("win_rate"),
            lc_win_rate=lc.get("lc_win_rate"), n_wins=w.get("n_wins"), n_ties=w.get("n_ties"),
            n_losses=w.get("n_losses"), n_invalid_verdicts=w.get("n_invalid_verdicts"),
            n_disagreements=w.get("n_disagreements"), position_consistency=w.get("position_consistency"),
            first_position_win_rate=w.get("first_position_win_rate"), injection_flip_rate=injection.get("flip_rate"),
            injection_status=(injection.get("assessment") or {}).get("status"),
            calibrated_win_rate=(agg.get("calibrated_win_rate") or {}).get("win_rate"),
            verdict_mode=head.get("mode"), headline_win_rate=head.get("win_rate"), status=head.get("status"),
            reasons=list(head.get("reasons") or []), validation=agg.get("validation"),
            unverified=list(agg.get("unverified") or []), reference_metric=metric,
            reference_epsilon=EPSILON.get(metric or "", math.nan),
            reference_win_rate=(ref.get(metric) or {}).get("win_rate") if metric else None,
            reference_counts={k: (ref.get(metric) or {}).get(k) for k in ("n_wins", "n_ties", "n_losses", "n_unscored")}
            if metric else None)

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> "WinRateEntry":
        """From a stored `win_rates` row; rows written before this record called n_invalid_verdicts `n_invalid`."""
        row = {**row, "n_invalid_verdicts": row.get("n_invalid_verdicts", row.get("n_invalid"))}
        values = {f.name: row[f.name] for f in fields(cls) if row.get(f.name) is not None}
        return cls(**{"candidate": None, "judge": None, **values})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
