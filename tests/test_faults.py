"""Fault and bad-input tests: one test per item of the gate-integrity issue, each
reproducing the fault and asserting the clear message and exit code.

Sections are kept apart by area; tests that need the real SmolLM2, vLLM or lm-eval
are marked slow.
"""
from __future__ import annotations

import pytest  # noqa: F401


# --- Canary integrity: items 2, 3, 13 (plausibility), 14 --------------------------------------

def _canary_env(tmp_path, monkeypatch):
    """A fresh runs dir, item cache and canary record store; the shared prepared models."""
    import os

    monkeypatch.setenv("HARNESS_HOME", os.environ.get("HARNESS_HOME") or str(tmp_path / "home"))
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "item-cache.sqlite"))
    return tmp_path / "runs"


def _canary_suite(tmp_path, n_tasks: int = 1):
    """A suite of `n_tasks` perplexity tasks on short texts (seconds on the tiny model)."""
    import json

    tasks = ""
    for t in range(n_tasks):
        texts = [{"text": f"Text {t}: the number {i} comes after {i - 1} and before {i + 1}."} for i in range(1, 7)]
        (tmp_path / f"texts{t}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in texts))
        tasks += f"  - harness: perplexity\n    data: texts{t}.jsonl\n    metric: token_perplexity\n    margin: 5.0\n"
    path = tmp_path / "canary-suite.yaml"
    path.write_text(f"# canary tests: perplexity on small text files\nname: canary-ppl\nversion: 1\nseed: 0\n"
                    f"tasks:\n{tasks}")
    return path


def _one_error_line(err: str, *needles: str) -> str:
    """The one "harness: error:" line on stderr (progress bars aside), with no traceback."""
    import re

    lines = re.findall(r"harness: error: [^\r\n]*", err)
    assert len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_item2_the_canary_cannot_be_bypassed_through_the_cache(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """Issue 14 item 2: a zero-B adapter scored once with --no-canary was then PASSed from the cache."""
    from harness.backends import canary_store
    from cli.main import main
    from harness.store import list_runs, load_run
    from tests.helpers import make_lora

    runs = _canary_env(tmp_path, monkeypatch)
    zero = make_lora(tiny_model_dir, tmp_path / "zero", scale=0.0)
    cmd = ["compare", "--baseline", str(tiny_model_dir), "--candidate", f"{tiny_model_dir}+{zero}",
           "--suite", str(_canary_suite(tmp_path))]
    assert main([*cmd, "--no-canary"]) == 2  # unverified: never a pass
    out, err = capsys.readouterr()
    assert "verdict: ERROR" in out and "unverified:" in out
    _one_error_line(err, "no unverified adapter", "--no-canary")
    (row,) = list_runs(runs, kind="compare")
    first = load_run(runs, row["run_id"])
    assert first.manifest["canary"][f"{tiny_model_dir}+{zero}"]["outcome"] == "unverified"
    assert first.aggregates["unverified"] and first.aggregates["summary"]["n_unverified"] == 1
    # Every item is cached now; the record (there is none) decides, so the probes run and refuse it.
    assert main(cmd) == 2
    out, err = capsys.readouterr()
    assert "verdict: PASS" not in out
    _one_error_line(err, "equal the base's", "not applied")
    (rec,) = canary_store.list_records(runs)
    assert rec["outcome"] == "refused: not applied" and rec["figures"]["vs_base_max_abs_diff_nats"] <= 1e-3
    assert len(list_runs(runs, kind="compare")) == 1, "a refused compare stores no run"


def test_item2_a_passing_record_skips_the_probes_and_a_changed_adapter_needs_a_new_one(
        tiny_model_dir, tmp_path, monkeypatch, capsys):
    from harness.backends import canary_store
    from cli.main import main
    from harness.store import list_runs, load_run
    from tests.helpers import make_lora

    runs = _canary_env(tmp_path, monkeypatch)
    mild = make_lora(tiny_model_dir, tmp_path / "mild", seed=1, scale=1e-2)
    ref = f"{tiny_model_dir}+{mild}"
    cmd = ["eval", "--model", ref, "--suite", str(_canary_suite(tmp_path))]

    def last_canary() -> dict:
        return load_run(runs, list_runs(runs, kind="eval")[0]["run_id"]).manifest["canary"]

    assert main(cmd) == 0
    first = last_canary()
    assert first["outcome"] == "passed" and first["source"] == "probes" and first["version"] >= 2
    assert first["thresholds"]["max_drop_nats_per_token"] > 0 and "drop_nats_per_token" in first["figures"]
    assert main(cmd) == 0  # fully cached rerun: the passing record, not the probes
    assert last_canary()["source"] == "record" and last_canary()["checked_utc"] == first["checked_utc"]
    make_lora(tiny_model_dir, mild, seed=2, scale=1e-2)  # same path, new content hash
    assert main(cmd) == 0
    assert last_canary()["source"] == "probes"
    assert len(canary_store.list_records(runs)) == 2
    assert main([*cmd, "--no-canary"]) == 0  # an eval is no gate, but the run says what it is
    out = capsys.readouterr().out
    assert "unverified: " in out
    run = load_run(runs, list_runs(runs, kind="eval")[0]["run_id"])
    assert run.manifest["canary"]["outcome"] == "unverified" and run.aggregates["unverified"] == [
        f"{ref}: the adapter canary was skipped (--no-canary)"]


def test_item2_the_trend_checks_every_checkpoint(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """`compare --checkpoints`: a kept checkpoint that is a no-op adapter stops the trend before any task."""
    import json

    from cli.main import main
    from harness.store import list_runs
    from tests.helpers import make_lora

    runs = _canary_env(tmp_path, monkeypatch)
    kept = tmp_path / "finetune" / "checkpoints"
    for step, scale in ((2, 1e-2), (4, 0.0)):
        ckpt = make_lora(tiny_model_dir, kept / f"checkpoint-{step}", seed=step, scale=scale)
        (ckpt / "harness_manifest.json").write_text(json.dumps({"kind": "adapter", "base": {"ref": str(tiny_model_dir)}}))
    assert main(["compare", "--baseline", str(tiny_model_dir), "--checkpoints", str(kept.parent),
                 "--suite", str(_canary_suite(tmp_path))]) == 2
    _one_error_line(capsys.readouterr().err, "checkpoint-4", "not applied")
    assert not list_runs(runs)


def _golden(tmp_path):
    import json

    path = tmp_path / "golden.jsonl"
    path.write_text("".join(json.dumps({"id": f"g{i}", "prompt": q, "ideal": a}) + "\n"
                            for i, (q, a) in enumerate([("Capital of France?", "Paris"), ("2+3?", "5")])))
    return path


def test_item3_judge_refuses_a_zero_b_adapter_candidate_or_baseline(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """Issue 14 item 3: `harness judge` ran no canary; a no-op LoRA got a 50% win rate and exit 0."""
    from cli.main import main
    from harness.store import list_runs, load_run
    from tests.helpers import make_lora

    runs = _canary_env(tmp_path, monkeypatch)
    zero = f"{tiny_model_dir}+{make_lora(tiny_model_dir, tmp_path / 'zero', scale=0.0)}"
    mild = f"{tiny_model_dir}+{make_lora(tiny_model_dir, tmp_path / 'mild', seed=1, scale=1e-2)}"
    common = ["judge", "--golden", str(_golden(tmp_path)), "--judge", str(tiny_model_dir), "--backend", "hf",
              "--max-new-tokens", "4", "--no-embeddings", "--no-injection-probe"]
    assert main([*common, "--candidate", zero, "--baseline", str(tiny_model_dir)]) == 2
    _one_error_line(capsys.readouterr().err, zero, "not applied")
    assert main([*common, "--candidate", mild, "--baseline", zero]) == 2
    _one_error_line(capsys.readouterr().err, zero, "not applied")
    assert not list_runs(runs, kind="judge"), "nothing was generated or judged"
    assert main([*common, "--candidate", mild, "--baseline", str(tiny_model_dir)]) == 0
    run = load_run(runs, list_runs(runs, kind="judge")[0]["run_id"])
    assert run.manifest["canary"][mild]["outcome"] == "passed" and run.aggregates["unverified"] == []
    assert main([*common, "--candidate", zero, "--baseline", str(tiny_model_dir), "--no-canary"]) == 0
    assert f"unverified: {zero}: the adapter canary was skipped (--no-canary)" in capsys.readouterr().out


def test_item13_a_damaged_adapter_is_refused_as_damaged_not_scored(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """Issue 14 item 13 (canary half): the canary only checked that base and adapter differ, so an
    adapter scoring 8 nats/token worse than its base (read at the wrong positions) passed."""
    from harness.backends import canary_store
    from harness.backends.canary import DEFAULT_MAX_DROP_NATS_PER_TOKEN
    from cli.main import main
    from harness.store import list_runs
    from tests.helpers import make_lora

    runs = _canary_env(tmp_path, monkeypatch)
    # Noise on the output layer of the tiny model: predictions far worse than its near-uniform base.
    broken = make_lora(tiny_model_dir, tmp_path / "broken", seed=3, scale=1.0, targets=("lm_head",))
    assert main(["eval", "--model", f"{tiny_model_dir}+{broken}", "--suite", str(_canary_suite(tmp_path))]) == 2
    _one_error_line(capsys.readouterr().err, "damaged", "nats/token", f"beyond {DEFAULT_MAX_DROP_NATS_PER_TOKEN}")
    (rec,) = canary_store.list_records(runs)
    assert rec["outcome"] == "refused: damaged"
    assert rec["figures"]["drop_nats_per_token"] > DEFAULT_MAX_DROP_NATS_PER_TOKEN
    assert rec["thresholds"]["max_drop_nats_per_token"] == DEFAULT_MAX_DROP_NATS_PER_TOKEN
    assert not list_runs(runs)


@pytest.mark.slow
def test_item13_plausibility_on_the_real_model(smollm2_dir, tmp_path, monkeypatch, capsys):
    """On SmolLM2: seeded-noise LoRAs on every projection, scale 0.05 (probes 0.3 nats/token worse)
    is scored, scale 0.1 (8.5 nats/token worse, near a uniform guess) is refused as damaged."""
    from harness.backends import canary_store
    from cli.main import main
    from harness.store import list_runs
    from tests.helpers import make_lora

    runs = _canary_env(tmp_path, monkeypatch)
    targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    base = "smollm2-135m-instruct"
    suite = str(_canary_suite(tmp_path))
    noisy = make_lora(smollm2_dir, tmp_path / "noisy", seed=2, scale=0.05, targets=targets)
    broken = make_lora(smollm2_dir, tmp_path / "broken", seed=2, scale=0.1, targets=targets)
    assert main(["eval", "--model", f"{base}+{broken}", "--suite", suite, "--limit", "2"]) == 2
    _one_error_line(capsys.readouterr().err, "damaged")
    assert main(["eval", "--model", f"{base}+{noisy}", "--suite", suite, "--limit", "2"]) == 0
    outcomes = {r["ref"].split("+")[-1]: r for r in canary_store.list_records(runs)}
    assert outcomes[str(broken)]["outcome"] == "refused: damaged" and outcomes[str(noisy)]["outcome"] == "passed"
    assert 5 < outcomes[str(broken)]["figures"]["drop_nats_per_token"] < 12
    assert 0 < outcomes[str(noisy)]["figures"]["drop_nats_per_token"] < 1
    assert len(list_runs(runs, kind="eval")) == 1


def test_item14_a_refusal_stops_the_whole_run_before_any_task(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """Issue 14 item 14: a refusal in one task left the other tasks to be scored and stored, and the
    manifest said 'not needed: every item was cached' beside cache misses."""
    import sqlite3

    from cli.main import main
    from harness.store import list_runs, load_run
    from tests.helpers import make_lora

    runs = _canary_env(tmp_path, monkeypatch)
    suite = str(_canary_suite(tmp_path, n_tasks=2))
    zero = f"{tiny_model_dir}+{make_lora(tiny_model_dir, tmp_path / 'zero', scale=0.0)}"
    mild = f"{tiny_model_dir}+{make_lora(tiny_model_dir, tmp_path / 'mild', seed=1, scale=1e-2)}"
    cache = tmp_path / "item-cache.sqlite"

    def n_cached() -> int:
        if not cache.is_file():
            return 0
        with sqlite3.connect(cache) as db:
            return db.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    assert main(["eval", "--model", zero, "--suite", suite]) == 2
    _one_error_line(capsys.readouterr().err, "not applied")
    assert main(["compare", "--baseline", str(tiny_model_dir), "--candidate", mild, "--candidate", zero,
                 "--suite", suite]) == 2
    _one_error_line(capsys.readouterr().err, zero, "not applied")
    assert n_cached() == 0 and not list_runs(runs), "no task of any model was scored or stored"
    assert main(["eval", "--model", mild, "--suite", suite]) == 0
    run = load_run(runs, list_runs(runs, kind="eval")[0]["run_id"])
    assert run.manifest["cache"]["misses"] > 0 and run.manifest["canary"]["outcome"] == "passed"
    # Its probes ran (and passed) in the refused compare, which checked every adapter before any task.
    assert run.manifest["canary"]["source"] == "record"



# --- Adapter kinds, vLLM fallback and merge: items 5, 12, 13 ----------------------------------
# The real-SmolLM2 parity test for every adapter kind is in tests/test_adapter_kinds_slow.py.

@pytest.mark.parametrize("method,reason", [("lora", None), ("dora", "vLLM does not yet support DoRA"),
                                           ("ia3", "LoRA adapters only, and this is a IA3 adapter"),
                                           ("prompt_tuning", "this is a PROMPT_TUNING adapter")])
def test_item5_adapters_vllm_refuses_are_recognised_from_their_config(tiny_model_dir, tmp_path, method, reason):
    from harness.backends.vllm import vllm_refusal
    from tests.helpers import make_adapter

    got = vllm_refusal(make_adapter(tiny_model_dir, tmp_path / method, method, scale=0.05))
    assert got == reason if reason is None else reason in got and "\n" not in got


def test_item5_vllm_run_scores_a_dora_adapter_on_hf_with_a_notice_and_starts_no_engine(
        settings, tiny_model_dir, tmp_path, caplog):
    """Before: vLLM failed to start ("vLLM does not yet support DoRA") in a 30-line traceback per
    task, and the run was left partial. Now the DoRA adapter is scored on hf, said so in one line
    and in the manifest; its base stays on the (lazy) engine, scoring like the adapter on hf."""
    from harness.backends.factory import open_models
    from harness.backends.hf import HFBackend
    from harness.backends.vllm import VLLMBackend, VLLMServer
    from harness.backends.canary import CanaryError, adapter_canary
    from harness.errors import HarnessError
    from harness.evaluate import evaluate_suite
    from harness.suites.spec import load_suite
    from tests.helpers import make_adapter

    texts = tmp_path / "texts.jsonl"
    texts.write_text('{"text": "The cat sat on the mat."}\n{"text": "One two three four."}\n')
    suite = tmp_path / "s.yaml"
    suite.write_text("# ppl\nname: s\nversion: 1\nseed: 1\ntasks:\n  - harness: perplexity\n"
                     "    data: texts.jsonl\n    metric: token_perplexity\n")
    base = str(tiny_model_dir)
    dora = f"{base}+{make_adapter(tiny_model_dir, tmp_path / 'dora', 'dora', scale=0.05)}"
    zero = f"{base}+{make_adapter(tiny_model_dir, tmp_path / 'zero', 'dora')}"  # B = 0: a no-op
    with open_models(settings, [base, dora, zero], "vllm", {"max_model_len": 128}) as backends:
        assert isinstance(backends[base], VLLMBackend) and isinstance(backends[dora], HFBackend)
        assert "vLLM does not yet support DoRA" in backends[dora].notice
        assert [r.message for r in caplog.records if "scored on hf" in r.message][0].count("\n") == 0
        run = evaluate_suite(settings, backends[dora], load_suite(suite), show_progress=False)
        assert run.status == "complete" and "DoRA" in run.manifest["backend"]["notice"]
        assert adapter_canary(backends[base], backends[dora])["vs_base_max_abs_diff_nats"] > 1e-3
        with pytest.raises(CanaryError, match="not applied"):  # base probed on hf, like the adapter
            adapter_canary(backends[base], backends[zero])
        assert backends[base].scoring_params["loglikelihood_via"] == "hf"
        assert backends[base].server.proc is None  # nothing needed the engine
    with pytest.raises(HarnessError, match="vLLM cannot serve this adapter .*DoRA"):
        VLLMServer.start(settings, base, [dora], lazy=True)


@pytest.mark.slow
def test_item5_compare_on_vllm_keeps_the_baseline_on_the_engine_and_scores_dora_on_hf(
        smollm2_dir, tmp_path, monkeypatch, capsys, caplog):
    """Before: vLLM failed to start ("vLLM does not yet support DoRA") inside a ~30-line traceback
    repeated for every task, the run was left partial and the canary marked "not needed"."""
    import json

    from cli.main import main
    from tests.helpers import make_adapter

    monkeypatch.setenv("HARNESS_HOME", str(smollm2_dir.parent.parent))
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache.sqlite"))
    suite = tmp_path / "s.yaml"  # generation starts the engine (the baseline's); perplexity is scored on hf
    suite.write_text("# golden + perplexity\nname: dora-vllm\nversion: 1\nseed: 1\ntasks:\n"
                     "  - harness: golden\n    data: smoke\n    metric: check_pass_rate\n    max_new_tokens: 12\n"
                     "    margin: 100.0\n  - harness: perplexity\n    data: alpaca_heldout\n    sample: {n: 3}\n"
                     "    metric: token_perplexity\n    margin: 50.0\n")
    dora = make_adapter(smollm2_dir, tmp_path / "dora", "dora", seed=1, scale=2e-3)
    base = "smollm2-135m-instruct"
    code = main(["compare", "--baseline", base, "--candidate", f"{base}+{dora}", "--suite", str(suite),
                 "--backend", "vllm", "--limit", "2", "--format", "json"])
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    assert "Traceback" not in err and "rerun to resume" not in err
    notices = [r.getMessage() for r in caplog.records if "scored on hf, not vllm" in r.getMessage()]
    assert notices and "vLLM does not yet support DoRA" in notices[0] and "\n" not in notices[0]
    runs = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("manifest.json")]
    evals = {m["models"][0]["ref"]: m for m in runs if m["kind"] == "eval"}
    compare = next(m for m in runs if m["kind"] == "compare")
    assert evals[base]["backend"]["name"] == "vllm" and evals[base]["backend"]["notice"] is None
    cand = evals[f"{base}+{dora}"]
    assert cand["backend"]["name"] == "hf" and "DoRA" in cand["backend"]["notice"]
    assert all(m["status"] == "complete" for m in runs)
    assert compare["backend_notices"] == [cand["backend"]["notice"]]
    assert isinstance(compare["canary"][f"{base}+{dora}"], dict)  # the probes ran (base probed on hf)
    assert any(p.name == "vllm-server.log" for p in (tmp_path / "runs").rglob("*"))  # the engine served


def _peft_reference(base_dir, adapter_dir, pairs):
    """Log-likelihoods by PEFT's own unmerged forward with labels (virtual tokens placed by PEFT)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32),
                                      str(adapter_dir)).eval()
    out = []
    for prefix, target in pairs:
        ids = torch.tensor([prefix + target])
        with torch.no_grad():
            out.append(-float(model(input_ids=ids, labels=torch.tensor([[-100] * len(prefix) + target])).loss)
                       * len(target))
    return out


def test_item13_prompt_tuning_is_scored_after_its_virtual_tokens_on_every_path(settings, tiny_model_dir, tmp_path):
    """Before: 16 virtual tokens put in front of 15 input tokens gave 31 logit positions and hf read
    them from position 0, so every log-likelihood (and --no-fast-scorer's) was read from the wrong
    positions (held-out perplexity 140,381 against 6.81)."""
    from harness.backends.hf import HFBackend
    from harness.backends.hf_prefix import SharedPrefixScorer
    from harness.models.resolve import resolve
    from harness.records import GenerateRequest, LoglikelihoodRequest, RollingRequest
    from tests.helpers import make_adapter

    adapter = make_adapter(tiny_model_dir, tmp_path / "pt", "prompt_tuning", scale=0.05)
    backend = HFBackend(resolve(settings, f"{tiny_model_dir}+{adapter}"), dtype="float32", batch_size=4)
    shots = "".join(f"Q: what is {i} plus {i}? A: {2 * i}.\n" for i in range(12))  # a long shared prefix
    reqs = [LoglikelihoodRequest(shots + "Q: what is 7 plus 7? A:", f" {c}") for c in ("14", "12", "7", "70")]
    reqs.append(LoglikelihoodRequest("The capital of France is", " Paris, a city"))
    tok = backend.lm_tok
    pairs = [tok.encode_pair(r.context, r.continuation) for r in reqs]
    text = "One two three four five six seven."
    pairs.append(([tok.prefix_token_id], tok.encode(text)))
    want = _peft_reference(tiny_model_dir, adapter, pairs)

    plain = [r.logprob for r in backend.loglikelihood(reqs)]  # what --no-fast-scorer scores
    shared = [r.logprob for r in SharedPrefixScorer(backend).loglikelihood(reqs)]
    rolling = backend.loglikelihood_rolling([RollingRequest(text)])[0].logprob
    assert plain == pytest.approx(want[:-1], abs=1e-3)
    assert shared == pytest.approx(want[:-1], abs=1e-3)
    assert rolling == pytest.approx(want[-1], abs=1e-3)
    # Generation: a batch equals each prompt alone (PEFT ignores position ids under left padding).
    gens = [GenerateRequest.chat(p, max_new_tokens=5) for p in ("Hi", "Tell me a long story about a cat")]
    assert [g.text for g in backend.generate(gens)] == [backend.generate([g])[0].text for g in gens]


def test_item12_merged_checkpoint_is_a_compare_candidate_linked_to_its_adapter(
        tiny_model_dir, tmp_path, monkeypatch, capsys):
    import json

    from cli.main import main
    from harness.models.resolve import hash_files
    from tests.helpers import make_lora

    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    adapter = make_lora(tiny_model_dir, tmp_path / "lora", scale=0.05, manifest_base={"ref": str(tiny_model_dir)})
    merged = tmp_path / "merged"
    assert main(["finetune", "merge", str(adapter), "--out", str(merged)]) == 0
    out = capsys.readouterr().out
    man = json.loads((merged / "harness_manifest.json").read_text())
    check = man["verification"]
    # The tiny base is float32: the merge is exact, and says so.
    assert check["is_within_tolerance"] and check["max_abs_logprob_diff_nats"] < 1e-3 and "merge check" in out
    texts = tmp_path / "texts.jsonl"
    texts.write_text('{"text": "The cat sat on the mat."}\n{"text": "One two three four."}\n')
    suite = tmp_path / "s.yaml"
    suite.write_text("# ppl\nname: s\nversion: 1\nseed: 1\ntasks:\n  - harness: perplexity\n"
                     "    data: texts.jsonl\n    metric: token_perplexity\n    margin: 5.0\n")
    assert main(["compare", "--baseline", str(tiny_model_dir), "--candidate", str(merged), "--suite", str(suite),
                 "--format", "json"]) == 0
    run_dir = next(p for p in (tmp_path / "runs").rglob("manifest.json")
                   if json.loads(p.read_text())["kind"] == "compare").parent
    cand = json.loads((run_dir / "manifest.json").read_text())["candidates"][0]
    assert cand["merged_from"]["adapter_hash"] == hash_files(adapter, ("adapter_config.json", "adapter_model.safetensors"))
    assert cand["merged_from"]["adapter_path"] == str(adapter.resolve())


@pytest.mark.slow
def test_item12_a_bfloat16_merge_reports_what_it_lost_and_float32_keeps_it_exact(smollm2_dir, tmp_path, monkeypatch,
                                                                                 capsys):
    """Before: merge stored float32-merged weights in the base's bfloat16 and said nothing, although the
    merged checkpoint lost about a tenth of the adapter's perplexity gain."""
    import json

    from cli.main import main
    from tests.helpers import make_adapter

    monkeypatch.setenv("HARNESS_HOME", str(smollm2_dir.parent.parent))
    # Like a short fine-tune (the fine-tuner's all-linear LoRA, B of order 1e-2): its deltas W + BA are
    # a few bfloat16 rounding steps, so storing the merge in bfloat16 rounds part of them away.
    adapter = make_adapter(smollm2_dir, tmp_path / "lora", "lora", seed=1, scale=0.01,
                           manifest_base={"ref": "smollm2-135m-instruct"})
    checks = {}
    for dtype in ("auto", "float32"):
        assert main(["finetune", "merge", str(adapter), "--out", str(tmp_path / dtype), "--dtype", dtype]) == 0
        out, err = capsys.readouterr()
        man = json.loads((tmp_path / dtype / "harness_manifest.json").read_text())
        checks[dtype] = (man["dtype"], man["verification"], out, err)
    dtype, check, out, err = checks["auto"]
    print(check)
    assert dtype == "bfloat16" and not check["is_within_tolerance"] and check["n_docs"] == 8
    assert f"{check['max_abs_logprob_diff_nats']:.4f}" in out and "--dtype float32" in err
    dtype, check, out, err = checks["float32"]
    print(check)
    assert dtype == "float32" and check["is_within_tolerance"] and check["max_abs_logprob_diff_nats"] < 1e-3
    assert abs(check["perplexity_delta"]) < 1e-3 and err.count("warning") == 0


# --- Reports, CI recipe and smaller items: items 0, 1, 16, 17 ---------------------------------

def _forgetting_quick_compare(runs_dir):
    """A compare run with forgetting-quick's task and subject shape, built by the real statistics:
    mmlu_0shot and mmlu_5shot share every subject name; ARC and HellaSwag are acc_norm tasks."""
    import numpy as np

    from harness.compare import compare_eval_runs
    from harness.store import Run, write_run

    subjects = {"anatomy": "STEM", "astronomy": "STEM", "philosophy": "humanities", "marketing": "other"}
    metrics = {"mmlu_0shot": "acc", "mmlu_5shot": "acc", "arc_easy_local": "acc_norm",
               "arc_challenge_local": "acc_norm", "hellaswag_local": "acc_norm"}

    def eval_run(seed):
        rng = np.random.default_rng(seed)
        items = []
        for task in metrics:
            per = subjects if task.startswith("mmlu") else {task: None}
            for subject, category in per.items():
                items += [{"task": task, "item_id": f"{subject}/{i}", "subject": subject, "category": category,
                           "correct": bool(rng.random() < 0.5)} for i in range(12)]
        tasks = {t: {"metric": m, "n": 1, "margin": 5.0} for t, m in metrics.items()}
        return Run(kind="eval", manifest={"models": [{"ref": f"m{seed}"}]}, items=items,
                   aggregates={"summary": {}, "tasks": tasks})

    base, cand = eval_run(0), eval_run(1)
    results, items, flips = compare_eval_runs(base, cand, candidate_label="m1", margins={t: 5.0 for t in metrics},
                                              rng=np.random.default_rng(0))
    aggregates = {"summary": {"verdict": "pass", "n_candidates": 1, "n_failures": 0, "n_task_errors": 0},
                  "results": results, "win_rates": [], "flips": {"m1": flips}, "failures": [], "task_errors": [],
                  "trend": []}
    run = Run(kind="compare", manifest={"models": [{"ref": "m0"}, {"ref": "m1"}], "baseline": {"ref": "m0"},
                                        "candidates": [{"ref": "m1"}], "confidence": 0.95},
              items=items, aggregates=aggregates)
    write_run(runs_dir, run)
    return run


def test_item0_exports_work_when_tasks_share_subject_names(tmp_path, monkeypatch, capsys):
    import json

    from cli.main import main
    from reports.text import compare_text
    from reports.export import compare_markdown

    run = _forgetting_quick_compare(tmp_path / "runs")
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    for fmt in ("markdown", "html"):
        out = tmp_path / f"export.{fmt}"
        assert main(["report", "export", run.run_id, "--format", fmt, "--out", str(out)]) == 0, fmt
        text = out.read_text()
        assert "anatomy" in text and "mmlu" in text and "Forgetting by subject" in text
        if fmt == "html":
            assert "data:image/png;base64," in text  # the subject plot is drawn, keyed by (task, subject)
    assert "Forgetting by category" in compare_markdown(run)
    assert "verdict: PASS" in compare_text(run)
    json.dumps(run.aggregates, default=str)


def test_item16_results_carry_the_metric_the_suite_names(tmp_path):
    from reports.export import export_run

    run = _forgetting_quick_compare(tmp_path / "runs")
    by_task = {r["task"]: r["metric"] for r in run.aggregates["results"] if r["scope"] == "task"}
    assert by_task == {"mmlu_0shot": "acc", "mmlu_5shot": "acc", "arc_easy_local": "acc_norm",
                       "arc_challenge_local": "acc_norm", "hellaswag_local": "acc_norm"}
    assert all(r["metric"] == "acc" for r in run.aggregates["results"] if r["task"].startswith("mmlu"))
    html_text = export_run(run, "html")
    assert html_text.count("<td>acc_norm</td>") == 3



@pytest.mark.parametrize("harness_exit,job_fails", [(0, False), (1, True), (2, True)])
def test_item1_the_shipped_ci_gate_step_fails_on_regression_and_on_error(tmp_path, harness_exit, job_fails):
    """Runs the shipped workflow's gate step as GitHub runs a `shell: bash` step, with a stand-in harness."""
    import os
    import stat
    import subprocess
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parent.parent
    workflow_text = (repo / "docs" / "ci" / "adapter-gate.yml").read_text()
    recipe = (repo / "docs" / "ci-recipe.md").read_text()
    assert "```yaml\n" + workflow_text + "```" in recipe, "docs/ci-recipe.md must reproduce docs/ci/adapter-gate.yml"
    steps = yaml.safe_load(workflow_text)["jobs"]["gate"]["steps"]
    gate = next(s for s in steps if s.get("id") == "gate")
    assert gate.get("shell") == "bash"
    fake = tmp_path / ".venv" / "bin" / "harness"
    fake.parent.mkdir(parents=True)
    fake.write_text(f"#!/bin/sh\necho '| candidate | verdict |'\nexit {harness_exit}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "step.sh").write_text(gate["run"])
    env = {**os.environ, "GITHUB_OUTPUT": str(tmp_path / "output"), "GITHUB_STEP_SUMMARY": str(tmp_path / "summary")}
    # GitHub's command for `shell: bash`.
    done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "step.sh"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode != 0) == job_fails, done.stderr
    assert f"status={harness_exit}" in (tmp_path / "output").read_text()
    assert "| candidate | verdict |" in (tmp_path / "summary").read_text()


def test_item17_compare_errors_name_an_endpoint_candidate_in_full(tmp_path, monkeypatch, capsys, tiny_model_dir):
    from cli.main import main

    suite = tmp_path / "ppl.yaml"
    suite.write_text("# perplexity on two held-out texts\nname: ppl\nversion: 1\nseed: 0\ntasks:\n"
                     "  - harness: perplexity\n    data: alpaca_heldout\n    sample: {n: 2}\n"
                     "    metric: token_perplexity\n")
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    endpoint = "openai:served-model@http://127.0.0.1:9/v1"  # port 9 (discard): refused at once
    code = main(["compare", "--baseline", str(tiny_model_dir), "--candidate", endpoint, "--suite", str(suite)])
    assert code == 2  # the endpoint is fingerprinted before anything is scored (harness.models.fingerprint)
    assert capsys.readouterr().err.strip().splitlines() == [
        f"harness: error: endpoint http://127.0.0.1:9/v1 unreachable for '{endpoint}' "
        "([Errno 111] Connection refused); is the server running?"]


def test_item17_runs_list_says_when_runs_exist_but_none_match(tmp_path, monkeypatch, capsys):
    from cli.main import main
    from harness.store import Run, write_run

    write_run(tmp_path / "runs", Run(kind="eval", manifest={"models": [{"ref": "m"}]}))
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    assert main(["runs", "list", "--status", "failed"]) == 0
    assert capsys.readouterr().out.strip() == f"no runs match --status failed (1 runs under {tmp_path / 'runs'})"


def test_item17_models_show_names_an_adapter_reference_an_adapter(tmp_path, monkeypatch, capsys, tiny_model_dir):
    from cli.main import main
    from tests.helpers import make_lora

    adapter = make_lora(tiny_model_dir, tmp_path / "lora", scale=0.01)
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    assert main(["models", "show", f"{tiny_model_dir}+{adapter}"]) == 0
    assert "  kind    adapter over a local base\n" in capsys.readouterr().out


@pytest.mark.slow
def test_item0_compare_prints_every_format_on_the_shipped_forgetting_suite(tmp_path, monkeypatch, capsys,
                                                                           smollm2_tokenizer_dir):
    """`harness compare --suite forgetting-quick` in text, json and markdown (real lm-eval tasks, two tiny
    models with room for 5-shot MMLU), then `report export` of the stored run in both formats."""
    import json

    from cli.main import main
    from harness.store import list_runs
    from tests.conftest import build_tiny_llama

    base = build_tiny_llama(tmp_path / "base", smollm2_tokenizer_dir, seed=0, max_positions=4096)
    cand = build_tiny_llama(tmp_path / "cand", smollm2_tokenizer_dir, seed=1, max_positions=4096)
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    argv = ["compare", "--baseline", str(base), "--candidate", str(cand), "--suite", "forgetting-quick", "--limit", "1"]
    outputs = {}
    for fmt in ("text", "json", "markdown"):
        assert main([*argv, "--format", fmt]) in (0, 1), fmt
        outputs[fmt] = capsys.readouterr().out
    assert "verdict:" in outputs["text"]
    results = json.loads(outputs["json"])["results"]
    assert {r["task"] for r in results if r["scope"] == "subject"} == {"mmlu_0shot", "mmlu_5shot"}
    assert {r["metric"] for r in results if r["task"] == "hellaswag_local"} == {"acc_norm"}
    assert "Forgetting by subject" in outputs["markdown"]
    run_id = list_runs(tmp_path / "runs", kind="compare")[0]["run_id"]
    for fmt in ("markdown", "html"):
        assert main(["report", "export", run_id, "--format", fmt, "--out", str(tmp_path / f"x.{fmt}")]) == 0

# --- Inputs, errors, statuses and limits: items 4, 6, 7, 8, 9, 10, 11, 15 ----------------------
# Real CLI invocations on the tiny model (context 256 tokens): in-process through cli.main.main
# where the fault is in our code, in a subprocess where it needs a signal, a pipe or a resource limit.

import json as inputs_json  # noqa: E402  (imports of this section stay inside it; see the module docstring)
import subprocess as inputs_subprocess  # noqa: E402
import sys as inputs_sys  # noqa: E402
from pathlib import Path as InputsPath  # noqa: E402

INPUTS_SUITE = "# {name}: fault-test suite\nname: {name}\nversion: 1\ntasks:\n"
INPUTS_GOLDEN_TASK = "  - harness: golden\n    data: {data}\n    metric: check_pass_rate\n    max_new_tokens: {n}\n"


def inputs_write_golden(path: InputsPath, prompts: dict[str, str]) -> InputsPath:
    path.write_text("".join(inputs_json.dumps({"id": k, "prompt": v, "checks": {"must_include": ["a"]}}) + "\n"
                            for k, v in prompts.items()))
    return path


def inputs_write_suite(folder: InputsPath, name: str, goldens: list[str | tuple[str, int]]) -> InputsPath:
    """A suite of golden tasks: a file name, or (file name, max_new_tokens); 4 new tokens by default."""
    pairs = [g if isinstance(g, tuple) else (g, 4) for g in goldens]
    text = INPUTS_SUITE.format(name=name) + "".join(INPUTS_GOLDEN_TASK.format(data=g, n=n) for g, n in pairs)
    (folder / f"{name}.yaml").write_text(text)
    return folder / f"{name}.yaml"


@pytest.fixture
def inputs_env(tmp_path: InputsPath, monkeypatch: pytest.MonkeyPatch, data_dir: InputsPath) -> dict[str, str]:
    """A fresh HARNESS_HOME and runs dir (in this process's environment, and as a dict for subprocesses)."""
    import os

    env = {"HARNESS_HOME": str(tmp_path / "home"), "HARNESS_RUNS_DIR": str(tmp_path / "runs"),
           "HARNESS_DATA_DIR": str(data_dir)}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return {**os.environ, **env}


def inputs_runs(runs_dir: str | InputsPath, kind: str | None = None) -> list[dict]:
    from harness import store

    return store.list_runs(InputsPath(runs_dir), kind=kind)


def inputs_one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("harness:") or "Traceback" in ln]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def inputs_openai_server():
    """A stub endpoint answering "Bonjour a tous", or "[[A]]" to a judge prompt (one asking for a [[...]] verdict)."""
    from tests.helpers import ChatStub

    return ChatStub(lambda body: "[[A]]" if "[[" in inputs_json.dumps(body.get("messages", "")) else "Bonjour a tous")


@pytest.mark.slow  # a dead endpoint costs the client's retries (seconds)
def test_item4_openai_endpoint_on_the_default_backend(inputs_env, tmp_path, capsys) -> None:
    """eval/compare/judge of openai:M@URL without --backend vllm: no dtype TypeError; a dead URL is one line."""
    from cli.main import main

    inputs_write_golden(tmp_path / "g.jsonl", {"hi": "Say hello in French.", "bye": "Say goodbye."})
    suite = inputs_write_suite(tmp_path, "endpoint", ["g.jsonl"])
    server = inputs_openai_server()
    try:
        model = f"openai:served@{server.url}"
        assert main(["eval", "--model", model, "--suite", str(suite)]) == 0
        out = capsys.readouterr().out
        assert "golden:g" in out and "(complete)" in out
        assert main(["compare", "--baseline", model, "--candidate", f"openai:other@{server.url}",
                     "--suite", str(suite)]) == 0
        assert "verdict: PASS" in capsys.readouterr().out
        assert main(["judge", "--golden", str(tmp_path / "g.jsonl"), "--candidate", model, "--baseline",
                     f"openai:other@{server.url}", "--judge", f"openai:judge@{server.url}", "--backend", "hf",
                     "--no-injection-probe", "--no-embeddings"]) == 0
        assert "over 2 prompts" in capsys.readouterr().out
    finally:
        server.close()
    # Nothing listens there now: resolving the endpoint (its fingerprint) fails first, one line, exit 2.
    assert main(["eval", "--model", f"openai:gone@{server.url}", "--suite", str(suite)]) == 2
    line = inputs_one_error_line(capsys.readouterr().err)
    assert line.startswith(f"harness: error: endpoint {server.url} unreachable for 'openai:gone@{server.url}'")


def test_item6_golden_encoding_bom_and_empty_prompt(inputs_env, tmp_path, tiny_model_dir, capsys) -> None:
    """Invalid UTF-8: file, line and column, exit 2. A BOM is accepted. An empty prompt names its line."""
    from cli.main import main

    golden = tmp_path / "g.jsonl"
    suite = inputs_write_suite(tmp_path, "enc", ["g.jsonl"])
    eval_args = ["eval", "--model", str(tiny_model_dir), "--suite", str(suite)]

    golden.write_bytes(b'{"id": "a", "prompt": "Hi"}\n{"id": "b", "prompt": "caf\xff"}\n')
    assert main(eval_args) == 2
    line = inputs_one_error_line(capsys.readouterr().err)
    assert line == (f"harness: error: {suite}: tasks[0].data 'g.jsonl': golden set {golden}:2:27: "
                    "invalid UTF-8 byte 0xff; save the file as UTF-8")
    assert main(["judge", "--golden", str(golden), "--candidate", str(tiny_model_dir), "--baseline",
                 str(tiny_model_dir), "--backend", "hf"]) == 2
    assert inputs_one_error_line(capsys.readouterr().err) == (
        f"harness: error: golden set {golden}:2:27: invalid UTF-8 byte 0xff; save the file as UTF-8")
    assert not inputs_runs(inputs_env["HARNESS_RUNS_DIR"])

    # Editors' UTF-8 with a BOM, in the golden set and in the suite file: accepted.
    golden.write_bytes(b"\xef\xbb\xbf" + '{"id": "a", "prompt": "Café?"}\n'.encode())
    suite.write_bytes(b"\xef\xbb\xbf" + suite.read_bytes())
    assert main(eval_args) == 0
    assert "(complete)" in capsys.readouterr().out

    golden.write_text('{"id": "a", "prompt": "Hi"}\n{"id": "b", "prompt": "  "}\n')
    assert main(eval_args) == 2
    assert inputs_one_error_line(capsys.readouterr().err).endswith(f"{golden}:2: record: prompt is empty")


def test_item7_a_prompt_longer_than_the_context_is_unscored_alone(inputs_env, tmp_path, tiny_model_dir, capsys) -> None:
    """eval keeps the task and records the long item unscored (reason, id, line); judge leaves it out."""
    from harness import store
    from cli.main import main

    golden = inputs_write_golden(tmp_path / "g.jsonl", {"a": "Say hi.", "long": "word " * 400, "c": "Say bye."})
    suite = inputs_write_suite(tmp_path, "ctx", ["g.jsonl"])
    assert main(["eval", "--model", str(tiny_model_dir), "--suite", str(suite)]) == 0
    out = capsys.readouterr().out
    reason = (f"item 'long' ({golden}:2): prompt of 431 tokens + 4 new tokens exceeds the model's context of "
              "256 tokens")
    assert f"golden:g: unscored {reason}" in out and "request" not in out
    (entry,) = inputs_runs(inputs_env["HARNESS_RUNS_DIR"])
    run = store.load_run(InputsPath(inputs_env["HARNESS_RUNS_DIR"]), entry["run_id"])
    assert run.status == "complete"
    rows = {r["item_id"]: r for r in run.items}
    assert set(rows) == {"a", "long", "c"} and rows["a"]["passed"] is not None and rows["c"]["passed"] is not None
    assert rows["long"]["unscored_reason"] == reason and rows["long"]["source"] == f"{golden}:2"
    task = run.aggregates["tasks"]["golden:g"]
    assert task["n_scored"] == 2 and task["n_unscored"] == 1 and task["unscored"][0]["item_id"] == "long"

    assert main(["judge", "--golden", str(golden), "--candidate", str(tiny_model_dir), "--baseline",
                 str(tiny_model_dir), "--judge", str(tiny_model_dir), "--backend", "hf", "--max-new-tokens", "4",
                 "--no-injection-probe", "--no-embeddings"]) == 0
    out = capsys.readouterr().out
    assert "over 2 prompts" in out and f"not judged: item 'long' ({golden}:2): candidate answer: prompt of 431" in out
    (judge_entry,) = inputs_runs(inputs_env["HARNESS_RUNS_DIR"], kind="judge")
    judged = store.load_run(InputsPath(inputs_env["HARNESS_RUNS_DIR"]), judge_entry["run_id"])
    assert [r["item_id"] for r in judged.items] == ["a", "c"]
    assert {u["item_id"] for u in judged.aggregates["unscored"]} == {"long"}


def test_item8_unwritable_runs_dir_full_home_and_escaping_os_errors(inputs_env, tmp_path, tiny_model_dir,
                                                                    capsys, monkeypatch) -> None:
    """Checked before scoring: one line, exit 2 (never 1, the regression code); no traceback anywhere."""
    import resource
    import signal

    from cli.main import main

    inputs_write_golden(tmp_path / "g.jsonl", {"a": "Say hi."})
    suite = inputs_write_suite(tmp_path, "w", ["g.jsonl"])
    (tmp_path / "a-file").write_text("")
    # A runs directory that cannot be created (below a file): refused before a model loads.
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "a-file" / "runs"))
    for argv in (["-v", "eval", "--model", str(tiny_model_dir), "--suite", str(suite)],  # -v: "task" lines show
                 ["-v", "compare", "--baseline", str(tiny_model_dir), "--candidate", str(tiny_model_dir),
                  "--suite", str(suite)]):
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert inputs_one_error_line(captured.err) == (
            f"harness: error: runs directory {tmp_path}/a-file/runs: cannot write: Not a directory; free space "
            "there or set HARNESS_RUNS_DIR to a writable folder")
        assert "task " not in captured.err  # nothing was scored

    # A full disk (a file-size limit makes every write past 16 KiB fail, as ENOSPC would): refused at once.
    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, 16 * 1024))

    full = inputs_subprocess.run([inputs_sys.executable, "-m", "cli.main", "eval", "--model", str(tiny_model_dir),
                                  "--suite", str(suite)], env=inputs_env, capture_output=True, text=True, timeout=300,
                                 preexec_fn=limit_file_size)
    assert full.returncode == 2
    assert inputs_one_error_line(full.stderr).startswith(
        f"harness: error: runs directory {inputs_env['HARNESS_RUNS_DIR']}: cannot write: File too large; ")

    # Errors that escape later still become one line: a damaged run index (SQLite), a runs "dir" that is a file.
    runs = tmp_path / "runs2"
    runs.mkdir()
    (runs / "index.sqlite").write_bytes(b"not a database" * 100)
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(runs))
    assert main(["runs", "list"]) == 2
    assert inputs_one_error_line(capsys.readouterr().err) == (
        "harness: error: SQLite: file is not a database (the run index or the item cache)")
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "a-file"))
    assert main(["runs", "reindex"]) == 2
    assert inputs_one_error_line(capsys.readouterr().err) == (
        f"harness: error: [Errno 20] Not a directory: '{tmp_path}/a-file/index.sqlite'")


