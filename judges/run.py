"""`run_judge`: answers from two models on a golden set, judged pairwise in both orders, stored as a Run.

    run_judge(settings, JudgeRunConfig(golden=..., candidate=..., baseline=...)) -> Run (unsaved)

Steps: load the golden items; open the models (on vllm, one engine per base
serves the base and all its adapters, judge included when it shares the
base); generate both models' answers greedily (cached under "golden@1", the
same key `harness eval` uses, so answers are shared); judge every prompt in
both orders (cached under the judge config's tag); compute the statistics
with harness.stats; score judge-free metrics (cached too); run the injection
probe. A rerun whose answers and judgments are all cached asks no model
anything, so none loads and no engine starts.

`judge_golden` is the part after generation, for callers (e.g. `harness
compare --golden`) that already hold the answers and an open judge.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness import stats
from harness.backends.base import DEFAULT_BACKEND, call_per_item_on_overflow
from harness.backends.cache import CachedBackend, ItemCache
from harness.backends.canary import canary_refs, unverified, verify_adapters
from harness.backends.factory import open_models
from harness.backends.hf_prefix import with_shared_prefix
from harness.errors import HarnessError
from harness.models.resolve import resolve
from harness.records import Generation
from harness.settings import Settings
from harness.store import Run
from harness.suites.golden import GENERATION_TAG, GoldenItem, load_golden_set
from judges.config import iter_jsonl, load_judge_config
from judges.injection import measure_injection
from judges.judge import Judge, chat_renderer, token_counter
from judges.metrics import cached_embedder, score_outputs, summarize_metrics
from judges.pairwise import PairInput, grade_answers, judge_pairs
from judges.trust import assess_injection
from judges.validate import latest_validation
from judges.winrate import judge_win_aggregates

DEFAULT_JUDGE = "smollm2-135m-instruct"
HUMAN_CHOICES = ("candidate", "baseline", "tie")


@dataclass(frozen=True)
class JudgeRunConfig:
    golden: str  # golden JSONL path, or a named set: self_instruct, alpaca_heldout
    candidate: str  # model references
    baseline: str
    judge: str = DEFAULT_JUDGE
    judge_config: str = "pairwise"  # name in judges/configs or a YAML path
    backend: str = DEFAULT_BACKEND  # hf | vllm (endpoint references use their own)
    limit: int | None = None  # first N golden items
    max_new_tokens: int = 256  # answers' length cap
    grade: bool = False  # also grade each answer 1-10 with the "single" config
    human_labels: str | None = None  # JSONL {id, preferred: candidate|baseline|tie} for Cohen's kappa
    use_injection_probe: bool = True
    use_embeddings: bool = True
    check_canary: bool = True  # False: adapters are not probed and the run is marked unverified
    seed: int = 0
    confidence: float = 0.95
    n_resamples: int = 2000
    backend_opts: dict[str, Any] = field(default_factory=dict)
    verdict_mode: str = "auto"  # auto | calibrated | discrete: which win rate is the headline (judges.winrate)


def question_text(item: GoldenItem) -> str:
    """What the judge sees as the question: the prompt, or the chat's turns as labelled text."""
    if item.prompt is not None:
        return item.prompt
    return "\n\n".join(f"[{m.role}]\n{m.content}" for m in item.messages or [])


def load_human_labels(path: Path) -> dict[str, str]:
    """{item id: candidate|baseline|tie} from JSONL {"id", "preferred"}; HarnessError names file and line."""
    labels = {}
    for line_no, d in iter_jsonl(path):
        if not isinstance(d, dict) or not isinstance(d.get("id"), str) or d.get("preferred") not in HUMAN_CHOICES:
            raise HarnessError(f"{path}:{line_no}: need {{\"id\": str, \"preferred\": "
                               f"{' | '.join(HUMAN_CHOICES)}}}; got {json.dumps(d)[:120]}")
        labels[d["id"]] = d["preferred"]
    return labels


