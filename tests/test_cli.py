import subprocess
import sys

import pytest

from cli.main import COMMANDS, build_parser, main


def test_help_on_every_level(capsys):
    for argv in (["--help"], *[[name, "--help"] for name in COMMANDS if name in build_parser()._subparsers._group_actions[0].choices],
                 ["models", "prepare", "--help"], ["models", "show", "--help"], ["runs", "list", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(list(argv))
        assert e.value.code == 0
        assert "usage: harness" in capsys.readouterr().out


def test_user_error_is_one_line_exit_2_and_debug_shows_the_traceback(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HARNESS_HOME": str(tmp_path)}
    plain = subprocess.run([sys.executable, "-m", "cli.main", "models", "show", "no-such-model"],
                           capture_output=True, text=True, env=env, timeout=120)
    assert plain.returncode == 2
    assert plain.stderr.strip().splitlines() == [
        "harness: error: model reference 'no-such-model': 'no-such-model' is not an alias (smollm2-135m-instruct), "
        "an existing directory, or a hub id; valid forms: ALIAS, ./LOCAL_DIR, ORG/NAME, BASE+ADAPTER_DIR, openai:MODEL@URL, "
        "vllm:MODEL@URL"]
    debug = subprocess.run([sys.executable, "-m", "cli.main", "--debug", "models", "show", "no-such-model"],
                           capture_output=True, text=True, env=env, timeout=120)
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_runs_list_on_an_empty_store(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    assert main(["runs", "list"]) == 0
    assert "no runs under" in capsys.readouterr().out


def test_models_show_counts_only_adapter_files_in_the_adapter_size(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import json

    from cli.main import main
    from tests.helpers import make_lora

    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    adapter = make_lora(tiny_model_dir, tmp_path / "lora", seed=1, scale=1e-2)
    (adapter / "tokenizer.json").write_bytes(b"x" * 3_000_000)  # a tokenizer saved beside the adapter
    expected = sum(p.stat().st_size for p in adapter.glob("adapter_*"))
    assert main(["models", "show", "--json", f"mine={tiny_model_dir}+{adapter}"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["adapter_size_bytes"] == expected < 3_000_000 and info["name"] == "mine"
    assert main(["models", "show", f"{tiny_model_dir}+{adapter}"]) == 0
    out = capsys.readouterr().out
    assert f"adapter size {expected / 2**20:.1f} MiB ({expected} bytes)" in out and "name    lora" in out