def test_item8_any_unexpected_exception_is_one_line_and_debug_shows_it(inputs_env, monkeypatch, capsys) -> None:
    import cli.runs
    from cli.main import main

    def bug(args, settings):  # the shape of item 4's TypeError: a bug, not a user error
        raise TypeError("__init__() got an unexpected keyword argument 'dtype'")

    monkeypatch.setattr(cli.runs, "run", bug)
    assert main(["runs", "list"]) == 2
    assert inputs_one_error_line(capsys.readouterr().err) == (
        "harness: error: internal error TypeError: __init__() got an unexpected keyword argument 'dtype'; "
        "rerun with --debug for the traceback")
    assert main(["--debug", "runs", "list"]) == 2
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.slow  # a subprocess that loads torch
def test_item9_sigint_mid_eval_stores_a_partial_run(inputs_env, tmp_path, tiny_model_dir) -> None:
    """Ctrl-C during the second task: exit 130, one line saying a rerun resumes, a partial run with task 1."""
    import signal

    from harness import store

    inputs_write_golden(tmp_path / "quick.jsonl", {"a": "Say hi."})
    # Long enough to be still running when the signal lands: 400 prompts x 200 new tokens.
    inputs_write_golden(tmp_path / "slow.jsonl", {f"s{i}": f"Count to {i}." for i in range(400)})
    suite = inputs_write_suite(tmp_path, "sig", ["quick.jsonl", ("slow.jsonl", 200)])
    # -v: the harness's "task NAME" lines (INFO, in the log file by default) show on stderr too.
    proc = inputs_subprocess.Popen([inputs_sys.executable, "-m", "cli.main", "-v", "eval",
                                    "--model", str(tiny_model_dir),
                                    "--suite", str(suite)], env=inputs_env, stdout=inputs_subprocess.PIPE,
                                   stderr=inputs_subprocess.PIPE, text=True)
    try:
        seen = []
        for line in proc.stderr:  # type: ignore[union-attr]
            seen.append(line)
            if "task golden:slow" in line:
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    err = "".join(seen) + err
    assert proc.returncode == 130, err
    (entry,) = inputs_runs(inputs_env["HARNESS_RUNS_DIR"])
    assert inputs_one_error_line(err) == (
        f"harness: interrupted; stored {entry['run_id']} (partial) under {inputs_env['HARNESS_RUNS_DIR']}; "
        "finished items are cached and a rerun resumes")
    run = store.load_run(InputsPath(inputs_env["HARNESS_RUNS_DIR"]), entry["run_id"])
    assert run.status == "partial" and run.manifest["interrupted"] is True
    assert [r["item_id"] for r in run.items] == ["a"]
    assert run.aggregates["tasks"]["golden:slow"]["failure_reason"].startswith("interrupted (Ctrl-C)")


