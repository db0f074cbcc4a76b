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

import numpy as np

from cli.serving import with_suite_serving
from harness import logs, store
from harness.backends.base import Backend, HasServerLog
from harness.backends.canary import canary_refs, unverified, verify_adapters
from harness.backends.factory import open_models
from harness.compare import CompareConfig, checkpoint_step, compare_eval_runs, overall_verdict, trend_of
from harness.errors import HarnessError, Interrupted
from harness.evaluate import check_suite_tasks, evaluate_suite
from harness.models.names import NamedRef, default_name, step_name, unique_names
from harness.models.resolve import MANIFEST, resolve
from harness.settings import Settings
from harness.store import Run
from harness.suites.spec import load_suite
from judges.run import DEFAULT_JUDGE, JudgeRunConfig, run_judge
from judges.winrate import WinRateEntry

log = logging.getLogger(__name__)


def run_compare(settings: Settings, cfg: CompareConfig) -> tuple[Run, list[Run]]:
    """Returns (the compare run, the eval and judge runs it was built from); nothing is written here."""
    t0 = time.time()
    if not cfg.candidates:
        raise HarnessError("compare needs at least one --candidate (or --checkpoints FINETUNE_DIR)")
    suite = load_suite(cfg.suite, settings=settings, include_paths=cfg.include_paths)
    names = candidate_names(cfg)
    baseline = resolve(settings, cfg.baseline)
    candidates = [resolve(settings, c) for c in cfg.candidates]
    rng = np.random.default_rng(cfg.seed)
    margins = {t.label: t.margin for t in suite.tasks}
    tm = check_suite_tasks(settings, suite)  # a misspelt task name costs no model load or canary
    sources: list[Run] = []
    results: list[dict] = []
    items: list[dict] = []
    flips: dict[str, dict[str, list[str]]] = {}
    models = [baseline, *candidates]
    if cfg.golden:
        models.append(resolve(settings, cfg.judge or DEFAULT_JUDGE))
    refs = [*models, *canary_refs(models, enabled=cfg.check_canary)]
    opts = with_suite_serving(cfg.backend_opts, suite, cfg.backend)
    with open_models(settings, refs, cfg.backend, opts) as backends:
        # Every adapter whose scores the gate uses, before any task is scored: a refusal stops the run.
        canaries = verify_adapters(settings, models, backends, enabled=cfg.check_canary)
        try:
            base_run = evaluate_suite(settings, backends[baseline.ref.raw], suite, limit=cfg.limit, task_manager=tm)
            sources.append(base_run)
            for cand, name in zip(candidates, names):
                cand_run = evaluate_suite(settings, backends[cand.ref.raw], suite, limit=cfg.limit, task_manager=tm)
                sources.append(cand_run)
                r, it, fl = compare_eval_runs(base_run, cand_run, candidate_label=name, margins=margins,
                                              rng=rng, confidence=cfg.confidence, n_resamples=cfg.n_resamples)
                results += r
                items += it
                flips[name] = fl
            win_rates = _judge_all(settings, cfg, names, sources, backends) if cfg.golden else []
        except KeyboardInterrupt as e:
            # Ctrl-C: the eval runs finished so far, and the one interrupted, go back to be stored.
            raise Interrupted([*sources, *getattr(e, "runs", [])]) from None
        server_log = _server_log(backends)
        notices = [b.notice for b in backends.values() if b.notice]  # e.g. DoRA scored on hf
        # Platform, GPUs, engine arguments and the log-likelihood route, per model (read after scoring:
        # a GPU engine settles its route at the first request).
        runtimes = {raw: b.runtime for raw, b in backends.items()}
    # A task that could not be scored (a context too long, a dead server) leaves the gate unable
    # to certify that candidate: the verdict is "error" (exit 2), never a silent pass.
    task_errors = [f"{run.manifest['models'][0]['ref']}: {label}: {t['failure_reason']}"
                   for run in sources if run.kind == "eval"
                   for label, t in run.aggregates["tasks"].items() if t.get("failure_reason")]
    # An adapter the canary did not vouch for (--no-canary) may be a no-op: never a pass.
    not_verified = unverified(canaries)
    verdict = "error" if task_errors or not_verified else overall_verdict(results)
    failures = [f"{r['candidate']}: {r['task']}" for r in results if r.get("verdict") == "fail"]
    aggregates = {
        "summary": {"verdict": verdict, "n_candidates": len(candidates), "n_failures": len(failures),
                    "n_task_errors": len(task_errors), "n_unverified": len(not_verified),
                    **{f"{w['candidate']} win_rate": w["win_rate"]["value"] for w in win_rates},
                    **{f"{w['candidate']} win_rate_status": w["status"] for w in win_rates}},
        "results": results, "win_rates": win_rates, "flips": flips, "failures": failures, "task_errors": task_errors,
        "unverified": not_verified,
        "trend": trend_of(results, names, {n: checkpoint_step(c) if checkpoint_step(c) is not None
                                           else checkpoint_step(n) for n, c in zip(names, cfg.candidates)})
        if len(candidates) > 1 else [],
    }
    base_name = cfg.baseline_name or default_name(cfg.baseline)
    # Names are for display; the references and hashes that say what was tested stay here, beside them.
    manifest = {
        "models": [{"name": base_name, **baseline.describe()},
                   *[{"name": n, **c.describe()} for n, c in zip(names, candidates)]],
        "baseline": {"name": base_name, **baseline.describe(), "identity": baseline.identity},
        "candidates": [{"name": n, **c.describe(), "identity": c.identity} for n, c in zip(names, candidates)],
        "suite": suite.describe(), "golden": cfg.golden, "confidence": cfg.confidence,
        "seeds": {"bootstrap": cfg.seed, "sampling": suite.seed}, "backend": cfg.backend, "backend_notices": notices,
        "runtime": runtimes, "limit": cfg.limit,
        "canary": canaries, "wall_s": round(time.time() - t0, 1),
    }
    extra = {"vllm-server.log": server_log} if server_log else {}
    # An ERROR verdict certifies nothing: the run is "failed", whatever was scored.
    status = "failed" if verdict == "error" else "complete"
    return Run(kind="compare", manifest=manifest, items=items, aggregates=aggregates, extra_files=extra,
               status=status), sources


