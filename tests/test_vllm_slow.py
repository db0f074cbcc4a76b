"""A real vLLM server on loopback with the real SmolLM2 (slow tier).

Two engines: one with LoRA (base + two adapters + a zero adapter) and one plain
engine (base only, which also stands in for any OpenAI-compatible endpoint).
"""
import os
import signal
import threading
import time

import pytest

from harness.backends.hf import HFBackend
from harness.backends.openai_api import OpenAIBackend
from harness.backends.vllm import VLLMServer
from harness.backends.cache import CachedBackend, ItemCache
from harness.backends.canary import PROBES, CanaryError, check_adapter_applied, check_backends_agree
from harness.errors import BackendError
from harness.models.resolve import resolve
from harness.records import GenerateRequest
from tests.helpers import make_lora


PROMPTS = ["What is the capital of France?", "Name three fruits.", "Write one sentence about the sea.",
           "What is 12 times 3?"]


def _chats(n_tokens=24):
    return [GenerateRequest.chat(p, max_new_tokens=n_tokens) for p in PROMPTS]


def _group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, smollm2_dir):
    root = tmp_path_factory.mktemp("smol-adapters")
    targets = ("q_proj", "v_proj", "o_proj", "down_proj")
    return {"a1": make_lora(smollm2_dir, root / "a1", seed=1, scale=0.05, targets=targets),
            "a2": make_lora(smollm2_dir, root / "a2", seed=2, scale=0.05, targets=targets),
            "zero": make_lora(smollm2_dir, root / "zero", seed=3, scale=0.0, targets=targets)}


@pytest.fixture(scope="module")
def module_settings(tmp_path_factory, harness_home, data_dir):
    from harness.settings import Settings

    tmp = tmp_path_factory.mktemp("vllm-home")
    return Settings(home=tmp, runs_dir=tmp / "runs", data_dir=data_dir, models_dir=harness_home / "models",
                    cache_path=tmp / "items.sqlite")


@pytest.fixture(scope="module")
def resolved(module_settings, adapters, smollm2_dir):
    out = {"base": resolve(module_settings, "smollm2-135m-instruct")}
    out.update({k: resolve(module_settings, f"smollm2-135m-instruct+{v}") for k, v in adapters.items()})
    return out


@pytest.fixture(scope="module")
def lora_engine(module_settings, resolved):
    server = VLLMServer.start(module_settings, resolved["base"], [resolved[k] for k in ("a1", "a2", "zero")],
                              dtype="float32", max_model_len=1024)
    yield server
    server.close()
    assert not _group_alive(server.proc.pid), "vLLM processes outlived close()"


@pytest.fixture(scope="module")
def plain_engine(module_settings, resolved):
    server = VLLMServer.start(module_settings, resolved["base"], dtype="float32", max_model_len=1024)
    yield server
    server.close()


def test_one_engine_serves_two_adapters_that_differ_from_each_other_and_the_base(lora_engine, resolved):
    texts = {k: [g.text for g in lora_engine.backend(resolved[k]).generate(_chats())] for k in ("base", "a1", "a2")}
    assert texts["a1"] != texts["base"] and texts["a2"] != texts["base"] and texts["a1"] != texts["a2"]
    assert "Paris" in texts["base"][0]


def test_canary_refuses_a_zero_adapter_and_passes_real_ones(lora_engine, resolved):
    base = lora_engine.backend(resolved["base"])
    with pytest.raises(CanaryError, match="not applied"):
        check_adapter_applied(base, lora_engine.backend(resolved["zero"]), label="zero")
    result = check_adapter_applied(base, lora_engine.backend(resolved["a1"]), label="a1")
    assert result.max_abs_diff_nats > 0.01
    # The same adapter on vllm (its own prompt logprobs, one at a time) and on hf agree.
    agree = check_backends_agree(lora_engine.backend(resolved["a1"]), HFBackend(resolved["a1"], dtype="float32"))
    assert agree.max_abs_diff_nats < 0.15


def test_lora_engine_scores_loglikelihood_through_hf(lora_engine, resolved):
    backend = lora_engine.backend(resolved["a2"])
    assert backend.scoring_params["loglikelihood_via"] == "hf"
    via = backend.loglikelihood(list(PROBES))
    direct = HFBackend(resolved["a2"], dtype="float32", max_length=1024).loglikelihood(list(PROBES))
    assert [r.logprob for r in via] == pytest.approx([r.logprob for r in direct], abs=1e-4)
    assert lora_engine.is_alive()


def test_hf_and_vllm_greedy_outputs_agree(plain_engine, resolved):
    hf = HFBackend(resolved["base"], dtype="float32")
    ours = [g.text for g in hf.generate(_chats())]
    theirs = [g.text for g in plain_engine.backend().generate(_chats())]
    assert ours == theirs


def test_plain_engine_loglikelihood_and_openai_endpoint_agree_with_hf(plain_engine, resolved):
    hf = HFBackend(resolved["base"], dtype="float32").loglikelihood(list(PROBES))
    vl = plain_engine.backend().loglikelihood(list(PROBES))
    assert [r.logprob for r in vl] == pytest.approx([r.logprob for r in hf], abs=0.02)
    endpoint = OpenAIBackend("base", plain_engine.url, "test-endpoint")
    # Probe 2's continuation starts with "    " right after "\n": the endpoint's text
    # offsets put the merged "\n   " token in the context (see openai_api docstring).
    clean = [0, 1, 3, 4]
    oa = endpoint.loglikelihood([PROBES[i] for i in clean])
    assert [r.logprob for r in oa] == pytest.approx([hf[i].logprob for i in clean], abs=0.02)
    assert [g.text for g in endpoint.generate(_chats(12))] == [g.text for g in plain_engine.backend().generate(_chats(12))]


def test_killed_server_is_reported_and_the_rerun_resumes(plain_engine, module_settings, resolved, tmp_path):
    cache = ItemCache(tmp_path / "items.sqlite")
    prompts = [GenerateRequest.chat(f"Count from {i} to {i + 5}.", max_new_tokens=24) for i in range(24)]
    cached = CachedBackend(plain_engine.backend(), cache, chunk_size=4, show_progress=False)

    def kill_when_some_are_done():
        while len(cache) < 4:
            time.sleep(0.05)
        os.killpg(plain_engine.proc.pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_some_are_done, daemon=True)
    killer.start()
    t0 = time.time()
    with pytest.raises(BackendError, match="dead") as e:
        cached.generate(prompts)
    assert time.time() - t0 < 120 and "rerun to resume" in str(e.value)
    done_before = len(cache)
    assert 4 <= done_before < len(prompts)
    with VLLMServer.start(module_settings, resolved["base"], dtype="float32", max_model_len=1024) as fresh:
        rerun = CachedBackend(fresh.backend(), cache, chunk_size=4, show_progress=False)
        out = rerun.generate(prompts)
        assert rerun.stats == {"hits": done_before, "misses": len(prompts) - done_before}
        assert all(g.text for g in out)
    assert not _group_alive(fresh.proc.pid)
