"""Fast tier: quiet by default. Library logs go to HARNESS_HOME/logs/ and the run folder, not the
terminal (unless -v); one progress bar per task; one bar for training; tied weights saved once."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from cli.main import main
from harness import logs


def _bars(err: str) -> list[str]:
    """Every progress-bar state drawn on stderr ('\\r' redraws split), as its description."""
    return [re.split(r":\s+\d+%\|", line)[0].strip() for line in re.split(r"[\r\n]", err) if "%|" in line]


def test_library_info_goes_to_the_file_and_own_warnings_to_the_terminal(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture):
    session = logs.setup(tmp_path, "eval")
    try:
        logging.getLogger("lm_eval.api.task").info("Building contexts for mmlu_local_anatomy on rank 0")
        logging.getLogger("httpx").info('HTTP Request: POST http://127.0.0.1/v1/completions "HTTP/1.1 200 OK"')
        logging.getLogger("transformers.modeling_utils").warning("some weights were not initialized")
        logging.getLogger("harness.evaluate").info("task mmlu_0shot (mmlu_local)")
        logging.getLogger("harness.backends.factory").warning("scored on hf, not vllm")
        files = logs.run_files()
        line = logs.footer()
    finally:
        logs.end()
    err = capsys.readouterr().err
    assert "scored on hf, not vllm" in err  # a warning a user must act on stays visible
    for quiet in ("Building contexts", "HTTP Request", "not initialized", "task mmlu_0shot"):
        assert quiet not in err
    assert session.path.parent == tmp_path / "logs" and session.path.name.startswith("eval-")
    text = session.path.read_text()
    for logged in ("Building contexts", "HTTP Request", "not initialized", "task mmlu_0shot", "scored on hf"):
        assert logged in text
    assert files == {"harness.log": text}
    assert line == f"log: {session.path} (2 warnings or errors)"
    assert logs.current() is None and logs.run_files() == {} and logs.footer() is None


def test_verbose_shows_library_info_and_a_quiet_log_names_no_file(tmp_path: Path, capsys: pytest.CaptureFixture):
    logs.setup(tmp_path, "eval", verbose=True)
    try:
        logging.getLogger("lm_eval.api.task").info("Building contexts for x on rank 0")
        assert logs.footer() is None  # nothing at WARNING: the path is not printed
    finally:
        logs.end()
    assert "INFO lm_eval.api.task: Building contexts for x on rank 0" in capsys.readouterr().err


def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data_dir: Path) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("HARNESS_HOME", str(home))
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("HARNESS_DATA_DIR", str(data_dir))
    return home


def test_eval_shows_one_bar_per_task_and_stores_the_log(tmp_path: Path, tiny_model_dir: Path, data_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture):
    home = _env(monkeypatch, tmp_path, data_dir)
    suite = tmp_path / "two.yaml"
    suite.write_text("name: two\nversion: 1\ntasks:\n"
                     "  - lm_eval: hellaswag_local\n    limit: 2\n    metric: acc_norm\n"
                     "  - lm_eval: arc_easy_local\n    limit: 2\n    metric: acc_norm\n")
    argv = ["eval", "--model", str(tiny_model_dir), "--suite", str(suite), "--dtype", "float32", "--no-canary"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    for noise in ("Building contexts", "Loading weights", "Generating", "INFO ", "HTTP Request"):
        assert noise not in captured.err
    model = Path(tiny_model_dir).name
    assert set(_bars(captured.err)) == {f"hellaswag_local ({model})", f"arc_easy_local ({model})"}
    assert "written to" in captured.out
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    stored = (run_dir / "harness.log").read_text()
    assert "INFO lm_eval" in stored  # the libraries' lines travel with the run
    (log_file,) = (home / "logs").glob("eval-*.log")
    assert "INFO lm_eval" in log_file.read_text()

    # -v: the same lines on the terminal too. --limit 2 changes the tasks' manifest keys (an unchanged rerun
    # would take each task whole from its manifest, running nothing), so lm-eval runs again and every item
    # comes from the item cache, and the bars say so.
    assert main(["-v", *argv, "--limit", "2"]) == 0
    err = capsys.readouterr().err
    assert "INFO lm_eval" in err
    finals = {_bars(line)[0]: line for line in re.split(r"[\r\n]", err) if "100%|" in line}
    assert len(finals) == 2 and all("8/8, 8 cached" in line for line in finals.values()), finals


def test_finetune_full_shows_one_training_bar_and_saves_tied_weights_once(
        tmp_path: Path, tiny_model_dir: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture):
    from safetensors import safe_open

    _env(monkeypatch, tmp_path, data_dir)
    rows = [{"instruction": f"Write the number {i} in words.", "input": "", "output": f"It is {i}."} for i in range(16)]
    (tmp_path / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tmp_path / "full.yaml"
    cfg.write_text(f"base: {tiny_model_dir}\nmethod: full\noutput_dir: {tmp_path / 'out'}\n"
                   f"data:\n  train: {tmp_path / 'sft.jsonl'}\n  validation_fraction: 0.25\n  benchmarks: []\n"
                   "  max_length: 64\ntrain:\n  max_steps: 2\n  batch_size: 2\n  eval_every_steps: 2\n"
                   "  logging_steps: 1\n")
    assert main(["finetune", str(cfg)]) == 0
    err = capsys.readouterr().err
    assert set(_bars(err)) == {"training"}  # no Trainer evaluation bars, no datasets map bars
    assert "{'loss'" not in err and "'eval_loss'" not in err
    assert re.search(r"validation loss: \d+\.\d{4} \(step 0\), \d+\.\d{4} \(step 2\); best \d+\.\d{4}", err), err

    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys
    base_size = (Path(tiny_model_dir) / "model.safetensors").stat().st_size
    assert (tmp_path / "out" / "model.safetensors").stat().st_size <= base_size * 1.05


def test_tie_shared_aliases_copies_so_save_pretrained_writes_them_once(tiny_model_dir: Path, tmp_path: Path):
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from finetune.train import tie_shared

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    copies = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}  # what a dtype change does
    assert copies["lm_head.weight"].data_ptr() != copies["model.embed_tokens.weight"].data_ptr()
    tied = tie_shared(model, copies)
    assert tied["lm_head.weight"] is tied["model.embed_tokens.weight"]
    model.to(torch.bfloat16).save_pretrained(tmp_path / "m", state_dict=tied, safe_serialization=True)
    with safe_open(str(tmp_path / "m" / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in set(f.keys())
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert torch.equal(again.lm_head.weight, again.model.embed_tokens.weight)

    model.config.tie_word_embeddings = False  # untied models keep every tensor
    assert tie_shared(model, copies) is copies
