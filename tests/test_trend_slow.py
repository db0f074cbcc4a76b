"""The forgetting curve end to end on the real SmolLM2: a finetune keeps its checkpoints,
`harness compare --checkpoints` scores each against the base in one command (slow tier)."""
import json
from pathlib import Path


from cli.main import main
from tests.helpers import arc_ppl_suite

REPO = Path(__file__).resolve().parent.parent


def test_compare_checkpoints_gives_a_forgetting_curve(smollm2_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_HOME", str(smollm2_dir.parent.parent))
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    out = tmp_path / "lora"
    assert main(["finetune", str(REPO / "finetune/configs/smollm2_lora_alpaca.yaml"), f"output_dir={out}",
                 "data.limit=60", "data.benchmarks=[]", "train.max_steps=6", "train.eval_every_steps=2",
                 "train.early_stopping_patience=null", "train.keep_checkpoints=true"]) == 0
    kept = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert kept == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    # Weights only: no pickled optimizer, scheduler or RNG state travels with a kept checkpoint.
    assert not [p for p in (out / "checkpoints").rglob("*") if p.suffix in {".pt", ".pth", ".bin"}]
    capsys.readouterr()

    suite = arc_ppl_suite(tmp_path / "trend.yaml", name="trend-real", seed=3, arc_n=24, ppl_n=12,
                          arc_margin=20.0, ppl_margin=20.0)
    code = main(["compare", "--baseline", "smollm2-135m-instruct", "--checkpoints", str(out),
                 "--suite", str(suite), "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    assert code == (1 if report["summary"]["verdict"] == "regression" else 0)
    trend = report["trend"]
    for task in ("arc_easy_local", "perplexity"):
        rows = [r for r in trend if r["task"].startswith(task)]
        assert [r["step"] for r in rows] == [2, 4, 6], trend
        assert [r["candidate"] for r in rows] == ["step-2", "step-4", "step-6"]  # named by step, not path
    # Checkpoints of one run differ from each other: the curve is not one model scored three times.
    ppl = [r["diff"]["value"] for r in trend if r["task"].startswith("perplexity")]
    assert len(set(ppl)) == 3, ppl
