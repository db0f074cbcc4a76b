"""Issue 20 on the real SmolLM2: an unchanged `harness eval` rerun loads no weights, builds no lm-eval task,
and writes the same items (slow tier)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

SUITE = """\
# rerun: a local lm-eval task, held-out perplexity and the built-in golden smoke set, a few items each
name: rerun
version: 1
tasks:
  - lm_eval: arc_easy_local
    sample: {n: 4}
    metric: acc_norm
  - harness: perplexity
    data: alpaca_heldout
    sample: {n: 2}
    metric: token_perplexity
  - harness: golden
    data: smoke
    limit: 2
    metric: check_pass_rate
    max_new_tokens: 8
"""


def test_unchanged_eval_rerun_loads_no_weights_and_writes_the_same_items(tmp_path: Path, smollm2_dir: Path,
                                                                          data_dir: Path, monkeypatch, capsys) -> None:
    import lm_eval.tasks
    import transformers

    from cli.main import main
    from harness.store import list_runs, load_run

    suite = tmp_path / "rerun.yaml"
    suite.write_text(SUITE)
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("HARNESS_DATA_DIR", str(data_dir))
    argv = ["eval", "--model", str(smollm2_dir), "--suite", str(suite)]
    assert main(argv) == 0, capsys.readouterr().err

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an unchanged rerun loaded weights or built an lm-eval task")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", forbidden)
    monkeypatch.setattr(lm_eval.tasks.TaskManager, "__init__", forbidden)
    assert main(argv) == 0, capsys.readouterr().err
    second, first = (Path(r["path"]) for r in list_runs(tmp_path / "runs", kind="eval"))
    assert (second / "items.jsonl").read_bytes() == (first / "items.jsonl").read_bytes()
    again = load_run(tmp_path / "runs", second.name)
    assert again.manifest["cache"]["misses"] == 0
    assert again.manifest["cache"]["tasks_from_manifest"] == ["arc_easy_local", "perplexity:alpaca_heldout",
                                                               "golden:smoke"]
    assert again.aggregates["summary"] == load_run(tmp_path / "runs", first.name).aggregates["summary"]

