"""`run_compare`: score a baseline and candidates on a suite and compare them.

The baseline is scored once per compare and, through the per-item cache, once
ever: candidates of the same base, reruns and interrupted runs reuse every
finished item. With --backend vllm, the baseline and every adapter of that
base are served by one engine; other candidates (merged or full checkpoints)
get their own hf backend. The judge (for --golden) shares the engine when it is
the base or one of its adapters.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from harness import store
from harness.backends.base import Backend
from harness.canary import adapter_canary
from harness.compare import CompareConfig, checkpoint_step, compare_eval_runs, overall_verdict, trend_of
from harness.errors import HarnessError
from harness.models import MANIFEST, ResolvedModel, resolve
from harness.settings import Settings
from harness.store import Run

log = logging.getLogger(__name__)


def run_compare(settings: Settings, cfg: CompareConfig) -> tuple[Run, list[Run]]:
    """Returns (the compare run, the eval and judge runs it was built from); nothing is written here."""
    from harness.evaluate import evaluate_suite
    from harness.suite import load_suite

    t0 = time.time()
    if not cfg.candidates:
        raise HarnessError("compare needs at least one --candidate (or --checkpoints FINETUNE_DIR)")
    suite = load_suite(cfg.suite)
    baseline = resolve(settings, cfg.baseline)
    candidates = [resolve(settings, c) for c in cfg.candidates]
    rng = np.random.default_rng(cfg.seed)
    margins = {t.label: t.margin for t in suite.tasks}
    sources: list[Run] = []
    results: list[dict] = []
    items: list[dict] = []
    flips: dict[str, dict[str, list[str]]] = {}
    canaries: dict[str, Any] = {}
    from harness.backends import open_models

    refs: list[Any] = [baseline, *candidates]
    if cfg.golden:
        from judges.run import DEFAULT_JUDGE

        refs.append(cfg.judge or DEFAULT_JUDGE)
    with open_models(settings, refs, cfg.backend, cfg.backend_opts) as backends:
        base_run = evaluate_suite(settings, backends[baseline.ref.raw], suite, limit=cfg.limit)
        sources.append(base_run)
        for cand in candidates:
            check = _canary_hook(canaries, backends, baseline, cand, cfg.check_canary)
            cand_run = evaluate_suite(settings, backends[cand.ref.raw], suite, limit=cfg.limit, before_compute=check)
            sources.append(cand_run)
            r, it, fl = compare_eval_runs(base_run, cand_run, candidate_label=cand.ref.raw, margins=margins, rng=rng,
                                          confidence=cfg.confidence, n_resamples=cfg.n_resamples)
            results += r
            items += it
            flips[cand.ref.raw] = fl
        win_rates = _judge_all(settings, cfg, sources, backends) if cfg.golden else []
        server_log = _server_log(backends)
    # A task that could not be scored (a context too long, a dead server) leaves the gate unable
    # to certify that candidate: the verdict is "error" (exit 2), never a silent pass.
    task_errors = [f"{run.manifest['models'][0]['ref']}: {label}: {t['failure_reason']}"
                   for run in sources if run.kind == "eval"
                   for label, t in run.aggregates["tasks"].items() if t.get("failure_reason")]
    verdict = "error" if task_errors else overall_verdict(results)
    failures = [f"{r['candidate']}: {r['task']}" for r in results if r.get("verdict") == "fail"]
    aggregates = {
        "summary": {"verdict": verdict, "n_candidates": len(candidates), "n_failures": len(failures),
                    "n_task_errors": len(task_errors),
                    **{f"{w['candidate']} win_rate": w["win_rate"]["value"] for w in win_rates},
                    **{f"{w['candidate']} win_rate_status": w["status"] for w in win_rates}},
        "results": results, "win_rates": win_rates, "flips": flips, "failures": failures, "task_errors": task_errors,
        "trend": trend_of(results, list(cfg.candidates)) if len(candidates) > 1 else [],
    }
    manifest = {
        "models": [baseline.describe(), *[c.describe() for c in candidates]],
        "baseline": baseline.describe(), "candidates": [c.describe() for c in candidates],
        "suite": suite.describe(), "golden": cfg.golden, "confidence": cfg.confidence,
        "seeds": {"bootstrap": cfg.seed, "sampling": suite.seed}, "backend": cfg.backend, "limit": cfg.limit,
        "canary": canaries, "wall_s": round(time.time() - t0, 1),
    }
    extra = {"vllm-server.log": server_log} if server_log else {}
    return Run(kind="compare", manifest=manifest, items=items, aggregates=aggregates, extra_files=extra), sources


def checkpoint_candidates(finetune_dir: str | Path) -> list[str]:
    """Model references for the checkpoints a finetune kept (FINETUNE_DIR/checkpoints/checkpoint-N), by step."""
    root = Path(finetune_dir) / "checkpoints"
    found = sorted(root.glob("checkpoint-*"), key=lambda p: checkpoint_step(p.name) or 0)
    if not found:
        raise HarnessError(f"{finetune_dir}: no checkpoints/checkpoint-N inside; fine-tune with "
                           "train.keep_checkpoints=true to keep them")
    refs = []
    for ckpt in found:
        try:
            manifest = json.loads((ckpt / MANIFEST).read_text())
            base_ref = manifest["base"]["ref"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise HarnessError(f"{ckpt / MANIFEST}: not a checkpoint manifest with base.ref ({e})") from e
        refs.append(f"{base_ref}+{ckpt}" if manifest.get("kind") == "adapter" else str(ckpt))
    return refs


def _canary_hook(canaries: dict[str, Any], backends: dict[str, Backend], baseline: ResolvedModel,
                 cand: ResolvedModel, enabled: bool) -> Callable[[], None] | None:
    """The adapter canary, to run before the candidate's first uncached item; notes in `canaries` what happened.

    Items already in the cache were computed after a canary passed (unless --no-canary), so a
    fully cached candidate (an unchanged rerun) needs no probes and no engine.
    """
    raw = cand.ref.raw
    if cand.adapter_path is None or not enabled:
        canaries[raw] = "not an adapter" if cand.adapter_path is None else "skipped (--no-canary)"
        return None
    canaries[raw] = "not needed: every item was cached"

    def check() -> None:
        canaries[raw] = adapter_canary(backends[baseline.ref.raw], backends[raw], label=raw)
    return check


def _server_log(backends: dict[str, Backend]) -> str | None:
    for b in backends.values():
        server = getattr(b, "server", None)
        if server is not None:
            return server.log_text()
    return None


def _judge_all(settings: Settings, cfg: CompareConfig, sources: list[Run], backends: dict[str, Backend]) -> list[dict]:
    from judges.run import JudgeRunConfig, run_judge
    from judges.winrate import win_rate_entry

    out = []
    for cand in cfg.candidates:
        jc = JudgeRunConfig(golden=cfg.golden or "", candidate=cand, baseline=cfg.baseline,
                            backend=cfg.backend, seed=cfg.seed, confidence=cfg.confidence, limit=cfg.golden_limit,
                            **({"judge": cfg.judge} if cfg.judge else {}))
        run = run_judge(settings, jc, backends)
        sources.append(run)
        # Win rates are reported beside the gate, never gated: an undetermined one says why (judges.trust).
        out.append(win_rate_entry(cand, jc.judge, run.aggregates))
    return out


def write_compare(settings: Settings, compare: Run, sources: list[Run]) -> str:
    """Write the source runs, then the compare run pointing at them; returns the compare run id."""
    ids = {}
    for r in sources:
        store.write_run(settings.runs_dir, r)
        ref = r.manifest.get("models", [{}])[0].get("ref", r.kind)
        ids[f"{r.kind}:{ref}"] = r.run_id
    compare.manifest["source_runs"] = ids
    store.write_run(settings.runs_dir, compare)
    return compare.run_id
