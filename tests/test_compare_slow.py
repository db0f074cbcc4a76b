"""The gate on the real SmolLM2: a damaged adapter is caught, a mild one passes (slow tier)."""
import json


from cli.main import main
from harness.compare import is_perplexity
from tests.helpers import arc_ppl_suite, make_lora



def test_gate_catches_a_damaged_adapter_and_passes_a_mild_one(smollm2_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_HOME", str(smollm2_dir.parent.parent))
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    suite = arc_ppl_suite(tmp_path / "gate.yaml", name="gate-real", seed=7, arc_n=40, ppl_n=30,
                          arc_margin=15.0, ppl_margin=10.0)
    mild = make_lora(smollm2_dir, tmp_path / "mild", seed=1, scale=2e-3)
    # Noise at scale 0.05 still scores (probes 0.3 nats/token worse); 0.1 is near a uniform guess,
    # which the canary refuses as damaged before scoring (tests/test_faults.py, item 13).
    damaged = make_lora(smollm2_dir, tmp_path / "damaged", seed=2, scale=0.05,
                        targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))
    base = "smollm2-135m-instruct"
    assert main(["compare", "--baseline", base, "--candidate", f"{base}+{mild}", "--suite", str(suite),
                 "--format", "json"]) == 0
    passed = json.loads(capsys.readouterr().out)
    assert passed["summary"]["verdict"] == "pass"
    assert main(["compare", "--baseline", base, "--candidate", f"{base}+{damaged}", "--suite", str(suite),
                 "--format", "json"]) == 1
    failed = json.loads(capsys.readouterr().out)
    assert failed["summary"]["verdict"] == "regression"
    ppl = next(r for r in failed["results"] if is_perplexity(r["metric"]))
    assert ppl["verdict"] == "fail" and ppl["candidate_value"] > ppl["baseline"]
