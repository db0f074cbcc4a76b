"""Fast tier: `harness finetune` through the real CLI entry, two steps per method on the tiny random llama."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.main import main

METHODS = ["lora", "qlora", "dora", "ia3", "prompt_tuning", "full"]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> Path:
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HARNESS_DATA_DIR", str(data_dir))
    monkeypatch.chdir(tmp_path)
    rows = [{"instruction": f"Write the number {i} in words and add a short fact about it.", "input": "",
             "output": f"The number {i} is written as {i}. It is {'even' if i % 2 == 0 else 'odd'}."}
            for i in range(24)]
    (tmp_path / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    prefs = [{"prompt": f"Say hello to person {i}.", "chosen": f"Hello, person {i}!",
              "rejected": f"Go away {i}."} for i in range(16)]
    (tmp_path / "pref.jsonl").write_text("".join(json.dumps(r) + "\n" for r in prefs))
    return tmp_path


def _config(d: Path, base: Path, method: str, data: str = "sft.jsonl", **extra: str) -> Path:
    text = f"""\
# harness finetune cfg.yaml
base: {base}
method: {method}
output_dir: {d / ('out-' + method)}
data:
  train: {d / data}
  validation_fraction: 0.25
  benchmarks: []
  max_length: 64
train:
  max_steps: 2
  batch_size: 2
  eval_every_steps: 2
  logging_steps: 1
