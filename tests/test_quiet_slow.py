"""Slow tier: a real `harness eval` on SmolLM2 (lm-eval's 57 MMLU subjects, each of which logs at INFO)
prints a short transcript, and its run folder holds the log the terminal was spared."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

LINE_BUDGET = 20  # lines as `wc -l` counts them: a bar per task, the result table, the run line, the log line
REDRAW_BUDGET = 40  # lines with each '\r' redraw of a bar counted too


def test_real_eval_prints_a_short_transcript_and_stores_the_log(tmp_path: Path, smollm2_dir: Path,
                                                                harness_home: Path, data_dir: Path):
    suite = tmp_path / "quick.yaml"
    suite.write_text("name: quick\nversion: 1\nseed: 1234\ntasks:\n"
                     "  - lm_eval: mmlu_local\n    name: mmlu_0shot\n    num_fewshot: 0\n"
                     "    sample: {per_subject: 1}\n    metric: acc\n"
                     "  - lm_eval: arc_easy_local\n    sample: {n: 4}\n    metric: acc_norm\n")
    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(harness_home / "models")
    env = {**os.environ, "HARNESS_HOME": str(home), "HARNESS_RUNS_DIR": str(tmp_path / "runs"),
           "HARNESS_DATA_DIR": str(data_dir)}
    proc = subprocess.run([sys.executable, "-m", "cli.main", "eval", "--model", "smollm2-135m-instruct",
                           "--suite", str(suite)], cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    transcript = proc.stdout + proc.stderr
    assert proc.returncode == 0, transcript
    assert transcript.count("\n") <= LINE_BUDGET, transcript
    assert len(transcript.replace("\r", "\n").splitlines()) <= REDRAW_BUDGET, transcript
    for noise in ("Building contexts", "Loading weights", "Generating", "INFO "):
        assert noise not in transcript
    assert "mmlu_0shot" in proc.stdout and "written to" in proc.stdout
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    stored = (run_dir / "harness.log").read_text()
    assert stored.count("Building contexts for mmlu_local_") >= 57  # what the terminal was spared
    assert list((home / "logs").glob("eval-*.log"))
