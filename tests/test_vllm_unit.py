"""vLLM server pieces that need no engine: thread binding, the lazy start."""
from harness.backends.vllm import VLLMServer, cpu_thread_binding


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