"""
    p = d / f"{method}.yaml"
    p.write_text(text + "".join(f"{k}: {v}\n" for k, v in extra.items()))
    return p


@pytest.mark.parametrize("method", METHODS)
def test_two_step_run_writes_checkpoint_and_manifest(env: Path, tiny_model_dir: Path, method: str):
    from harness.models.resolve import resolve
    from harness.settings import Settings

    assert main(["finetune", str(_config(env, tiny_model_dir, method))]) == 0
    out = env / f"out-{method}"
    man = json.loads((out / "harness_manifest.json").read_text())
    settings = Settings.from_env()
    base = resolve(settings, str(tiny_model_dir))
    assert man["base"] == {"ref": str(tiny_model_dir), "hash": base.base_hash, "path": str(tiny_model_dir)}
    assert man["method"] == method and man["steps"] == 2
    assert man["hyperparameters"]["train"]["max_steps"] == 2
    assert man["data"]["splits"]["train"]["count"] == 18 and man["data"]["splits"]["validation"]["count"] == 6
    assert [p["step"] for p in man["loss_history"]["validation"]] == [0, 2]
    assert man["stopped_early"] is False and man["loss_history"]["train"] and man["tokens_per_s"] > 0 and man["peak_rss_mib"] > 0
    assert "leakage" in man["data"] and (out / "tokenizer.json").is_file()
    assert (out / "data" / "validation.jsonl").is_file()
    assert not (env / f"out-{method}.work").exists()
    if method == "full":
        assert resolve(settings, str(out)).base_hash != base.base_hash  # a loadable local model, changed weights
    else:
        assert (out / "adapter_model.safetensors").is_file()
        resolved = resolve(settings, f"{tiny_model_dir}+{out}")  # the harness accepts the adapter over its base
        assert resolved.adapter_hash


def test_dpo_on_base_and_on_top_of_sft_adapter(env: Path, tiny_model_dir: Path):
    from harness.models.resolve import resolve
    from harness.settings import Settings

    assert main(["finetune", str(_config(env, tiny_model_dir, "lora"))]) == 0
    assert main(["finetune", str(_config(env, tiny_model_dir, "dpo", data="pref.jsonl"))]) == 0
    man = json.loads((env / "out-dpo" / "harness_manifest.json").read_text())
    assert man["method"] == "dpo" and man["init_adapter"] is None
    # ln 2: the policy starts equal to its reference
    assert man["loss_history"]["validation"][0]["loss"] == pytest.approx(0.6931, abs=1e-3)
    cfg = _config(env, tiny_model_dir, "dpo", data="pref.jsonl")
    assert main(["finetune", str(cfg), f"output_dir={env / 'out-dpo-sft'}",
                 f"dpo.init_adapter={env / 'out-lora'}"]) == 0
    man = json.loads((env / "out-dpo-sft" / "harness_manifest.json").read_text())
    assert man["init_adapter"]["path"] == str(env / "out-lora")
    assert resolve(Settings.from_env(), f"{tiny_model_dir}+{env / 'out-dpo-sft'}").adapter_hash


def test_merge_gives_a_local_model_equal_to_base_plus_adapter(env: Path, tiny_model_dir: Path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from harness.models.resolve import resolve
    from harness.settings import Settings

    assert main(["finetune", str(_config(env, tiny_model_dir, "lora")), "train.learning_rate=0.05"]) == 0
    assert main(["finetune", "merge", str(env / "out-lora"), "--out", str(env / "merged")]) == 0
    resolve(Settings.from_env(), str(env / "merged"))
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(env / "merged", dtype=torch.float32)(ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        plain = base(ids).logits
        adapted = PeftModel.from_pretrained(base, str(env / "out-lora"))(ids).logits
    assert not torch.allclose(adapted, plain, atol=1e-4)  # the adapter changed something
    assert torch.allclose(merged, adapted, atol=1e-3)
    assert main(["finetune", "merge", str(env / "out-lora")]) == 2  # --out missing: one-line error


def test_adapter_refused_on_another_base(env: Path, tiny_model_dir: Path, smollm2_tokenizer_dir: Path):
    from conftest import build_tiny_llama

    other = build_tiny_llama(env / "other-base", smollm2_tokenizer_dir, seed=1)
    assert main(["finetune", str(_config(env, tiny_model_dir, "lora"))]) == 0
    assert main(["models", "show", f"{other}+{env / 'out-lora'}"]) == 2
    assert main(["finetune", "merge", str(env / "out-lora"), "--out", str(env / "m"), "--base", str(other)]) == 2
    assert not (env / "m").exists()


def test_resume_continues_from_checkpoint(env: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture):
    import finetune.train as train

    cfg = _config(env, tiny_model_dir, "lora")
    cfg.write_text(cfg.read_text().replace("eval_every_steps: 2", "eval_every_steps: 1"))
    # Interrupt after training, before the output is written: no output dir, checkpoints kept.
    monkeypatch.setattr(train, "_save", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert main(["finetune", str(cfg)]) == 130
    assert not (env / "out-lora").exists()
    assert sorted(p.name for p in (env / "out-lora.work").glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    monkeypatch.undo()
    capsys.readouterr()
    assert main(["finetune", str(cfg)]) == 2  # refuses to overwrite the earlier run's checkpoints
    assert "train.resume=true" in capsys.readouterr().err
    assert main(["finetune", str(cfg), "train.resume=true", "train.max_steps=3"]) == 0
    man = json.loads((env / "out-lora" / "harness_manifest.json").read_text())
    assert man["steps"] == 3 and [p["step"] for p in man["loss_history"]["validation"]] == [1, 2, 3]


def test_bad_inputs_exit_2_with_one_line(env: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture):
    cfg = _config(env, tiny_model_dir, "lora")
    assert main(["finetune", str(cfg), "method=sft"]) == 2
    assert "method: unknown value 'sft'" in capsys.readouterr().err
    (env / "bad.jsonl").write_text('{"instruction": "a", "output": "b"}\n{"instruction": oops}\n')
    assert main(["finetune", str(cfg), f"data.train={env / 'bad.jsonl'}"]) == 2
    assert f"{env / 'bad.jsonl'}:2: malformed JSONL row" in capsys.readouterr().err
    assert main(["finetune", str(_config(env, tiny_model_dir, "dpo"))]) == 2  # SFT rows for DPO
    assert "needs preference rows" in capsys.readouterr().err


def test_report_to_mlflow_keeps_an_offline_store_with_the_checkpoint(env: Path, tiny_model_dir: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture):
    import os

    from mlflow.tracking import MlflowClient

    from harness import extras

    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.delenv(var, raising=False)
    cfg = _config(env, tiny_model_dir, "lora")
    assert main(["finetune", str(cfg), "train.report_to=neptune"]) == 2
    assert "train.report_to: unknown value 'neptune'" in capsys.readouterr().err
    assert main(["finetune", str(cfg), "train.report_to=mlflow"]) == 0
    assert "MLFLOW_TRACKING_URI" not in os.environ  # set for the training only
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient((env / "out-lora" / "logs" / "mlruns").as_uri())
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1 and runs[0].info.run_name == "out-lora"
    assert {"loss", "eval_loss", "learning_rate"} <= set(runs[0].data.metrics)
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "eval_loss")] == [0, 2]
    monkeypatch.setattr(extras, "is_installed", lambda module: False)
    assert main(["finetune", str(cfg), "train.report_to=tensorboard"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "train.report_to=tensorboard needs the tensorboard package: pip install 'llm-harness[tensorboard]'")


def test_prep_reports_planted_benchmark_leak(env: Path, tiny_model_dir: Path, data_dir: Path,
                                             capsys: pytest.CaptureFixture):
    import csv

    with (data_dir / "mmlu" / "data" / "test" / "anatomy_test.csv").open() as f:
        question = next(row[0] for row in csv.reader(f) if len(row[0].split()) > 15)
    lines = (env / "sft.jsonl").read_text().splitlines()
    lines.insert(3, json.dumps({"instruction": question, "input": "", "output": "A"}))
    (env / "sft.jsonl").write_text("\n".join(lines) + "\n")
    cfg = _config(env, tiny_model_dir, "lora")
    assert main(["finetune", "prep", str(cfg), "data.benchmarks=[mmlu]", "data.validation_fraction=0"]) == 0
    out = capsys.readouterr().out
    assert "mmlu             1 training examples flagged" in out
    report = json.loads((env / "out-lora.work" / "data" / "report.json").read_text())
    hit = report["leakage"]["references"]["mmlu"]["hits"][0]
    assert hit["train"].endswith("sft.jsonl:4") and hit["item"].startswith("mmlu/test/anatomy_test:")
    assert report["splits"]["train"]["count"] == 24  # the planted row was dropped
    assert main(["finetune", "prep", str(cfg), "data.benchmarks=[mmlu]", "data.on_leak=error"]) == 2


def test_training_prompt_tokens_equal_evaluation_prompt(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    from finetune.chat import tokenize_example
    from finetune.data import Example

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ex = Example(prompt=(("system", "Be brief."), ("user", "Capital of France?")), completion="Paris.")
    row = tokenize_example(tok, ex, 256)
    n_prompt = row["completion_mask"].index(1)
    eval_ids = tok.apply_chat_template([{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": "Capital of France?"}],
                                       add_generation_prompt=True, tokenize=True, return_dict=False)
    assert row["input_ids"][:n_prompt] == list(eval_ids)
    assert tok.decode(row["input_ids"][n_prompt:]).startswith("Paris.<|im_end|>")
    assert tokenize_example(tok, ex, 16) is None  # prompt alone too long: dropped, not truncated
