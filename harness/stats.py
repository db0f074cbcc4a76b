"""Paired statistics for comparing a candidate model with its baseline.

Pure functions on numpy arrays: no I/O, no printing, inputs never mutated, no
global random state. Every function that resamples takes a
`numpy.random.Generator`. Intervals are percentile-bootstrap intervals at the
`confidence` the caller asks for, and every `Estimate` carries that level:
display code writes "95% interval" from `confidence`, never a bare "CI".

Conventions
    * Every difference is candidate − baseline, so for accuracy and win rate
      positive means the candidate is better; for perplexity positive is worse.
    * The bootstrap resamples the unit of independence: the item (accuracy),
      the document (perplexity), the prompt with both judge orders kept
      together (win rates). Never exploded rows.
    * Ties count as 0.5 of a win. Invalid judge verdicts are NaN, are counted,
      and are never turned into ties or losses.
    * Accuracy and perplexity inputs are aligned item by item and non-empty
      (ValueError otherwise): an empty task is a bug upstream. Judge inputs may
      be all invalid: that is a result, returned as a NaN `Estimate` with n=0
      beside the invalid counts.
    * One unit (n=1), or no variation (all ties, no flipped item), gives a
      zero-width interval. It says nothing; below ~30 units treat any interval
      as rough.

API
    Records: Estimate, McNemar, PairedMeans, PerplexityDiff, GateVerdict, OrderReduction,
             WinRate, LengthControlledWinRate, Kappa, CalibratedWinRate, ReferenceWinRate.
    Accuracy (1-D 0/1 or bool per item):
      mcnemar_exact(baseline, candidate) -> McNemar
      bootstrap_accuracy_diff(baseline, candidate, rng, *, confidence, n_resamples) -> Estimate
      min_detectable_effect(n, discordance_rate, *, alpha, power) -> float
    Continuous per-item metrics:
      compare_paired_means(baseline, candidate, rng, *, confidence, n_resamples) -> PairedMeans
    Perplexity (per-document NLL sums in nats and token counts):
      bootstrap_perplexity_diff(baseline_nll, baseline_tokens, candidate_nll,
                                candidate_tokens, rng, *, confidence, n_resamples) -> PerplexityDiff
    Across tasks:  holm_adjust(p_values) -> ndarray
    Gate:          check_non_inferiority(diff, margin, *, is_higher_better) -> GateVerdict
    Judges (outcomes: float (n_prompts, 2); column 0 = game with the candidate
    shown first, column 1 = shown second; WIN=1.0, TIE=0.5, LOSS=0.0 from the
    candidate's side, NaN = invalid):
      outcomes_from_verdicts(candidate_first, candidate_second) -> ndarray (n, 2)
      reduce_orders(outcomes) -> OrderReduction
      estimate_win_rate(outcomes, rng, *, confidence, n_resamples) -> WinRate
      estimate_lc_win_rate(outcomes, candidate_lengths, baseline_lengths, rng, *,
                           confidence, n_resamples, l2) -> LengthControlledWinRate
      cohen_kappa(rater_a, rater_b, categories) -> Kappa
      estimate_calibrated_win_rate(p_candidate (n, 2), rng, *, confidence, n_resamples) -> CalibratedWinRate
    Judge-free and generic:
      estimate_reference_win_rate(candidate_scores, baseline_scores, rng, *, epsilon, ...) -> ReferenceWinRate
      bootstrap_mean(scores, rng, *, confidence, n_resamples, unit) -> Estimate
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as sps
from scipy.special import expit

WIN, TIE, LOSS = 1.0, 0.5, 0.0  # judge outcomes from the candidate's side; NaN = invalid
_MAX_BLOCK = 1_000_000  # resamples × units held in memory at once


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its `confidence`-level interval [lo, hi] (NaN when n=0)."""

    value: float
    lo: float
    hi: float
    confidence: float  # 0.95 means a 95% interval; report it beside the interval
    n: int  # units the estimate rests on: items, documents or valid prompts
    method: str  # how the interval was made, e.g. "bootstrap over items (percentile, 2000 resamples)"


# ---------------------------------------------------------------- helpers


def _check_level(confidence: float, n_resamples: int) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples!r}")


