"""Pairwise judging in both orders, and single-answer grading.

`pair_chats` is the one place orders are swapped: game 0 shows the candidate
as A and the baseline as B ("candidate_first"); game 1 shows the baseline as
A ("candidate_second"). Verdicts stay in the judge's terms ("a", "b", "tie"
or None); harness.stats.outcomes_from_verdicts maps them to the candidate's
side. Each prompt becomes one `PairJudgment` holding both games and the raw
judgments, written as one JSONL row: auditable, and resumable through the
judge cache.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, Sequence

from judges.judge import Chat, Judge, Verdict
from judges.config import render_template

ORDERS = ("candidate_first", "candidate_second")
PairVerdict = Literal["a", "b", "tie"]


@dataclass(frozen=True)
class PairInput:
    item_id: str
    question: str
    candidate: str
    baseline: str
    reference: str | None = None  # the golden ideal answer; required by reference-guided configs


@dataclass(frozen=True)
class Game:
    """One order of one prompt. `verdict` is None exactly when `failure_reason` says why."""

    order: str  # one of ORDERS
    verdict: PairVerdict | None
    failure_reason: str | None
    via: str
    raw: dict[str, Any]
    n_prompt_tokens: int | None = None  # what the game cost (judges.judge.Verdict)
    n_completion_tokens: int | None = None


@dataclass(frozen=True)
class PairJudgment:
    item_id: str
    games: tuple[Game, Game]  # (candidate_first, candidate_second)

    def to_json(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "games": [asdict(g) for g in self.games]}


def pair_chats(judge: Judge, pair: PairInput) -> tuple[Chat, Chat]:
    """The judge chats for both orders: (candidate as A, candidate as B)."""
    ref = {"reference": pair.reference} if judge.config.uses_reference else {}
    first = render_template(judge.config, question=pair.question, answer_a=pair.candidate,
                            answer_b=pair.baseline, **ref)
    second = render_template(judge.config, question=pair.question, answer_a=pair.baseline,
                             answer_b=pair.candidate, **ref)
    return judge.chat(first), judge.chat(second)


def judge_pairs(judge: Judge, pairs: Sequence[PairInput]) -> list[PairJudgment]:
    """Judge every pair in both orders; one batch of 2 × len(pairs) judge prompts.

    A reference-guided judge gives pairs without a reference an invalid
    verdict (reason names the item) without asking the model.
    """
    if judge.config.mode != "pairwise":
        raise ValueError(f"judge config '{judge.config.name}' is mode {judge.config.mode}; judge_pairs needs pairwise")
    asked: list[int] = []
    chats: list[Chat] = []
    for i, p in enumerate(pairs):
        if judge.config.uses_reference and not (p.reference or "").strip():
            continue
        asked.append(i)
        chats.extend(pair_chats(judge, p))
    decided = judge.decide(chats)
    verdicts: dict[int, tuple[Verdict, Verdict]] = {i: (decided[2 * k], decided[2 * k + 1]) for k, i in enumerate(asked)}
    out = []
    for i, p in enumerate(pairs):
        missing = Verdict.invalid(f"item '{p.item_id}' has no ideal answer; judge '{judge.config.name}' "
                                  f"is reference-guided")
        pair = verdicts.get(i, (missing, missing))
        out.append(PairJudgment(p.item_id, tuple(  # type: ignore[arg-type]
            Game(order, v.label, v.failure_reason, v.via, v.raw, v.n_prompt_tokens, v.n_completion_tokens)
            for order, v in zip(ORDERS, pair))))
    return out


@dataclass(frozen=True)
class Grade:
    """A 1-10 grade of one answer; `score` is None exactly when `failure_reason` says why."""

    item_id: str
    score: int | None
    failure_reason: str | None
    via: str
    raw: dict[str, Any]


def grade_answers(judge: Judge, items: Sequence[tuple[str, str, str, str | None]]) -> list[Grade]:
    """Grade (item_id, question, answer, reference) tuples with a single-mode judge, in order."""
    if judge.config.mode != "single":
        raise ValueError(f"judge config '{judge.config.name}' is mode {judge.config.mode}; grade_answers needs single")
    chats = []
    for _, question, answer, reference in items:
        ref = {"reference": reference or ""} if judge.config.uses_reference else {}
        chats.append(judge.chat(render_template(judge.config, question=question, answer=answer, **ref)))
    return [Grade(item_id, int(v.label) if v.label is not None else None, v.failure_reason, v.via, v.raw)
            for (item_id, *_), v in zip(items, judge.decide(chats))]
