"""A user's own lm-eval task folder on the real SmolLM2 (slow): `harness eval --include-path` scores a
multiple-choice task YAML over a local JSONL end to end, with lm-eval's own prompts and metrics."""
from __future__ import annotations

import json
from pathlib import Path

from cli.main import main as harness_main
from tests.helpers import USER_MC_TASK

ROWS = [("France", ["Paris", "Berlin", "Madrid"], 0), ("Japan", ["Seoul", "Tokyo", "Beijing"], 1),
        ("Italy", ["Vienna", "Athens", "Rome"], 2), ("Germany", ["Berlin", "Prague", "Warsaw"], 0)]  # capitals


def test_include_path_task_on_smollm2(smollm2_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    folder = tmp_path / "my_tasks"
    folder.mkdir()
    data = folder / "capitals.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is the capital of {c}?", "choices": ch, "label": y}) + "\n"
                            for c, ch, y in ROWS))
    (folder / "capitals_mc.yaml").write_text(USER_MC_TASK.format(name="capitals_mc", data=data))
    suite = tmp_path / "mine.yaml"
    suite.write_text("name: mine\nversion: 1\ntasks:\n  - lm_eval: capitals_mc\n    metric: acc\n    margin: 5.0\n")
    monkeypatch.setenv("HARNESS_HOME", str(smollm2_dir.parent.parent))
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache.sqlite"))
    assert harness_main(["eval", "--model", "smollm2-135m-instruct", "--suite", str(suite),
                         "--include-path", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "capitals_mc" in out
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    items = [json.loads(line) for line in (run / "items.jsonl").read_text().splitlines()]
    assert [r["doc_id"] for r in items] == [0, 1, 2, 3]
    assert items[0]["prompt"] == "Question: What is the capital of France?\nAnswer:"
    assert all(len(r["loglikelihoods"]) == 3 and isinstance(r["correct"], bool) for r in items)
    summary = json.loads((run / "aggregates.json").read_text())["tasks"]["capitals_mc"]
    assert summary["value"] >= 0.75  # even a 135M model knows these capitals
    assert set(summary["metrics"]) == {"acc,none", "acc_norm,none"}
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["suite"]["include_path"] == [str(folder)]
