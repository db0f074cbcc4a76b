"""`harness judge validate`: how often does a judge agree with people? Stored as a run of kind "judge-validation".

    run_validation(settings, ValidateConfig(judge=..., judge_config=...)) -> Run (unsaved)
    latest_validation(runs_dir, judge_identity, judge_config) -> summary | None

Pairs are human preferences: by default the HH-RLHF test splits under
HARNESS_DATA_DIR/hh-rlhf (chosen vs rejected; the last Assistant turn is the
answer, the dialogue before it the question), interleaved across the four
splits so any --limit samples all of them; or a JSONL of
{id, prompt, a, b, preferred: a|b|tie}. Every pair is judged in both orders
through the same cache as `harness judge` (tag judge:NAME@VERSION).

Agreement is the win rate of the answer people preferred, in each verdict
mode (judges.winrate): discrete (ties 0.5, disagreeing orders a tie) and
calibrated (label probabilities, both orders averaged). Chance is 50%. Pairs
people called a tie have no preferred side: they are counted apart with how
often the judge said tie on them. Invalid verdicts are counted, never dropped.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from finetune.data import DataError, InconsistentRow, parse_row, read_rows
from harness import stats
from harness.backends.base import DEFAULT_BACKEND
from harness.backends.cache import CachedBackend, ItemCache
from harness.backends.factory import open_models
from harness.backends.hf_prefix import with_shared_prefix
from harness.errors import HarnessError
from harness.settings import Settings
from harness.store import Run, list_runs
from judges.config import JudgeConfig, iter_jsonl, load_judge_config
from judges.judge import Judge, chat_renderer, token_counter
from judges.pairwise import PairInput, judge_pairs
from judges.winrate import candidate_probabilities, token_totals

KIND = "judge-validation"
HH_DIR = "hh-rlhf"  # under HARNESS_DATA_DIR: <split>/test.jsonl.gz
HH_SOURCE = "HH"  # how the default pairs are named in "... of 500 HH pairs"
PREFERRED = ("a", "b", "tie")


@dataclass(frozen=True)
class ValidationPair:
    id: str
    question: str
    a: str
    b: str
    preferred: str  # a | b | tie


@dataclass(frozen=True)
class ValidateConfig:
    judge: str = "smollm2-135m-instruct"
    judge_config: str = "pairwise"
    pairs: str | None = None  # JSONL path; None = the HH-RLHF test splits
    limit: int | None = None  # first N pairs (HH: interleaved across splits)
    max_chars: int | None = None  # leave out (and count) pairs whose question and answers exceed this: a cheap sample
    backend: str = DEFAULT_BACKEND  # hf | vllm (endpoint references use their own)
    seed: int = 0
    confidence: float = 0.95
    n_resamples: int = 2000
    backend_opts: dict[str, Any] = field(default_factory=dict)


def _question(turns: Sequence[tuple[str, str]]) -> str:
    """One user turn is the question as is; a longer dialogue is shown with its roles, like golden chats."""
    if len(turns) == 1:
        return turns[0][1]
    return "\n\n".join(f"[{role}]\n{text}" for role, text in turns)


def load_hh_pairs(data_dir: Path, limit: int | None = None,
                  max_chars: int | None = None) -> tuple[list[ValidationPair], dict[str, int]]:
    """HH-RLHF test pairs (chosen = a, preferred), interleaved across splits; and counts of rows skipped, by reason.

    Skipped, by reason: rows whose dialogues differ before the last answer,
    rows whose two answers are identical (no preference to agree with), and
    rows that do not end with an Assistant answer; with `max_chars`, pairs
    whose question and answers together are longer.
    """
    root = data_dir / HH_DIR
    files = sorted(root.glob("*/test.jsonl.gz"))
    if not files:
        raise HarnessError(f"{root}: no <split>/test.jsonl.gz files; set HARNESS_DATA_DIR or pass --pairs FILE")
    per_split: list[list[ValidationPair]] = []
    skipped = {"dialogues differ": 0, "identical answers": 0, "no final Assistant answer": 0}
    if max_chars is not None:
        skipped[f"longer than {max_chars} characters"] = 0
    for f in files:
        split = f.parent.name
        pairs = []
        for k, (where, row) in enumerate(read_rows(f)):
            try:
                ex = parse_row(row, "hh_rlhf", where)
            except InconsistentRow:
                skipped["dialogues differ"] += 1
                continue
            except DataError:
                # A few published rows end on a Human turn or lack the markers: no answer to judge.
                skipped["no final Assistant answer"] += 1
                continue
            if ex.completion.strip() == (ex.rejected or "").strip():
                skipped["identical answers"] += 1
                continue
            pair = ValidationPair(f"hh/{split}/{k}", _question(ex.prompt), ex.completion, ex.rejected or "", "a")
            if max_chars is not None and len(pair.question) + len(pair.a) + len(pair.b) > max_chars:
                skipped[f"longer than {max_chars} characters"] += 1
                continue
            pairs.append(pair)
        per_split.append(pairs)
    # Round-robin over the splits, so the first N pairs sample every split alike.
    longest = max(len(p) for p in per_split)
    interleaved = [p[i] for i in range(longest) for p in per_split if i < len(p)]
    return interleaved[:limit], skipped


def load_pairs_file(path: Path) -> list[ValidationPair]:
    """{id, prompt, a, b, preferred: a|b|tie} per line; HarnessError names the file, line and key."""
    if not path.is_file():
        raise HarnessError(f"pairs file {path} not found")
    out, seen = [], set()
    for line_no, d in iter_jsonl(path):
        if not isinstance(d, dict):
            raise HarnessError(f"{path}:{line_no}: need an object {{id, prompt, a, b, preferred}}")
        bad = [k for k in ("id", "prompt", "a", "b") if not isinstance(d.get(k), str) or not d[k].strip()]
        if bad:
            raise HarnessError(f"{path}:{line_no}: key {bad[0]} missing or not a non-empty string")
        if d.get("preferred") not in PREFERRED:
            raise HarnessError(f"{path}:{line_no}: preferred {d.get('preferred')!r}; choose a, b or tie")
        if d["id"] in seen:
            raise HarnessError(f"{path}:{line_no}: id '{d['id']}' repeats an earlier line")
        seen.add(d["id"])
        out.append(ValidationPair(d["id"], d["prompt"], d["a"], d["b"], d["preferred"]))
    if not out:
        raise HarnessError(f"{path}: no pairs")
    return out


def _preferred_side(x: np.ndarray, prefers_b: np.ndarray) -> np.ndarray:
    """(n, 2) values from a's side -> from the preferred answer's side, column 0 = preferred shown first.

    For pairs preferring b, game 1 shows b first and each value becomes 1 − value.
    """
    flipped = 1.0 - x[:, ::-1]
    return np.where(prefers_b[:, None], flipped, x)


def validate_judge(judge: Judge, pairs: Sequence[ValidationPair], rng: np.random.Generator, *,
                   confidence: float = 0.95, n_resamples: int = 2000) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Judge every pair in both orders; returns (one row per pair, aggregates with agreement per verdict mode)."""
    judged = judge_pairs(judge, [PairInput(p.id, p.question, p.a, p.b) for p in pairs])
    outcomes = stats.outcomes_from_verdicts([j.games[0].verdict for j in judged], [j.games[1].verdict for j in judged])
    probs = candidate_probabilities(judged)  # (n, 2) from a's side
    strict = np.array([p.preferred != "tie" for p in pairs], dtype=bool)
    prefers_b = np.array([p.preferred == "b" for p in pairs], dtype=bool)
    pref_outcomes = _preferred_side(outcomes, prefers_b)[strict]
    pref_probs = _preferred_side(probs, prefers_b)[strict]
    discrete = stats.estimate_win_rate(pref_outcomes, rng, confidence=confidence, n_resamples=n_resamples)
    calibrated = stats.estimate_calibrated_win_rate(pref_probs, rng, confidence=confidence, n_resamples=n_resamples)
    reduced = stats.reduce_orders(outcomes).outcomes
    human_ties = ~strict
    judge_tie_on_human_tie = int(np.sum(reduced[human_ties] == stats.TIE))
    rows = []
    pref_reduced = stats.reduce_orders(_preferred_side(outcomes, prefers_b)).outcomes
    for k, (p, j) in enumerate(zip(pairs, judged)):
        score = float(np.mean(_preferred_side(probs[k:k + 1], prefers_b[k:k + 1])))
        rows.append({"task": KIND, "item_id": p.id, "question": p.question, "a": p.a, "b": p.b,
                     "preferred": p.preferred, **j.to_json(),
                     "agreement": None if not strict[k] or math.isnan(pref_reduced[k]) else float(pref_reduced[k]),
                     "calibrated_agreement": None if not strict[k] or math.isnan(score) else score})
    agg = {"discrete": asdict(discrete), "calibrated": asdict(calibrated), "n_pairs": len(pairs),
           "n_scored_pairs": int(strict.sum()), "n_human_ties": int(human_ties.sum()),
           "n_judge_ties_on_human_ties": judge_tie_on_human_tie, "judge": judge.config.describe(),
           "judge_tokens": token_totals(judged)}
    return rows, agg