def candidate_names(cfg: CompareConfig) -> list[str]:
    """One display name per candidate (cfg.names, else the default), checked for duplicates before any load."""
    if cfg.names and len(cfg.names) != len(cfg.candidates):
        raise HarnessError(f"{len(cfg.names)} names for {len(cfg.candidates)} candidates")
    given = cfg.names or tuple(default_name(c) for c in cfg.candidates)
    return [m.name for m in unique_names(NamedRef(n, c) for n, c in zip(given, cfg.candidates))]


def checkpoint_candidates(finetune_dir: str | Path, prefix: str = "") -> list[NamedRef]:
    """The checkpoints a finetune kept (FINETUNE_DIR/checkpoints/checkpoint-N), by step, named `PREFIXstep-N`."""
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
        ref = f"{base_ref}+{ckpt}" if manifest.get("kind") == "adapter" else str(ckpt)
        refs.append(NamedRef(f"{prefix}{step_name(ckpt.name) or ckpt.name}", ref))
    return refs


def _server_log(backends: dict[str, Backend]) -> str | None:
    for b in backends.values():
        if isinstance(b, HasServerLog):
            return b.server_log()
    return None


def _judge_all(settings: Settings, cfg: CompareConfig, names: list[str], sources: list[Run],
               backends: dict[str, Backend]) -> list[dict]:
    out = []
    # --limit caps the golden prompts too: a quick look is quick in every part of the run.
    golden_limit = cfg.golden_limit if cfg.golden_limit is not None else cfg.limit
    for cand, name in zip(cfg.candidates, names):
        jc = JudgeRunConfig(golden=cfg.golden or "", candidate=cand, baseline=cfg.baseline,
                            backend=cfg.backend, seed=cfg.seed, confidence=cfg.confidence, limit=golden_limit,
                            check_canary=cfg.check_canary,
                            **({"judge": cfg.judge} if cfg.judge else {}))
        run = run_judge(settings, jc, backends)
        sources.append(run)
        # Win rates are reported beside the gate, never gated: an undetermined one says why (judges.trust).
        out.append(WinRateEntry.from_judge(name, jc.judge, run.aggregates).to_json())
    return out


def write_compare(settings: Settings, compare: Run, sources: list[Run]) -> str:
    """Write the source runs, then the compare run pointing at them; returns the compare run id."""
    ids = {}
    for r in sources:
        store.write_run(settings.runs_dir, r)
        ref = r.manifest.get("models", [{}])[0].get("ref", r.kind)
        ids[f"{r.kind}:{ref}"] = r.run_id
    # The invocation's log (lm-eval, transformers, httpx, ...) travels with the comparison it explains.
    stored = compare.amended(manifest={"source_runs": ids}, extra_files=logs.run_files())
    store.write_run(settings.runs_dir, stored)
    return stored.run_id
