"""Merge a PEFT adapter into its base: full safetensors weights the harness loads as `./DIR`.

A merged checkpoint is what users ship, so the merge verifies itself: after
writing, the merged checkpoint and base+adapter are scored on the canary's
probes (harness.backends.canary.PROBES) and a few held-out documents, and the largest
log-probability difference and the perplexity delta go into the merged
model's manifest. Storing the merged weights in a 16-bit dtype rounds away the
adapter's smallest deltas (on the packaged bfloat16 SmolLM2 about a tenth of a
LoRA's perplexity gain); beyond the tolerances below the merge warns and names
`--dtype float32`, which keeps the merge exact.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from harness import atomic
from harness.backends.canary import PROBES
from harness.backends.hf import HFBackend
from harness.errors import HarnessError
from harness.models.resolve import MANIFEST, ResolvedModel, read_adapter_config, resolve
from harness.perplexity import perplexity
from harness.records import RollingRequest
from harness.settings import Settings
from harness.suites.text import load_text_set

# Adapters whose weights fold into the base linear layers; prompt tuning adds
# virtual tokens instead, so it has nothing to merge.
_MERGEABLE = ("LORA", "IA3")
DTYPES = ("auto", "float32", "bfloat16", "float16")
VERIFY_DOCS = 8  # held-out Alpaca documents (the perplexity suite's alpaca_heldout) scored both ways
# A float32 merge differs from base+adapter by float rounding only (< 1e-3 nats on a probe, < 1e-5 in
# perplexity); a bfloat16 merge of a 30-step SmolLM2 LoRA differs by far more (docs/finetune.md). The
# tolerances sit between: beyond either, the merged checkpoint is not what was tested.
TOL_MAX_LOGPROB_DIFF_NATS = 0.01
TOL_PERPLEXITY_REL = 0.001


@dataclass(frozen=True)
class MergeCheck:
    """How the merged checkpoint scores against base+adapter (both in float32)."""

    n_probes: int
    max_abs_logprob_diff_nats: float  # over the probes' continuations
    n_docs: int  # held-out documents; 0 when none could be read
    perplexity_adapter: float | None
    perplexity_merged: float | None
    perplexity_delta: float | None  # merged - adapter; > 0: the merge lost some of the adapter
    tolerance: dict[str, float]
    is_within_tolerance: bool
    note: str | None = None


def merge_adapter(settings: Settings, adapter: Path, out: Path, *, base: str | None = None,
                  dtype: str = "auto", verify: bool = True) -> tuple[Path, MergeCheck | None]:
    """Write base + adapter as one full checkpoint (weights, tokenizer, manifest) to `out`, then verify it.

    `dtype` is what the weights are stored in: auto keeps the base's dtype (bfloat16 for the
    packaged SmolLM2, half the bytes of float32, but lossy), float32 keeps the merge exact. The
    base comes from the adapter's harness_manifest.json unless `base` is given; either way the
    adapter is checked against it first. The output is written atomically; the manifest links it
    to the adapter (path and content hash) and, with `verify`, records the MergeCheck.
    Raises HarnessError for a prompt-tuning adapter, a missing base or an unknown dtype.
    """
    if dtype not in DTYPES:
        raise HarnessError(f"--dtype {dtype} unknown; choose {', '.join(DTYPES)}")
    cfg = read_adapter_config(adapter)
    if cfg["peft_type"] not in _MERGEABLE:
        raise HarnessError(f"adapter {adapter}: {cfg['peft_type']} adapters cannot be merged into weights "
                           f"(mergeable: {', '.join(_MERGEABLE)}); evaluate it as BASE+{adapter} instead")
    man_path = adapter / MANIFEST
    manifest = json.loads(man_path.read_text()) if man_path.is_file() else {}
    base = base or manifest.get("base", {}).get("ref")
    if not base:
        raise HarnessError(f"adapter {adapter}: no {MANIFEST} naming its base; pass --base BASE")
    resolved = resolve(settings, f"{base}+{adapter}")  # refuses an adapter made for another base

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype == "auto":
        base_cfg = json.loads((Path(resolved.base_path) / "config.json").read_text())
        dtype = base_cfg.get("dtype") or base_cfg.get("torch_dtype") or "float32"
    # Merge in float32 so the low-rank product is added without rounding, then store in `dtype`.
    model = AutoModelForCausalLM.from_pretrained(resolved.base_path, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().to(getattr(torch, dtype))
    tokenizer = AutoTokenizer.from_pretrained(adapter if (adapter / "tokenizer_config.json").is_file()
                                              else resolved.base_path)
    out_manifest = {
        "harness_manifest_version": 1, "kind": "merged",
        "base": {"ref": base, "hash": resolved.base_hash},
        "adapter": {"path": str(adapter.resolve()), "hash": resolved.adapter_hash, "peft_type": cfg["peft_type"]},
        "method": manifest.get("method"), "dtype": dtype,
    }
    with atomic.staged_dir(out) as stage:
        merged.save_pretrained(stage, safe_serialization=True)
        tokenizer.save_pretrained(stage)
        atomic.write_json(stage / MANIFEST, out_manifest)
    del model, merged
    if not verify:
        return out, None
    check = verify_merge(settings, resolved, out)
    atomic.write_json(out / MANIFEST, {**out_manifest, "verification": asdict(check)})
    return out, check


def verify_merge(settings: Settings, adapter: ResolvedModel, merged_dir: Path) -> MergeCheck:
    """Score `merged_dir` against base+adapter, both on hf in float32 (where the adapter merges exactly),
    on the canary's probes and VERIFY_DOCS held-out documents (none when the data dir lacks them)."""
    note = None
    try:
        docs = [RollingRequest(text) for _, text in load_text_set(settings, "alpaca_heldout")[:VERIFY_DOCS]]
    except HarnessError as e:  # no HARNESS_DATA_DIR here: the probes still check the merge
        docs, note = [], f"perplexity not checked: {e}"
    scores = []
    for resolved in (adapter, resolve(settings, str(merged_dir))):
        backend = HFBackend(resolved, dtype="float32")
        try:
            probes = backend.loglikelihood(PROBES)
            rolled = backend.loglikelihood_rolling(docs) if docs else []
        finally:
            backend.close()
        ppl = perplexity(-sum(r.logprob for r in rolled), sum(r.n_tokens for r in rolled)) if rolled else None
        scores.append(([p.logprob for p in probes], ppl))
    (lp_a, ppl_a), (lp_m, ppl_m) = scores
    max_diff = max(abs(a - m) for a, m in zip(lp_a, lp_m))
    delta = ppl_m - ppl_a if ppl_a is not None and ppl_m is not None else None
    ok = max_diff <= TOL_MAX_LOGPROB_DIFF_NATS and (delta is None or abs(delta) <= TOL_PERPLEXITY_REL * ppl_a)
    return MergeCheck(n_probes=len(PROBES), max_abs_logprob_diff_nats=max_diff, n_docs=len(docs),
                      perplexity_adapter=ppl_a, perplexity_merged=ppl_m, perplexity_delta=delta,
                      tolerance={"max_abs_logprob_diff_nats": TOL_MAX_LOGPROB_DIFF_NATS,
                                 "perplexity_rel": TOL_PERPLEXITY_REL},
                      is_within_tolerance=ok, note=note)


def describe_check(check: MergeCheck, dtype: str) -> list[str]:
    """Lines for the user: the measured differences, and a warning naming --dtype float32 beyond tolerance."""
    ppl = (f"held-out perplexity {check.perplexity_merged:.4f} merged vs {check.perplexity_adapter:.4f} "
           f"base+adapter (delta {check.perplexity_delta:+.4f}, {check.n_docs} docs)"
           if check.perplexity_delta is not None else check.note or "perplexity not checked")
    lines = [f"merge check: max |log-prob diff| {check.max_abs_logprob_diff_nats:.4f} nats on "
             f"{check.n_probes} probes; {ppl}"]
    if not check.is_within_tolerance:
        lines.append(f"warning: the {dtype} merge differs from base+adapter beyond tolerance "
                     f"({TOL_MAX_LOGPROB_DIFF_NATS} nats per probe, {TOL_PERPLEXITY_REL:.1%} perplexity): "
                     f"rounding to {dtype} dropped part of the adapter; merge again with --dtype float32, "
                     "which keeps the merge exact")
    return lines


def print_check(check: MergeCheck, dtype: str) -> None:
    for line in describe_check(check, dtype):
        print(line, file=sys.stderr if line.startswith("warning") else sys.stdout)
