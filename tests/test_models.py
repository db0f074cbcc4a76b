import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from harness.models import resolve as models
from harness.errors import AdapterMismatchError, ModelRefError
from harness.settings import Settings
from tests.conftest import build_tiny_llama
from tests.helpers import make_lora


@pytest.fixture(scope="module")
def other_tiny_dir(tmp_path_factory, smollm2_tokenizer_dir):
    """A second tiny base with a different hidden size: adapters for one do not fit the other."""
    return build_tiny_llama(tmp_path_factory.mktemp("other-tiny"), smollm2_tokenizer_dir, seed=1, hidden=32)


def test_local_model_resolves_with_a_stable_content_hash(settings, tiny_model_dir):
    a = models.resolve(settings, str(tiny_model_dir))
    b = models.resolve(settings, str(tiny_model_dir))
    assert a.base_hash == b.base_hash and a.base_hash.startswith("sha256:") and a.adapter_hash is None


def test_adapter_for_another_base_is_refused_naming_both_bases(settings, tiny_model_dir, other_tiny_dir, tmp_path):
    adapter = make_lora(other_tiny_dir, tmp_path / "lora-other", scale=0.1)
    with pytest.raises(AdapterMismatchError) as e:
        models.resolve(settings, f"{tiny_model_dir}+{adapter}")
    msg = str(e.value)
    assert str(other_tiny_dir) in msg and str(tiny_model_dir) in msg and "does not fit" in msg
    # The same adapter on its own base resolves, with an adapter hash.
    ok = models.resolve(settings, f"{other_tiny_dir}+{adapter}")
    assert ok.adapter_hash and ok.identity.endswith(ok.adapter_hash)


def test_recorded_base_hash_must_match(settings, tiny_model_dir, tmp_path):
    adapter = make_lora(tiny_model_dir, tmp_path / "lora", scale=0.1,
                        manifest_base={"ref": "some-other-base", "hash": "sha256:" + "0" * 64})
    with pytest.raises(AdapterMismatchError, match=r"trained on base 'some-other-base'.*not on"):
        models.resolve(settings, f"{tiny_model_dir}+{adapter}")


@pytest.mark.parametrize("damage, fragment", [
    (lambda d: (d / "adapter_config.json").unlink(), "adapter_config.json missing"),
    (lambda d: (d / "adapter_config.json").write_text("{not json"), "invalid JSON at line 1"),
    (lambda d: (d / "adapter_config.json").write_text("{}"), "no 'peft_type' key"),
    (lambda d: (d / "adapter_model.safetensors").unlink(), "adapter_model.safetensors missing"),
])
def test_broken_adapter_directories_get_clear_errors(settings, tiny_model_dir, tmp_path, damage, fragment):
    adapter = make_lora(tiny_model_dir, tmp_path / "lora", scale=0.1)
    damage(adapter)
    with pytest.raises(ModelRefError, match=re.escape(fragment)):
        models.resolve(settings, f"{tiny_model_dir}+{adapter}")


def test_local_dir_without_safetensors_is_refused(settings, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelRefError, match="only safetensors"):
        models.resolve(settings, str(tmp_path))


def test_unprepared_alias_without_prepare_says_how(tmp_path, data_dir):
    s = Settings.at(tmp_path, runs_dir=tmp_path / "runs", data_dir=data_dir)
    with pytest.raises(ModelRefError, match="harness models prepare smollm2-135m-instruct"):
        models.resolve(s, "smollm2-135m-instruct", prepare=False)


def test_prepare_interrupted_in_process_leaves_nothing(tmp_path, data_dir, monkeypatch):
    s = Settings.at(tmp_path, runs_dir=tmp_path / "runs", data_dir=data_dir)

    def half_written(gguf, out, dtype):
        (out / "model.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "_convert_gguf", half_written)
    with pytest.raises(KeyboardInterrupt):
        models.prepare_alias(s, "smollm2-135m-instruct")
    assert not models.alias_dir(s, "smollm2-135m-instruct").exists()
    assert list(s.models_dir.glob(".*staging*")) == []


@pytest.mark.slow
def test_prepare_killed_midway_then_prepare_succeeds_and_show_prints_hash_and_size(tmp_path, data_dir):
    """SIGKILL skips every cleanup handler: the staging folder stays, but nothing trusts it."""
    env = {**os.environ, "HARNESS_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "cli.main", "models", "prepare", "smollm2-135m-instruct"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "models").glob(".*staging*/*.json")):
        time.sleep(0.2)
    assert proc.poll() is None, "prepare finished before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    final = tmp_path / "models" / "smollm2-135m-instruct"
    assert not final.exists()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert list((tmp_path / "models").glob(".*staging*")) == []
    manifest = json.loads((final / "harness_manifest.json").read_text())
    show = subprocess.run([sys.executable, "-m", "cli.main", "models", "show", "smollm2-135m-instruct"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert show.returncode == 0, show.stderr
    assert manifest["content_hash"] in show.stdout and "MiB" in show.stdout


@pytest.mark.slow
def test_real_smollm2_refuses_an_adapter_made_for_a_tiny_base(settings, smollm2_dir, tiny_model_dir, tmp_path):
    adapter = make_lora(tiny_model_dir, tmp_path / "tiny-lora", scale=0.1)
    with pytest.raises(AdapterMismatchError) as e:
        models.resolve(settings, f"smollm2-135m-instruct+{adapter}")
    assert str(tiny_model_dir) in str(e.value) and "smollm2-135m-instruct" in str(e.value)