def _percentile_interval(resampled: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(resampled, [tail, 1 - tail])
    return float(lo), float(hi)


def _resample_indices(rng: np.random.Generator, n: int, n_resamples: int) -> Iterator[np.ndarray]:
    """Blocks of shape (k, n); each row draws n units with replacement. Blocks bound memory."""
    per_block = max(1, _MAX_BLOCK // n)
    for start in range(0, n_resamples, per_block):
        yield rng.integers(0, n, size=(min(per_block, n_resamples - start), n))


def _as_1d(name: str, x: ArrayLike) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per unit), got shape {a.shape}")
    return a


def _paired_correctness(baseline: ArrayLike, candidate: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    pair = []
    for name, x in (("baseline", baseline), ("candidate", candidate)):
        a = _as_1d(name, x)
        bad = ~np.isin(a, (0, 1))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{name} must hold 0/1 correctness; {int(bad.sum())} values do not, "
                             f"first at index {i}: {a[i].item()!r}")
        pair.append(a.astype(np.int8))
    b, c = pair
    if b.size != c.size:
        raise ValueError(f"baseline and candidate must be aligned item by item; got {b.size} and {c.size} items")
    if b.size == 0:
        raise ValueError("no items: baseline and candidate are empty")
    return b, c


# ---------------------------------------------------------------- accuracy


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test on paired correctness; the discordant counts are the flips."""

    n: int  # items
    n_regressed: int  # baseline right, candidate wrong
    n_improved: int  # baseline wrong, candidate right
    p_value: float  # exact, two-sided; 1.0 when nothing flipped

    @property
    def discordance_rate(self) -> float:
        """Share of items on which the two models disagree (feeds `min_detectable_effect`)."""
        return (self.n_regressed + self.n_improved) / self.n


def mcnemar_exact(baseline: ArrayLike, candidate: ArrayLike) -> McNemar:
    """Exact McNemar test of equal accuracy on paired per-item 0/1 correctness.

    Under equal accuracy each discordant item is a fair coin between "improved"
    and "regressed", so the p-value is the two-sided binomial test of
    n_improved out of n_improved + n_regressed at p=0.5 (equals
    `scipy.stats.binomtest(...).pvalue`). No discordant items gives p=1.
    Raises ValueError on non-0/1 values, misaligned or empty arrays.
    """
    b, c = _paired_correctness(baseline, candidate)
    n_regressed = int(np.sum((b == 1) & (c == 0)))
    n_improved = int(np.sum((b == 0) & (c == 1)))
    m = n_regressed + n_improved
    # The binomial at p=0.5 is symmetric: the two-sided p is twice the smaller tail.
    p = 1.0 if m == 0 else min(1.0, 2.0 * float(sps.binom.cdf(min(n_regressed, n_improved), m, 0.5)))
    return McNemar(n=int(b.size), n_regressed=n_regressed, n_improved=n_improved, p_value=p)


def bootstrap_accuracy_diff(baseline: ArrayLike, candidate: ArrayLike, rng: np.random.Generator, *,
                            confidence: float = 0.95, n_resamples: int = 2000) -> Estimate:
    """Accuracy difference (candidate − baseline, as a proportion) with a paired-bootstrap interval.

    Items are resampled with both models' answers kept together. Resampling n
    items only changes how many improved and regressed items are drawn, so we
    draw those two counts from multinomial(n, observed shares): the same
    distribution as resampling indices, in O(n_resamples) memory even for
    14k-item MMLU. No flipped items gives [0, 0]; n=1 a zero-width interval.
    """
    _check_level(confidence, n_resamples)
    b, c = _paired_correctness(baseline, candidate)
    n = int(b.size)
    n_improved, n_regressed = int(np.sum(c > b)), int(np.sum(c < b))
    shares = np.array([n_improved, n_regressed, n - n_improved - n_regressed]) / n
    counts = rng.multinomial(n, shares, size=n_resamples)  # (R, 3)
    resampled = (counts[:, 0] - counts[:, 1]) / n  # (R,)
    lo, hi = _percentile_interval(resampled, confidence)
    return Estimate((n_improved - n_regressed) / n, lo, hi, confidence, n,
                    f"paired bootstrap over items (percentile, {n_resamples} resamples)")


def min_detectable_effect(n: int, discordance_rate: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest accuracy difference (proportion) a two-sided level-`alpha` test finds with `power`.

    Normal approximation to McNemar's test at the observed discordance rate ψ:
    with no true difference the per-item difference (−1, 0 or +1) has variance
    ψ, so the mean has standard error sqrt(ψ/n) and
        MDE = (z[1 − alpha/2] + z[power]) · sqrt(ψ / n).
    It ignores the small −δ² drop in variance under the alternative, so it
    errs slightly large. ψ = 0 (nothing flipped) gives no variance estimate;
    we then use one flip, ψ = 1/n, so the MDE stays positive.
    The same number sizes the gate: identical models fail a non-inferiority
    gate at margin m with probability at most 1 − power when
    m ≥ min_detectable_effect(n, ψ, alpha=1 − confidence, power=power).
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n!r}")
    if not 0 <= discordance_rate <= 1:
        raise ValueError(f"discordance_rate must be in [0, 1], got {discordance_rate!r}")
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"alpha and power must be strictly between 0 and 1, got {alpha!r} and {power!r}")
    psi = max(discordance_rate, 1 / n)
    z = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)
    return float(z * math.sqrt(psi / n))


# ---------------------------------------------------------------- continuous per-item metrics


@dataclass(frozen=True)
class PairedMeans:
    """A continuous per-item metric (an F1, a ROUGE, a partial credit) compared item by item."""

    diff: Estimate  # mean of (candidate − baseline) per item, with a paired-bootstrap interval
    p_value: float  # two-sided paired t-test of a zero mean difference; 1.0 when no item differs
    n_lower: int  # items where the candidate scores lower
    n_higher: int  # items where the candidate scores higher


def compare_paired_means(baseline: ArrayLike, candidate: ArrayLike, rng: np.random.Generator, *,
                         confidence: float = 0.95, n_resamples: int = 2000) -> PairedMeans:
    """Candidate − baseline on a continuous per-item metric: the items are resampled (bootstrap of the
    per-item differences), and the p-value is the paired t-test's (scipy.stats.ttest_rel), whose normal
    approximation holds from a few dozen items. No differing item gives a zero-width interval at 0
    and p = 1; so does a single item (nothing to test). The same nonzero difference on every item
    gives p = 0. Raises ValueError on misaligned, empty or non-finite inputs.

    >>> r = compare_paired_means([0.5, 0.2, 1.0], [0.5, 0.4, 1.0], np.random.default_rng(0))
    >>> round(r.diff.value, 4), r.n_higher, r.n_lower
    (0.0667, 1, 0)
    """
    b = _as_1d("baseline", baseline).astype(float)
    c = _as_1d("candidate", candidate).astype(float)
    if b.size != c.size:
        raise ValueError(f"baseline and candidate must be aligned item by item; got {b.size} and {c.size} items")
    if b.size == 0:
        raise ValueError("no items: baseline and candidate are empty")
    if not (np.isfinite(b).all() and np.isfinite(c).all()):
        raise ValueError("baseline and candidate must be finite per-item values (leave unscored items out)")
    d = c - b  # (n,)
    est = bootstrap_mean(d, rng, confidence=confidence, n_resamples=n_resamples, unit="items")
    est = Estimate(est.value, est.lo, est.hi, confidence, est.n, f"paired {est.method}")
    is_constant = bool(np.ptp(d) <= 1e-12 * max(1.0, float(np.abs(d).max())))  # float noise is no variation
    p = 1.0 if (not d.any() or d.size < 2) else (0.0 if is_constant else float(sps.ttest_rel(c, b).pvalue))
    return PairedMeans(diff=est, p_value=p, n_lower=int(np.sum(d < 0)), n_higher=int(np.sum(d > 0)))


# ---------------------------------------------------------------- perplexity


@dataclass(frozen=True)
class PerplexityDiff:
    """Corpus perplexity comparison; perplexity = exp(sum NLL / sum tokens), natural log."""

    log_ratio: Estimate  # log ppl_cand − log ppl_base = NLL-per-token difference in nats; > 0: candidate worse
    ratio: Estimate  # ppl_cand / ppl_base (the exponentiated log_ratio interval); > 1: candidate worse
    baseline_ppl: float
    candidate_ppl: float


def _as_documents(name: str, nll: ArrayLike, tokens: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s, t = _as_1d(f"{name}_nll", nll).astype(float), _as_1d(f"{name}_tokens", tokens).astype(float)
    if s.size != t.size:
        raise ValueError(f"{name}_nll and {name}_tokens differ in length: {s.size} and {t.size}")
    for what, a, ok in ((f"{name}_nll", s, np.isfinite(s) & (s >= 0)), (f"{name}_tokens", t, t >= 1)):
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            rule = "a finite NLL sum ≥ 0 (nats)" if what.endswith("nll") else "≥ 1 token (drop empty documents)"
            raise ValueError(f"{what}[{i}] = {a[i].item()!r}; each document needs {rule}")
    return s, t


def bootstrap_perplexity_diff(baseline_nll: ArrayLike, baseline_tokens: ArrayLike, candidate_nll: ArrayLike,
                              candidate_tokens: ArrayLike, rng: np.random.Generator, *,
                              confidence: float = 0.95, n_resamples: int = 2000) -> PerplexityDiff:
    """Perplexity difference with a paired bootstrap over documents.

    Inputs are per-document sums of negative log-likelihood (nats, ≥ 0) and
    token counts (≥ 1), aligned document by document. Each resample draws
    documents with both models' scores kept together and recomputes
    sum NLL / sum tokens for each model, so long documents weigh by their
    tokens. Token counts may differ between the models, but perplexities per
    token of different tokenizers are not comparable: the caller decides.
    """
    _check_level(confidence, n_resamples)
    sb, tb = _as_documents("baseline", baseline_nll, baseline_tokens)
    sc, tc = _as_documents("candidate", candidate_nll, candidate_tokens)
    if sb.size != sc.size or sb.size == 0:
        raise ValueError(f"baseline and candidate must score the same non-empty documents; got {sb.size} and {sc.size}")
    n = int(sb.size)
    log_ratio = sc.sum() / tc.sum() - sb.sum() / tb.sum()
    resampled = np.concatenate([
        sc[idx].sum(1) / tc[idx].sum(1) - sb[idx].sum(1) / tb[idx].sum(1)  # (k,)
        for idx in _resample_indices(rng, n, n_resamples)])
    lo, hi = _percentile_interval(resampled, confidence)
    method = f"paired bootstrap over documents (percentile, {n_resamples} resamples)"
    return PerplexityDiff(
        log_ratio=Estimate(float(log_ratio), lo, hi, confidence, n, method),
        ratio=Estimate(math.exp(log_ratio), math.exp(lo), math.exp(hi), confidence, n, method),
        baseline_ppl=math.exp(sb.sum() / tb.sum()), candidate_ppl=math.exp(sc.sum() / tc.sum()))


# ---------------------------------------------------------------- across tasks and the gate


def holm_adjust(p_values: ArrayLike) -> np.ndarray:
    """Holm step-down adjusted p-values, in the input order (reject where adjusted ≤ alpha).

    Sorted ascending, the i-th smallest (i from 1) becomes
    max over j ≤ i of min(1, (m − j + 1) · p_(j)): monotone, capped at 1.
    Empty in, empty out. Raises ValueError on NaN or values outside [0, 1].
    """
    p = _as_1d("p_values", p_values).astype(float)
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"p_values must lie in [0, 1]; got {p.tolist()}")
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = (m - np.arange(m)) * p[order]  # (m,) the step-down multipliers m, m−1, ..., 1
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return adjusted


@dataclass(frozen=True)
class GateVerdict:
    """The non-inferiority gate's decision and why."""

    passed: bool
    reason: str
    bound: float  # the interval end that was checked
    margin: float
    confidence: float


def check_non_inferiority(diff: Estimate, margin: float, *, is_higher_better: bool = True) -> GateVerdict:
    """Pass unless the interval of (candidate − baseline) reaches past the margin on the bad side.

    Higher is better (accuracy, win rate): fail when diff.lo < −margin. Lower is
    better (log-perplexity): fail when diff.hi > margin. The margin is ≥ 0 and in
    the estimate's units (1.0 point of accuracy is 0.01). A two-sided 95%
    interval makes this a one-sided test at 2.5%. See `min_detectable_effect`
    for the margin at which identical models pass reliably. Raises ValueError
    on an estimate without an interval (n=0) rather than guessing.
    """
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number ≥ 0, got {margin!r}")
    if not (math.isfinite(diff.lo) and math.isfinite(diff.hi)):
        raise ValueError(f"cannot gate on an estimate without an interval (n={diff.n}, {diff.method})")
    side, bound, limit = ("lower", diff.lo, -margin) if is_higher_better else ("upper", diff.hi, margin)
    failed = bound < limit if is_higher_better else bound > limit
    level = f"{100 * diff.confidence:g}%"
    verb = ("below" if is_higher_better else "above") if failed else "within"
    reason = f"{side} bound {bound:+.4g} of the {level} interval is {verb} the margin {limit:+.4g}"
    return GateVerdict(passed=not failed, reason=reason, bound=bound, margin=margin, confidence=diff.confidence)


# ---------------------------------------------------------------- judges


def outcomes_from_verdicts(candidate_first: Sequence[str | None],
                           candidate_second: Sequence[str | None]) -> np.ndarray:
    """Judge verdicts per order → outcomes (n_prompts, 2) from the candidate's side.

    A verdict is "a" (the answer shown first wins), "b", "tie", or None
    (invalid). Column 0 is the game with the candidate shown first, column 1
    the game with it shown second; this is the one place orders are swapped.
    """
    if len(candidate_first) != len(candidate_second):
        raise ValueError(f"need both orders for every prompt; got {len(candidate_first)} and {len(candidate_second)}")
    tables = ({"a": WIN, "b": LOSS, "tie": TIE, None: np.nan}, {"a": LOSS, "b": WIN, "tie": TIE, None: np.nan})
    out = np.empty((len(candidate_first), 2))
    for col, (verdicts, table) in enumerate(zip((candidate_first, candidate_second), tables)):
        for i, v in enumerate(verdicts):
            if v not in table:
                raise ValueError(f"verdict {v!r} at prompt {i}, order {col}; choose 'a', 'b', 'tie' or None")
            out[i, col] = table[v]
    return out


def _as_outcomes(outcomes: ArrayLike) -> np.ndarray:
    o = np.asarray(outcomes, dtype=float)  # None → NaN
    o = o.reshape(0, 2) if o.size == 0 else o  # no prompts at all: [] is fine
    if o.ndim != 2 or o.shape[1] != 2:
        raise ValueError(f"outcomes must have shape (n_prompts, 2), both orders per prompt; got {o.shape}")
    bad = ~(np.isnan(o) | np.isin(o, (WIN, TIE, LOSS)))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(f"outcomes[{i}, {j}] = {o[i, j].item()!r}; use 1.0 win, 0.5 tie, 0.0 loss, NaN invalid")
    return o


@dataclass(frozen=True)
class OrderReduction:
    """One outcome per prompt from its two orders."""

    outcomes: np.ndarray  # (n_prompts,) WIN/TIE/LOSS; NaN where either order is invalid (read-only)
    n_disagreements: int  # prompts whose two valid verdicts differ, reduced to TIE
    n_invalid_prompts: int  # prompts with at least one invalid verdict


def reduce_orders(outcomes: ArrayLike) -> OrderReduction:
    """Reduce both orders to one outcome per prompt: agreeing verdicts stand, differing ones are a tie.

    "Differ" means any two unequal valid verdicts (win/loss, and also win/tie).
    A prompt with an invalid verdict in either order is invalid (NaN), not
    decided by its other order: one order alone carries the judge's position
    bias. Empty input gives an empty result.
    """
    o = _as_outcomes(outcomes)
    is_valid = ~np.isnan(o).any(axis=1)  # (n,)
    differs = is_valid & (o[:, 0] != o[:, 1])
    reduced = np.where(differs, TIE, o[:, 0])
    reduced[~is_valid] = np.nan
    reduced.setflags(write=False)
    return OrderReduction(reduced, int(differs.sum()), int((~is_valid).sum()))


@dataclass(frozen=True)
class WinRate:
    """Pairwise win rate of the candidate with the judge's diagnostics."""

    win_rate: Estimate  # (wins + 0.5 × ties) / valid prompts, after reduce_orders
    n_prompts: int  # all prompts, valid or not
    n_wins: int  # n_wins, n_ties, n_losses: valid prompts after reduction
    n_ties: int  # includes n_disagreements
    n_losses: int
    n_disagreements: int
    n_invalid_verdicts: int  # invalid single verdicts, out of 2 × n_prompts
    n_invalid_prompts: int  # prompts left out because either order is invalid
    position_consistency: float  # of prompts with both orders valid, the share whose verdicts agree (NaN if none)
    first_position_win_rate: float  # of valid verdicts, how often the answer shown first wins, ties 0.5 (0.5 = no bias)


def estimate_win_rate(outcomes: ArrayLike, rng: np.random.Generator, *,
                      confidence: float = 0.95, n_resamples: int = 2000) -> WinRate:
    """Win rate = (wins + 0.5 × ties) / n over valid prompts, with a bootstrap interval over prompts.

    `outcomes` is (n_prompts, 2) as in the module docstring. The orders are
    reduced per prompt first (`reduce_orders`), so each resample draws whole
    prompts, both orders together. All invalid (or no prompts) gives a NaN
    estimate with n=0 and the counts; all ties gives [0.5, 0.5].
    """
    _check_level(confidence, n_resamples)
    o = _as_outcomes(outcomes)
    red = reduce_orders(o)
    y = red.outcomes[~np.isnan(red.outcomes)]  # (n_valid,)
    method = f"bootstrap over prompts, both orders together (percentile, {n_resamples} resamples); ties = 0.5"
    if y.size == 0:
        estimate = Estimate(math.nan, math.nan, math.nan, confidence, 0, method)
    else:
        resampled = np.concatenate([y[idx].mean(axis=1) for idx in _resample_indices(rng, y.size, n_resamples)])
        estimate = Estimate(float(y.mean()), *_percentile_interval(resampled, confidence), confidence, int(y.size), method)
    both_valid = ~np.isnan(o).any(axis=1)
    # Seen from the answer shown first: column 0 is the candidate's outcome, column 1 the baseline's.
    first_wins = np.concatenate([o[:, 0], 1.0 - o[:, 1]])
    first_wins = first_wins[~np.isnan(first_wins)]
    return WinRate(
        win_rate=estimate, n_prompts=int(o.shape[0]),
        n_wins=int(np.sum(y == WIN)), n_ties=int(np.sum(y == TIE)), n_losses=int(np.sum(y == LOSS)),
        n_disagreements=red.n_disagreements, n_invalid_verdicts=int(np.isnan(o).sum()),
        n_invalid_prompts=red.n_invalid_prompts,
        position_consistency=float(np.mean(o[both_valid, 0] == o[both_valid, 1])) if both_valid.any() else math.nan,
        first_position_win_rate=float(first_wins.mean()) if first_wins.size else math.nan)


@dataclass(frozen=True)
class LengthControlledWinRate:
    """Win rate predicted at zero length difference (AlpacaEval 2 style)."""

    lc_win_rate: Estimate
    raw_win_rate: float
    length_coef: float  # logit change per unit of tanh(Δlen / length_scale); > 0: the judge favours longer answers
    length_scale: float  # std of Δlen = candidate − baseline length over valid prompts
    n_invalid_prompts: int


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, max_iter: int = 100) -> np.ndarray:
    """Batched Newton fit of logit P(y) = θ0 + θ1·x; x, y (B, n) → θ (B, 2).

    Fractional targets (a tie is 0.5) use the binomial log-likelihood. `l2`
    penalises θ1 only; a 1e-9 ridge on θ0 keeps it finite when a resample
    holds only wins (θ0 then stops near 25, σ ≈ 1).
    """
    theta = np.zeros((x.shape[0], 2))  # (B, 2)
    for _ in range(max_iter):
        p = expit(theta[:, :1] + theta[:, 1:] * x)  # (B, n)
        r, w = p - y, p * (1 - p)  # (B, n)
        g0 = r.sum(1) + 1e-9 * theta[:, 0]  # (B,)
        g1 = (r * x).sum(1) + l2 * theta[:, 1]
        h00, h01, h11 = w.sum(1) + 1e-9, (w * x).sum(1), (w * x * x).sum(1) + l2
        det = h00 * h11 - h01 ** 2
        step = np.stack([(h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det], axis=1)  # (B, 2)
        theta -= step
        if np.abs(step).max() < 1e-9:
            break
    return theta


def estimate_lc_win_rate(outcomes: ArrayLike, candidate_lengths: ArrayLike, baseline_lengths: ArrayLike,
                         rng: np.random.Generator, *, confidence: float = 0.95, n_resamples: int = 1000,
                         l2: float = 1.0) -> LengthControlledWinRate:
    """Length-controlled win rate: the win rate the judge would give at equal lengths.

    Fits, on the user's own prompts, the logistic model of AlpacaEval 2
    (length_controlled_v1) without its per-instruction and per-model terms,
    which need many models:
        logit P(candidate preferred) = θ0 + θ1 · tanh(Δlen / s),
    Δlen = candidate − baseline length (any unit: tokens, characters), s the
    std of Δlen over valid prompts. The target is the reduced outcome per
    prompt (ties 0.5). θ1 carries an L2 penalty `l2`·θ1²/2 (scikit-learn's
    default C=1) so it stays finite when length separates the outcomes; θ0 is
    unpenalised, so with the length term dropped LC is the raw win rate.
    LC win rate = σ(θ0), the prediction at Δlen = 0. The interval refits on
    prompts resampled with both orders together; s stays fixed. s = 0 (no
    variation in Δlen) drops the length term and says so in `method`.
    No valid prompt gives a NaN estimate with n=0.
    """
    _check_level(confidence, n_resamples)
    red = reduce_orders(outcomes)
    lc = _as_1d("candidate_lengths", candidate_lengths).astype(float)
    lb = _as_1d("baseline_lengths", baseline_lengths).astype(float)
    if not (np.isfinite(lc).all() and np.isfinite(lb).all()):
        raise ValueError("candidate_lengths and baseline_lengths must be finite numbers, one per prompt")
    if not lc.size == lb.size == red.outcomes.size:
        raise ValueError(f"need one length per prompt; got {red.outcomes.size} prompts, "
                         f"{lc.size} candidate and {lb.size} baseline lengths")
    if l2 <= 0:
        raise ValueError(f"l2 must be > 0, got {l2!r}")
    is_valid = ~np.isnan(red.outcomes)
    y = red.outcomes[is_valid]  # (n,)
    delta = (lc - lb)[is_valid]  # (n,)
    scale = float(delta.std()) if y.size else 0.0
    x = np.tanh(delta / scale) if scale > 0 else np.zeros_like(delta)
    method = (f"logit P(win) = a + b·tanh(Δlen/{scale:.4g}), L2 {l2:g} on b; bootstrap over prompts, "
              f"both orders together (percentile, {n_resamples} resamples)")
    method += "" if scale > 0 else "; length term dropped: Δlen constant"
    if y.size == 0:
        return LengthControlledWinRate(Estimate(math.nan, math.nan, math.nan, confidence, 0, method),
                                       math.nan, math.nan, scale, red.n_invalid_prompts)
    theta = _fit_logistic(x[None, :], y[None, :], l2)[0]
    resampled = np.concatenate([expit(_fit_logistic(x[idx], y[idx], l2)[:, 0])
                                for idx in _resample_indices(rng, y.size, n_resamples)])
    lo, hi = _percentile_interval(resampled, confidence)
    return LengthControlledWinRate(
        lc_win_rate=Estimate(float(expit(theta[0])), lo, hi, confidence, int(y.size), method),
        raw_win_rate=float(y.mean()), length_coef=float(theta[1]), length_scale=scale,
        n_invalid_prompts=red.n_invalid_prompts)


@dataclass(frozen=True)
class Kappa:
    """Cohen's kappa between two raters (e.g. the judge and human labels)."""

    kappa: float  # NaN when n=0 or chance agreement is 1 (both raters use one same category)
    observed_agreement: float
    expected_agreement: float  # by chance, from each rater's category shares
    n: int  # pairs with both labels present
    n_missing: int  # pairs left out because a label is None or NaN (e.g. an invalid verdict)


def cohen_kappa(rater_a: Sequence[object], rater_b: Sequence[object], categories: Sequence[object]) -> Kappa:
    """Cohen's kappa = (p_o − p_e) / (1 − p_e) over `categories` (e.g. ("a", "b", "tie")).

    Pairs where either label is missing (None or NaN) are left out and counted.
    A label outside `categories` raises ValueError naming it and the choices.
    """
    if len(rater_a) != len(rater_b):
        raise ValueError(f"raters must label the same items; got {len(rater_a)} and {len(rater_b)} labels")
    index = {c: k for k, c in enumerate(categories)}
    if len(index) != len(categories):
        raise ValueError(f"categories must be distinct, got {list(categories)}")

    def is_missing(v: object) -> bool:
        return v is None or (isinstance(v, float) and math.isnan(v))

    table = np.zeros((len(index), len(index)))  # (K, K) rater_a × rater_b
    n_missing = 0
    for i, (a, b) in enumerate(zip(rater_a, rater_b)):
        if is_missing(a) or is_missing(b):
            n_missing += 1
            continue
        for v in (a, b):
            if v not in index:
                raise ValueError(f"label {v!r} at item {i} is not a category; choose from {list(categories)}")
        table[index[a], index[b]] += 1
    n = int(table.sum())
    if n == 0:
        return Kappa(math.nan, math.nan, math.nan, 0, n_missing)
    p = table / n
    observed, expected = float(np.trace(p)), float(p.sum(1) @ p.sum(0))
    kappa = math.nan if expected == 1 else (observed - expected) / (1 - expected)
    return Kappa(kappa, observed, expected, n, n_missing)


# ---------------------------------------------------------------- calibrated and judge-free win rates


def bootstrap_mean(scores: ArrayLike, rng: np.random.Generator, *, confidence: float = 0.95,
                   n_resamples: int = 2000, unit: str = "prompts") -> Estimate:
    """Mean of per-unit scores with a percentile-bootstrap interval over units; NaN scores are left out.

    No finite score gives a NaN estimate with n=0. Scores that are all equal
    give a zero-width interval: the caller must not present it as a
    measurement (judges.trust says why).
    """
    _check_level(confidence, n_resamples)
    s = _as_1d("scores", scores).astype(float)
    y = s[~np.isnan(s)]  # (n_valid,)
    method = f"bootstrap over {unit} (percentile, {n_resamples} resamples)"
    if y.size == 0:
        return Estimate(math.nan, math.nan, math.nan, confidence, 0, method)
    resampled = np.concatenate([y[idx].mean(axis=1) for idx in _resample_indices(rng, y.size, n_resamples)])
    return Estimate(float(y.mean()), *_percentile_interval(resampled, confidence), confidence, int(y.size), method)


@dataclass(frozen=True)
class CalibratedWinRate:
    """Win rate from the judge's label probabilities, both orders averaged (balanced position calibration)."""

    win_rate: Estimate  # mean over valid prompts of the per-prompt score
    n_prompts: int
    n_invalid_prompts: int  # prompts with either order lacking label probabilities
    first_position_bias: float  # mean over valid prompts of (p_first − p_second) / 2: what averaging cancels
    position_consistency: float  # after removing that mean bias, share of prompts whose two orders lean the same way


def estimate_calibrated_win_rate(p_candidate: ArrayLike, rng: np.random.Generator, *, confidence: float = 0.95,
                                 n_resamples: int = 2000) -> CalibratedWinRate:
    """Calibrated win rate from P(candidate better) per order, shape (n_prompts, 2), NaN = not scored.

    Column 0 is the game with the candidate shown first, column 1 shown
    second; P(candidate better) = p(its label) + 0.5 · p(tie) in that game.
    The per-prompt score is the mean of the two columns, so a judge that adds
    a constant β to whichever answer is shown first has that β cancel:
    (q + β + q − β) / 2 = q. The win rate is the mean score, its interval a
    bootstrap over prompts (both orders together). A prompt is valid only
    when both orders are scored.

    `position_consistency` asks whether the orders agree once the judge's
    average first-position preference β̂ is removed: the share of valid
    prompts where p_first − β̂ and p_second + β̂ sit on the same side of 0.5
    (exactly 0.5 is its own side, so a judge that says "tie" in both orders is
    consistent). A judge driven by position alone has identical scores on
    every prompt: consistency 1, but a zero-width interval (no information).
    """
    p = np.asarray(p_candidate, dtype=float)
    p = p.reshape(0, 2) if p.size == 0 else p
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"p_candidate must have shape (n_prompts, 2), both orders per prompt; got {p.shape}")
    finite = p[~np.isnan(p)]
    if ((finite < 0) | (finite > 1)).any():
        raise ValueError("p_candidate must hold probabilities in [0, 1] (NaN = not scored)")
    is_valid = ~np.isnan(p).any(axis=1)
    v = p[is_valid]  # (n_valid, 2)
    scores = np.where(is_valid, p.mean(axis=1), np.nan)  # (n,)
    estimate = bootstrap_mean(scores, rng, confidence=confidence, n_resamples=n_resamples,
                              unit="prompts, both orders together")
    if v.shape[0] == 0:
        return CalibratedWinRate(estimate, int(p.shape[0]), int((~is_valid).sum()), math.nan, math.nan)
    bias = float(np.mean(v[:, 0] - v[:, 1]) / 2)
    side = np.sign(np.round(np.stack([v[:, 0] - bias, v[:, 1] + bias], axis=1) - 0.5, 9))  # (n_valid, 2)
    return CalibratedWinRate(estimate, int(p.shape[0]), int((~is_valid).sum()), bias,
                             float(np.mean(side[:, 0] == side[:, 1])))


