"""Slow tier for issue 16: `harness judge validate` with the real SmolLM2 on HH-RLHF human labels.

The reference win rate of a genuinely tuned adapter on held-out Alpaca rows, end to end, is asserted in
tests/test_demo_slow.py, which already fine-tunes one (the demo at CI scale), so no second fine-tune is paid for.
"""
from __future__ import annotations

import math




def test_validate_smollm2_on_hh_measures_both_modes_and_a_judge_run_would_carry_it(
        smollm2_dir, tmp_path, harness_home, data_dir, monkeypatch, capsys):
    from cli.main import main
    from harness.store import list_runs, load_run
    from judges.config import load_judge_config
    from judges.validate import latest_validation

    monkeypatch.setenv("HARNESS_HOME", str(harness_home))
    monkeypatch.setenv("HARNESS_DATA_DIR", str(data_dir))
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache.sqlite"))
    argv = ["judge", "validate", "--judge", "smollm2-135m-instruct", "--limit", "4", "--max-chars", "500",
            "--backend", "hf"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "on 4 HH (≤500 chars) pairs" in out and "agreement, discrete" in out and "agreement, calibrated" in out
    (row,) = list_runs(tmp_path / "runs", kind="judge-validation")
    run = load_run(tmp_path / "runs", row["run_id"])
    assert len(run.items) == 4 and all(len(r["games"]) == 2 for r in run.items)
    # Log-probability verdicts: every game has label probabilities, so both modes are measured on all 4 pairs.
    assert all(g["via"] == "logprobs" and g["n_prompt_tokens"] > 50 for r in run.items for g in r["games"])
    cal, disc = run.aggregates["calibrated"]["win_rate"], run.aggregates["discrete"]["win_rate"]
    assert cal["n"] == disc["n"] == 4 and 0 <= cal["value"] <= 1 and not math.isnan(disc["value"])
    found = latest_validation(tmp_path / "runs", run.manifest["models"][0]["identity"], load_judge_config("pairwise"))
    assert found["run_id"] == row["run_id"] and set(found["modes"]) == {"discrete", "calibrated"}
    assert main(argv) == 0  # a rerun comes from the cache
    reruns = list_runs(tmp_path / "runs", kind="judge-validation")
    assert load_run(tmp_path / "runs", reruns[0]["run_id"]).manifest["cache"]["misses"] == 0
