"""The shared-prefix scorer equals the plain backend (fast, tiny model) and lm-eval's HF model (slow)."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.records import LoglikelihoodRequest


@pytest.fixture(scope="module")
def tiny_hf(tiny_model_dir: Path, harness_home: Path, data_dir: Path):
    from harness.backends.hf import HFBackend
    from harness.models.resolve import resolve
    from harness.settings import Settings

    s = Settings.at(harness_home, runs_dir=harness_home / "runs", data_dir=data_dir)
    backend = HFBackend(resolve(s, str(tiny_model_dir)), dtype="float32", batch_size=4)
    yield backend
    backend.close()


def synthetic_requests() -> list[LoglikelihoodRequest]:
    shots = "The following are questions.\n\n" + "".join(f"Q: {i} plus {i}?\nAnswer: {2 * i}\n\n" for i in range(6))
    reqs = []
    for q in range(5):
        ctx = shots + f"Q: what is {q} times {q + 1}?\nAnswer:"
        reqs += [LoglikelihoodRequest(ctx, c) for c in (" A", " B", " twelve or so", " 9")]
    reqs += [LoglikelihoodRequest("", "hello there"), LoglikelihoodRequest("Question: why? ", "because"),
             LoglikelihoodRequest(shots, "Q: 7 plus 7?")]
    return reqs


def test_shared_prefix_matches_plain_backend(tiny_hf) -> None:
    from harness.backends.hf_prefix import SharedPrefixScorer

    reqs = synthetic_requests()
    plain = tiny_hf.loglikelihood(reqs)
    scorer = SharedPrefixScorer(tiny_hf, max_rows=3)
    fast = scorer.loglikelihood(reqs)
    assert len(fast) == len(reqs)
    for a, b in zip(plain, fast):
        assert b.logprob == pytest.approx(a.logprob, abs=1e-3)
        assert (a.is_greedy, a.n_tokens) == (b.is_greedy, b.n_tokens)
    # The few-shot block ran once for all five questions, not once per row.
    assert scorer.stats["prefix_tokens"] < 2 * len(tiny_hf.lm_tok.encode_pair(reqs[0].context, " A")[0])
    assert scorer.stats["rows"] < len(reqs)
    assert scorer.scoring_params["scorer"] == "shared_prefix"


@pytest.mark.slow
def test_parity_with_lmeval_hf_backend(smollm2_dir: Path, settings) -> None:
    """Per-item predictions agree with lm-eval's own HF model on >= 99.5% of items; accuracy within 0.2 points.

    float32 on both sides: in bfloat16 the two computation orders (one pass vs
    prefix cache + suffix) round differently, which can flip near-ties.
    Subset: MMLU 5-shot, one question per subject (57 items, 57 shared
    prefixes), plus 30 ARC-Challenge items (multi-token choices).
    """
    from lm_eval.models.huggingface import HFLM

    from harness.backends.hf import HFBackend
    from harness.backends.lmeval_adapter import run_lmeval_task, task_manager
    from harness.backends.hf_prefix import SharedPrefixScorer
    from harness.models.resolve import resolve
    from harness.suites.spec import Sample, TaskSpec, choose_docs
    from harness.suites.lmeval_data import materialize_lmeval_tasks

    tm = task_manager(materialize_lmeval_tasks(settings).task_dir)
    ours = SharedPrefixScorer(HFBackend(resolve(settings, str(smollm2_dir)), dtype="float32", batch_size=8))
    theirs = HFLM(pretrained=str(smollm2_dir), dtype="float32", batch_size=8, device="cpu")
    for task, fewshot, sample in (("mmlu_local", 5, Sample(per_subject=1)), ("arc_challenge_local", 0, Sample(n=30))):
        spec = TaskSpec(lm_eval=task, metric="acc", sample=sample)

        def pick(sizes: dict[str, int]) -> dict[str, list[int]]:
            return choose_docs(sizes, spec, seed=3)

        a = run_lmeval_task(ours, task, tm=tm, num_fewshot=fewshot, fewshot_seed=1234, choose_docs=pick)
        b = _run_with_lm(theirs, task, tm, fewshot, pick)
        pa = {(r["task"], r["doc_id"]): r for r in a.rows}
        pb = {(r["task"], r["doc_id"]): r for r in b}
        assert pa.keys() == pb.keys() and len(pa) >= 30
        agree = sum(pa[k]["pred"] == pb[k]["pred"] for k in pa) / len(pa)
        acc_a = sum(r["acc"] for r in pa.values()) / len(pa)
        acc_b = sum(r["acc"] for r in pb.values()) / len(pb)
        assert agree >= 0.995, f"{task}: predictions agree on {agree:.3%}"
        assert abs(acc_a - acc_b) * 100 <= 0.2, f"{task}: accuracy {acc_a:.4f} vs lm-eval {acc_b:.4f}"


def _run_with_lm(lm, task: str, tm, fewshot: int, pick) -> list[dict]:
    """lm-eval's evaluator on its own LM object, with the same documents and few-shot settings."""
    import random

    import numpy as np
    from lm_eval.evaluator import evaluate

    loaded = tm.load([task])
    tasks = loaded["tasks"]
    chosen = pick({leaf: len(t.eval_docs) for leaf, t in tasks.items()})
    for t in tasks.values():
        t.set_config(key="num_fewshot", value=fewshot)
        t.set_fewshot_seed(seed=1234)
    random.seed(0)
    np.random.seed(1234)
    leaves = [leaf for leaf in tasks if chosen[leaf]]
    out = evaluate(lm=lm, task_dict={"tasks": {leaf: tasks[leaf] for leaf in leaves}, "groups": {}},
                   samples={leaf: chosen[leaf] for leaf in leaves}, log_samples=True, bootstrap_iters=0)
    rows = []
    for leaf in leaves:
        for s in out["samples"][leaf]:
            lls = [float(r[0]) for r in s["filtered_resps"]]
            rows.append({"task": leaf, "doc_id": s["doc_id"], "acc": float(s["acc"]),
                         "pred": max(range(len(lls)), key=lls.__getitem__)})
    return rows