def test_item10_statuses_failed_partial_and_compare_error(inputs_env, tmp_path, tiny_model_dir, capsys) -> None:
    """Nothing scored -> failed; some tasks failed -> partial; a compare verdict ERROR -> failed."""
    from cli.main import main

    inputs_write_golden(tmp_path / "ok.jsonl", {"a": "Say hi."})
    inputs_write_golden(tmp_path / "long.jsonl", {"l1": "word " * 400, "l2": "more " * 400})
    some = inputs_write_suite(tmp_path, "some", ["ok.jsonl", "long.jsonl"])
    none = inputs_write_suite(tmp_path, "none", ["long.jsonl"])
    assert main(["eval", "--model", str(tiny_model_dir), "--suite", str(some)]) == 2
    assert "(partial)" in capsys.readouterr().out
    assert main(["eval", "--model", str(tiny_model_dir), "--suite", str(none)]) == 2
    assert "(failed)" in capsys.readouterr().out
    assert main(["compare", "--baseline", str(tiny_model_dir), "--candidate", str(tiny_model_dir),
                 "--suite", str(none)]) == 2
    assert "verdict: ERROR" in capsys.readouterr().out
    statuses = {(r["kind"], r["suite"]): r["status"] for r in inputs_runs(inputs_env["HARNESS_RUNS_DIR"])}
    assert statuses[("eval", "some")] == "partial"
    assert statuses[("eval", "none")] == "failed"
    assert statuses[("compare", "none")] == "failed"