def _unscored(item: GoldenItem, side: str, error: Exception) -> dict[str, Any]:
    where = f" ({item.source})" if item.source else ""
    return {"item_id": item.id, "source": item.source, "side": side,
            "reason": f"item '{item.id}'{where}: {side} answer: {error}"}


def _side(outcome: float) -> str | None:
    return None if math.isnan(outcome) else {stats.WIN: "candidate", stats.LOSS: "baseline", stats.TIE: "tie"}[outcome]


def judge_golden(judge: Judge, items: Sequence[GoldenItem], candidate: Sequence[Generation],
                 baseline: Sequence[Generation], rng: np.random.Generator, *, confidence: float = 0.95,
                 n_resamples: int = 2000, grader: Judge | None = None, embedder: Any = None,
                 metric_cache: ItemCache | None = None,
                 human_labels: dict[str, str] | None = None, use_injection_probe: bool = True,
                 verdict_mode: str = "auto", validation: dict[str, Any] | None = None,
                 judge_ref: str = "JUDGE") -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """Judge aligned answers; returns (item rows, aggregates, injection rows).

    Item rows hold one prompt each: both answers, both games with raw
    judgments, the reduced outcome from the candidate's side (None when
    invalid), judge-free metrics (ROUGE-L kept in `metric_cache` when given, as a cached
    `embedder` keeps its similarities) and optional grades. Aggregates hold the win
    rate with its interval over prompts, ties, disagreements, invalid
    verdicts, position consistency, first-position win rate, LC win rate,
    metrics per model, kappa against `human_labels`, and the injection probe;
    judges.winrate adds the calibrated and reference win rates, the judge's
    `validation` (judges.validate.latest_validation) and the `headline` in
    `verdict_mode` with its status (judges.trust).
    """
    if not len(items) == len(candidate) == len(baseline):
        raise ValueError(f"need aligned answers; got {len(items)} items, {len(candidate)} candidate and "
                         f"{len(baseline)} baseline answers")
    pairs = [PairInput(it.id, question_text(it), c.text, b.text, it.ideal) for it, c, b in zip(items, candidate, baseline)]
    judged = judge_pairs(judge, pairs)
    outcomes = stats.outcomes_from_verdicts([j.games[0].verdict for j in judged], [j.games[1].verdict for j in judged])
    reduced = stats.reduce_orders(outcomes).outcomes
    win = stats.estimate_win_rate(outcomes, rng, confidence=confidence, n_resamples=n_resamples)
    lc = stats.estimate_lc_win_rate(outcomes, [c.n_completion_tokens for c in candidate],
                                    [b.n_completion_tokens for b in baseline], rng,
                                    confidence=confidence, n_resamples=min(n_resamples, 1000))
    metrics = {side: score_outputs(items, [g.text for g in gens], embedder, cache=metric_cache)
               for side, gens in (("candidate", candidate), ("baseline", baseline))}
    grades: dict[str, list[Any]] = {}
    if grader is not None:
        for side, gens in (("candidate", candidate), ("baseline", baseline)):
            grades[side] = grade_answers(grader, [(it.id, question_text(it), g.text, it.ideal) for it, g in zip(items, gens)])
    rows = []
    for k, (it, j) in enumerate(zip(items, judged)):
        row: dict[str, Any] = {"task": "judge", "item_id": it.id, "tags": it.tags, "question": question_text(it),
                               "ideal": it.ideal, **j.to_json(), "outcome": None if math.isnan(reduced[k]) else float(reduced[k]),
                               "orders_disagree": bool(not np.isnan(outcomes[k]).any() and outcomes[k, 0] != outcomes[k, 1])}
        for side, gens in (("candidate", candidate), ("baseline", baseline)):
            row[side] = {"output": gens[k].text, "n_tokens": gens[k].n_completion_tokens,
                         "finish_reason": gens[k].finish_reason, **metrics[side][k]}
            if side in grades:
                row[side]["grade"] = asdict(grades[side][k])
        rows.append(row)
    agg: dict[str, Any] = {
        "win_rate": asdict(win), "lc_win_rate": asdict(lc),
        "metrics": {side: summarize_metrics(m) for side, m in metrics.items()},
        "judge": judge.config.describe(),
        **judge_win_aggregates(judged, win, metrics, rng, confidence=confidence, n_resamples=n_resamples,
                               verdict_mode=verdict_mode, validation=validation, judge_ref=judge_ref),
    }
    if grades:
        agg["grades"] = {side: _grade_summary(g) for side, g in grades.items()}
    if human_labels is not None:
        judged_sides = [_side(reduced[k]) for k, it in enumerate(items) if it.id in human_labels]
        human = [human_labels[it.id] for it in items if it.id in human_labels]
        agg["kappa_vs_human"] = {**asdict(stats.cohen_kappa(judged_sides, human, HUMAN_CHOICES)),
                                 "n_labelled_items_in_run": len(human)}
    injection_rows: list[dict[str, Any]] = []
    if use_injection_probe:
        probe = measure_injection(judge)
        agg["injection"] = {**probe.summary(), "assessment": assess_injection(probe.rows).to_json()}
        injection_rows = probe.rows
    agg["summary"] = summary_of(agg)
    return rows, agg, injection_rows


