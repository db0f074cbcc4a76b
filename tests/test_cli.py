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
