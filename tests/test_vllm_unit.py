"""vLLM server pieces that need no engine: thread binding, the lazy start."""
import pytest

from harness.backends.engine import cpu_thread_binding
from harness.backends.vllm import VLLMServer


def test_small_machines_bind_the_model_to_every_core():
    assert cpu_thread_binding({}, [0, 1]) == {"VLLM_CPU_OMP_THREADS_BIND": "0,1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}


def test_the_users_binding_and_large_machines_keep_their_choice():
    assert cpu_thread_binding({"VLLM_CPU_OMP_THREADS_BIND": "0"}, [0, 1]) == {}
    assert cpu_thread_binding({}, range(16)) == {}


def test_a_lazy_server_starts_nothing_until_a_request(settings, tiny_model_dir):
    server = VLLMServer.start(settings, str(tiny_model_dir), lazy=True, max_model_len=128)
    backend = server.backend()
    assert server.proc is None and not server.is_alive() and server.log_text() is None
    assert backend.scoring_params["loglikelihood_via"] == "vllm" and backend.lm_tok is not None
    backend.close()
    server.close()  # closing a server that never started is a no-op
    assert server.proc is None


def test_the_engine_context_defaults_to_the_models_capped(settings, tiny_model_dir):
    import json

    ctx = json.loads((tiny_model_dir / "config.json").read_text())["max_position_embeddings"]
    server = VLLMServer.start(settings, str(tiny_model_dir), lazy=True)
    assert server.options["max_model_len"] == min(ctx, 8192)
    assert server.backend().max_length == server.options["max_model_len"]
    server.close()


def test_a_lora_engines_scorer_loads_its_hf_delegate_only_when_it_scores(settings, tiny_model_dir, tmp_path):
    from harness.backends.hf import HFBackend
    from harness.backends.hf_prefix import with_shared_prefix
    from harness.models.resolve import resolve
    from harness.records import LoglikelihoodRequest
    from tests.helpers import make_lora

    adapter = resolve(settings, f"{tiny_model_dir}+{make_lora(tiny_model_dir, tmp_path / 'a', scale=0.05)}")
    server = VLLMServer.start(settings, str(tiny_model_dir), [adapter], lazy=True, max_model_len=128)
    backend = server.backend(adapter)
    scorer = with_shared_prefix(backend)
    assert backend._hf is None  # a fully cached rerun never loads it
    assert backend.scoring_params["hf_dtype"] == "float32"
    reqs = [LoglikelihoodRequest("The capital of France is", c) for c in (" Paris", " Rome")]
    got = [r.logprob for r in scorer.loglikelihood(reqs)]
    want = [r.logprob for r in HFBackend(adapter, dtype="float32").loglikelihood(reqs)]
    assert backend._hf is not None and server.proc is None  # scored in-process; no engine started
    assert got == pytest.approx(want, abs=1e-4)
    backend.close()
    server.close()