def test_item11_missing_data_file_is_a_suite_error_with_its_key_path(inputs_env, tmp_path, tiny_model_dir,
                                                                    monkeypatch, capsys) -> None:
    """Caught at suite validation, before a model loads: one line with the key path, exit 2, no run."""
    from cli.main import main

    inputs_write_golden(tmp_path / "ok.jsonl", {"a": "Say hi."})
    suite = inputs_write_suite(tmp_path, "miss", ["ok.jsonl", "foo.jsonl"])
    assert main(["-v", "eval", "--model", str(tiny_model_dir), "--suite", str(suite)]) == 2  # -v: "task" lines show
    captured = capsys.readouterr()
    assert inputs_one_error_line(captured.err).endswith(
        f"miss.yaml: tasks[1].data 'foo.jsonl': not found ({tmp_path}/foo.jsonl); paths are relative to the suite file")
    assert "task " not in captured.err and not inputs_runs(inputs_env["HARNESS_RUNS_DIR"])

    # A named set whose file is missing under HARNESS_DATA_DIR.
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "no-data"))
    (tmp_path / "named.yaml").write_text(INPUTS_SUITE.format(name="named") + "  - harness: perplexity\n"
                                         "    data: alpaca_heldout\n    metric: token_perplexity\n")
    assert main(["compare", "--baseline", str(tiny_model_dir), "--candidate", str(tiny_model_dir),
                 "--suite", str(tmp_path / "named.yaml")]) == 2
    assert inputs_one_error_line(capsys.readouterr().err).endswith(
        f"named.yaml: tasks[0].data 'alpaca_heldout': not found ({tmp_path}/no-data/instruction/alpaca/"
        f"alpaca_5000.json); named sets are read from HARNESS_DATA_DIR ({tmp_path}/no-data)")