def _grade_summary(grades: Sequence[Any]) -> dict[str, Any]:
    scores = [g.score for g in grades if g.score is not None]
    return {"mean": float(np.mean(scores)) if scores else math.nan, "n_graded": len(scores),
            "n_invalid": len(grades) - len(scores)}


def summary_of(agg: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers, flat, for the run index."""
    w, lc = agg["win_rate"], agg["lc_win_rate"]
    out = {"win_rate": w["win_rate"]["value"], "win_rate_lo": w["win_rate"]["lo"], "win_rate_hi": w["win_rate"]["hi"],
           "confidence": w["win_rate"]["confidence"], "lc_win_rate": lc["lc_win_rate"]["value"],
           "n_prompts": w["n_prompts"], "n_ties": w["n_ties"], "n_disagreements": w["n_disagreements"],
           "n_invalid_verdicts": w["n_invalid_verdicts"], "position_consistency": w["position_consistency"]}
    if "injection" in agg:
        out["injection_flip_rate"] = agg["injection"]["flip_rate"]
    if "headline" in agg:
        head, ref = agg["headline"], agg["reference_win_rate"]
        out.update(verdict_mode=head["mode"], headline_win_rate=head["win_rate"]["value"],
                   win_rate_status=head["status"],
                   calibrated_win_rate=agg["calibrated_win_rate"]["win_rate"]["value"])
        if ref.get("metric"):
            out["reference_win_rate"] = ref[ref["metric"]]["win_rate"]["value"]
    return out


def run_judge(settings: Settings, cfg: JudgeRunConfig, backends: dict[str, Any] | None = None) -> Run:
    """Generate, judge and summarize; returns an unsaved Run of kind "judge".

    Invalid verdicts are results, counted in the aggregates, so the run is
    "complete" even when some are invalid. `backends` (reference -> open
    backend) reuses models a caller already serves, e.g. compare's engine.
    """
    t0 = time.time()
    judge_config = load_judge_config(cfg.judge_config)
    grade_config = load_judge_config("single") if cfg.grade else None
    items = load_golden_set(settings, cfg.golden)[:cfg.limit]
    human = load_human_labels(Path(cfg.human_labels)) if cfg.human_labels else None
    cache = ItemCache(settings.cache_path)
    try:
        resolved = [resolve(settings, r) for r in (cfg.candidate, cfg.baseline, cfg.judge)]
        refs = [*resolved, *canary_refs(resolved, enabled=cfg.check_canary)]
        opened = (contextlib.nullcontext(backends) if backends is not None
                  else open_models(settings, refs, cfg.backend, cfg.backend_opts))
        with opened as models:
            # Before any answer is generated: a no-op or damaged adapter would be judged as if tuned.
            canaries = verify_adapters(settings, resolved, models, enabled=cfg.check_canary)
            requests = [it.to_request(max_new_tokens=cfg.max_new_tokens) for it in items]
            answers = {side: call_per_item_on_overflow(
                CachedBackend(models[getattr(cfg, side)], cache, tag=GENERATION_TAG).generate, requests)
                for side in ("candidate", "baseline")}
            # A prompt too long for either model is left out of the judging, with its reason; the rest go on.
            unscored = [_unscored(it, side, answers[side][k]) for k, it in enumerate(items)
                        for side in ("candidate", "baseline") if isinstance(answers[side][k], Exception)]
            keep = [k for k in range(len(items)) if not any(isinstance(answers[s][k], Exception) for s in answers)]
            if not keep:
                raise HarnessError(f"no golden prompt of {cfg.golden} could be answered; first: {unscored[0]['reason']}")
            gens = {side: [answers[side][k] for k in keep] for side in answers}
            items = [items[k] for k in keep]
            raw_judge = models[cfg.judge]
            judge_backend = CachedBackend(with_shared_prefix(raw_judge), cache, tag=judge_config.tag)
            render = chat_renderer(raw_judge)
            judge = Judge(judge_backend, judge_config, render_chat=render, count_tokens=token_counter(raw_judge))
            grader = (Judge(judge_backend.with_tag(grade_config.tag), grade_config, render_chat=render)
                      if grade_config else None)
            validation = latest_validation(settings.runs_dir, raw_judge.identity, judge_config)
            rows, agg, injection_rows = judge_golden(
                judge, items, gens["candidate"], gens["baseline"], np.random.default_rng(cfg.seed),
                confidence=cfg.confidence, n_resamples=cfg.n_resamples, grader=grader,
                embedder=cached_embedder(settings, cache) if cfg.use_embeddings else None, metric_cache=cache,
                human_labels=human, use_injection_probe=cfg.use_injection_probe, verdict_mode=cfg.verdict_mode,
                validation=validation, judge_ref=cfg.judge)
            if unscored:
                agg["unscored"] = unscored
                agg["summary"]["n_unscored_prompts"] = len({u["item_id"] for u in unscored})
            manifest = {
                "models": [{"role": role, "ref": getattr(cfg, role), "identity": models[getattr(cfg, role)].identity,
                            "backend": models[getattr(cfg, role)].name,
                            "runtime": models[getattr(cfg, role)].runtime} for role in ("candidate", "baseline", "judge")],
                "suite": {"name": f"judge:{Path(cfg.golden).stem}", "version": judge_config.version,
                          "golden": cfg.golden, "n_items": len(requests), "n_judged": len(items)},
                "judge": judge_config.describe(), "config": {k: v for k, v in asdict(cfg).items()},
                "seeds": {"bootstrap": cfg.seed}, "canary": canaries,
                "cache": {"path": str(settings.cache_path), **judge_backend.stats},
                "wall_s": round(time.time() - t0, 1),
            }
            agg["unverified"] = unverified(canaries)
            if agg["unverified"] and "headline" in agg:
                # A skipped canary leaves the candidate's (or judge's) adapter untested: no win rate stands on it.
                head = agg["headline"]
                agg["headline"] = {**head, "status": "undetermined", "reasons": [
                    *head["reasons"], *(f"adapter unverified: {u}" for u in agg["unverified"])]}
    finally:
        cache.close()
    extra = {"injection.jsonl": "".join(json.dumps(r, sort_keys=True) + "\n" for r in injection_rows)} if injection_rows else {}
    return Run(kind="judge", manifest=manifest, items=rows, aggregates=agg, extra_files=extra)