@dataclass(frozen=True)
class ReferenceWinRate:
    """Judge-free win rate: on each prompt the answer closer to the reference wins."""

    win_rate: Estimate  # (wins + 0.5 × ties) / scored prompts
    n_wins: int
    n_ties: int  # |candidate − baseline| ≤ epsilon
    n_losses: int
    n_unscored: int  # prompts without a score on either side (no reference answer)
    epsilon: float


def estimate_reference_win_rate(candidate_scores: ArrayLike, baseline_scores: ArrayLike, rng: np.random.Generator, *,
                                epsilon: float, confidence: float = 0.95, n_resamples: int = 2000) -> ReferenceWinRate:
    """Win rate from per-prompt similarity to the reference (higher is closer), with a paired bootstrap over prompts.

    A prompt is a win when candidate − baseline > epsilon, a loss when it is
    < −epsilon, else a tie (0.5). NaN on either side leaves the prompt
    unscored, counted. Both answers of a prompt are resampled together.
    """
    c = _as_1d("candidate_scores", candidate_scores).astype(float)
    b = _as_1d("baseline_scores", baseline_scores).astype(float)
    if c.size != b.size:
        raise ValueError(f"need one score per prompt on each side; got {c.size} and {b.size}")
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise ValueError(f"epsilon must be a finite number ≥ 0, got {epsilon!r}")
    d = c - b  # (n,) NaN where unscored
    outcome = np.where(d > epsilon, WIN, np.where(d < -epsilon, LOSS, TIE))
    outcome[np.isnan(d)] = np.nan
    est = bootstrap_mean(outcome, rng, confidence=confidence, n_resamples=n_resamples,
                         unit="prompts, both answers together")
    est = Estimate(est.value, est.lo, est.hi, est.confidence, est.n, est.method + "; ties = 0.5")
    return ReferenceWinRate(est, int(np.sum(outcome == WIN)), int(np.sum(outcome == TIE)),
                            int(np.sum(outcome == LOSS)), int(np.isnan(d).sum()), float(epsilon))
