"""Fault and bad-input tests: one test per item of the gate-integrity issue, each
reproducing the fault and asserting the clear message and exit code.

Sections are kept apart by area; tests that need the real SmolLM2, vLLM or lm-eval
are marked slow.
"""
from __future__ import annotations

import pytest  # noqa: F401


# --- Canary integrity: items 2, 3, 13 (plausibility), 14 --------------------------------------


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
    from harness.backends import open_models
    from harness.backends.hf import HFBackend
    from harness.backends.vllm import VLLMBackend, VLLMServer
    from harness.canary import CanaryError, adapter_canary
    from harness.errors import HarnessError
    from harness.evaluate import evaluate_suite
    from harness.suite import load_suite
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

    from harness.cli import main
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
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_dir)
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
    from harness.mc_scorer import SharedPrefixScorer
    from harness.models import resolve
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

    from harness.cli import main
    from harness.models import hash_files
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

    from harness.cli import main
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


# --- Inputs, errors, statuses and limits: items 4, 6, 7, 8, 9, 10, 11, 15 ----------------------