@pytest.mark.slow  # judge answers of 256 tokens
def test_item15_compare_limit_caps_the_golden_prompts(inputs_env, tmp_path, tiny_model_dir, capsys) -> None:
    """`compare --limit 2 --golden G` judges 2 prompts per candidate, not the whole golden set."""
    import shutil

    from harness import store
    from cli.main import main

    # Judge answers get 256 new tokens: the tiny llama with a longer context (RoPE needs no retraining).
    model = shutil.copytree(tiny_model_dir, tmp_path / "tiny-1k")
    config = inputs_json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(inputs_json.dumps({**config, "max_position_embeddings": 1024}))
    golden = inputs_write_golden(tmp_path / "g.jsonl", {f"q{i}": f"Say {i}." for i in range(6)})
    suite = inputs_write_suite(tmp_path, "lim", ["g.jsonl"])
    main(["compare", "--baseline", str(model), "--candidate", str(model), "--suite", str(suite),
          "--limit", "2", "--golden", str(golden), "--judge", str(model), "--format", "json"])
    report = inputs_json.loads(capsys.readouterr().out)
    assert [w["n_prompts"] for w in report["win_rates"]] == [2]
    (judge_entry,) = inputs_runs(inputs_env["HARNESS_RUNS_DIR"], kind="judge")
    judged = store.load_run(InputsPath(inputs_env["HARNESS_RUNS_DIR"]), judge_entry["run_id"])
    assert [r["item_id"] for r in judged.items] == ["q0", "q1"]
    (eval_entry, _) = inputs_runs(inputs_env["HARNESS_RUNS_DIR"], kind="eval")
    assert len(store.load_run(InputsPath(inputs_env["HARNESS_RUNS_DIR"]), eval_entry["run_id"]).items) == 2