def _summary(agg: dict[str, Any], cfg: ValidateConfig, identity: str, config: JudgeConfig, source: str) -> dict:
    out: dict[str, Any] = {"judge_ref": cfg.judge, "judge_identity": identity, "judge_config": config.name,
                           "judge_config_version": config.version, "source": source, "n_pairs": agg["n_pairs"],
                           "n_scored_pairs": agg["n_scored_pairs"]}
    for mode, est in (("discrete", agg["discrete"]["win_rate"]), ("calibrated", agg["calibrated"]["win_rate"])):
        out.update({f"agreement_{mode}": est["value"], f"agreement_{mode}_lo": est["lo"],
                    f"agreement_{mode}_hi": est["hi"], f"agreement_{mode}_n": est["n"],
                    "confidence": est["confidence"]})
    out["position_consistency"] = agg["discrete"]["position_consistency"]
    return out


def run_validation(settings: Settings, cfg: ValidateConfig, backends: dict[str, Any] | None = None) -> Run:
    """Load pairs, judge them (cached), measure agreement; returns an unsaved Run of kind "judge-validation"."""
    import contextlib

    t0 = time.time()
    config = load_judge_config(cfg.judge_config)
    if config.mode != "pairwise":
        raise HarnessError(f"judge config '{config.name}' is mode {config.mode}; validation needs a pairwise config")
    if config.uses_reference:
        raise HarnessError(f"judge config '{config.name}' is reference-guided; human preference pairs have no "
                           f"reference answer, so validate a config without one")
    if cfg.pairs:
        pairs, skipped, source = load_pairs_file(Path(cfg.pairs))[:cfg.limit], {}, Path(cfg.pairs).name
    else:
        pairs, skipped = load_hh_pairs(settings.data_dir, cfg.limit, cfg.max_chars)
        source = HH_SOURCE if cfg.max_chars is None else f"{HH_SOURCE} (≤{cfg.max_chars} chars)"
    cache = ItemCache(settings.cache_path)
    try:
        opened = (contextlib.nullcontext(backends) if backends is not None
                  else open_models(settings, [cfg.judge], cfg.backend, cfg.backend_opts))
        with opened as models:
            raw = models[cfg.judge]
            backend = CachedBackend(with_shared_prefix(raw), cache, tag=config.tag)
            judge = Judge(backend, config, render_chat=chat_renderer(raw), count_tokens=token_counter(raw))
            rows, agg = validate_judge(judge, pairs, np.random.default_rng(cfg.seed), confidence=cfg.confidence,
                                       n_resamples=cfg.n_resamples)
            agg["n_skipped"] = skipped
            agg["summary"] = _summary(agg, cfg, raw.identity, config, source)
            manifest = {
                "models": [{"role": "judge", "ref": cfg.judge, "identity": raw.identity, "backend": raw.name,
                            "runtime": raw.runtime}],
                "suite": {"name": f"{KIND}:{source}", "version": config.version, "pairs": cfg.pairs or "hh-rlhf test",
                          "n_items": len(pairs)},
                "judge": config.describe(), "config": asdict(cfg), "seeds": {"bootstrap": cfg.seed},
                "cache": {"path": str(settings.cache_path), **backend.stats}, "wall_s": round(time.time() - t0, 1),
            }
    finally:
        cache.close()
    return Run(kind=KIND, manifest=manifest, items=rows, aggregates=agg)


def latest_validation(runs_dir: Path, judge_identity: str, config: JudgeConfig) -> dict[str, Any] | None:
    """The most recent validation of this judge (model identity, config name and version), or None.

    Returns {run_id, source, n_pairs, modes: {discrete: estimate, calibrated: estimate}}; a mode the
    validation could not measure (no label probabilities) is left out.
    """
    for row in list_runs(runs_dir, kind=KIND):
        s = row["summary"]
        if (s.get("judge_identity"), s.get("judge_config"), s.get("judge_config_version")) != \
                (judge_identity, config.name, config.version):
            continue
        modes = {}
        for mode in ("discrete", "calibrated"):
            if s.get(f"agreement_{mode}_n"):
                modes[mode] = {"value": s[f"agreement_{mode}"], "lo": s[f"agreement_{mode}_lo"],
                               "hi": s[f"agreement_{mode}_hi"], "n": s[f"agreement_{mode}_n"],
                               "confidence": s.get("confidence")}
        return {"run_id": row["run_id"], "source": s.get("source"), "n_pairs": s.get("n_scored_pairs"), "modes": modes}
    return None