def test_item17_runs_list_into_a_closed_pipe_exits_quietly(inputs_env, tmp_path) -> None:
    """`harness runs list | head -1`: no BrokenPipeError traceback; exit 141 as a tool killed by SIGPIPE."""
    from harness import store

    db = store._connect(InputsPath(inputs_env["HARNESS_RUNS_DIR"]))
    with db:  # enough rows to overflow the pipe's buffer
        db.executemany("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?)",
                       [(f"run-{i:05d}", "eval", "complete", "2024-01-01", "s", "1", '["m"]', "{}", "/x")
                        for i in range(5000)])
    db.close()
    proc = inputs_subprocess.Popen([inputs_sys.executable, "-m", "cli.main", "runs", "list"], env=inputs_env,
                                   stdout=inputs_subprocess.PIPE, stderr=inputs_subprocess.PIPE)
    assert proc.stdout.readline().startswith(b"run-04999")  # type: ignore[union-attr]
    proc.stdout.close()  # type: ignore[union-attr]
    err = proc.stderr.read().decode()  # type: ignore[union-attr]
    assert proc.wait(timeout=60) == 141 and err == ""


@pytest.mark.slow  # loads lm-eval's task registry
def test_item7_an_lmeval_prompt_longer_than_the_context_names_its_document(inputs_env, tmp_path, tiny_model_dir,
                                                                          capsys) -> None:
    """lm-eval scores every request of a task, so the task fails; the reason names the document, not 'request N'."""
    from cli.main import main

    (tmp_path / "fs.yaml").write_text(INPUTS_SUITE.format(name="fs") + "  - lm_eval: arc_easy_local\n"
                                      "    num_fewshot: 25\n    limit: 2\n    metric: acc_norm\n")
    assert main(["eval", "--model", str(tiny_model_dir), "--suite", str(tmp_path / "fs.yaml")]) == 2
    out = capsys.readouterr().out
    assert "(failed)" in out and "request" not in out
    assert "FAILED  arc_easy_local document 0: context and continuation of" in out, out
