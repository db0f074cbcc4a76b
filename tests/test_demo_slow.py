"""The main job end to end, at CI scale (DEMO_SCALE=ci): fine-tune, serve, evaluate, judge, gate."""

from harness import store
from cli.demo import run_demo



def test_demo_pipeline_runs_and_a_second_run_reuses_everything(tmp_path, harness_home, data_dir, capsys):
    from harness.settings import Settings

    home = tmp_path / "home"
    settings = Settings(home=home, runs_dir=tmp_path / "runs", data_dir=data_dir,
                        models_dir=harness_home / "models", cache_path=home / "items.sqlite")
    assert run_demo(settings, "ci") == 0
    first = capsys.readouterr().out
    assert "gate verdict:" in first and "win rate of" in first and "harness report" in first
    # Issue 16: the judge validated on people's labels, the judge-free reference win rate with an interval
    # (a genuinely tuned adapter against its base on held-out Alpaca rows), and what the judge's number means.
    assert "judge smollm2-135m-instruct with pairwise@1 on 4 HH (≤700 chars) pairs" in first
    assert "reference win rate (MiniLM embedding cosine to the ideal" in first and "what it means:" in first
    assert len(store.list_runs(settings.runs_dir, kind="judge-validation")) == 1
    compares = store.list_runs(settings.runs_dir, kind="compare")
    assert len(compares) == 1
    run = store.load_run(settings.runs_dir, compares[0]["run_id"])
    assert {r["task"] for r in run.aggregates["results"]} >= {"arc_easy_local", "hellaswag_local"}
    assert run.aggregates["win_rates"] and "vllm-server.log" in [p.name for p in
                                                                  (settings.runs_dir / run.run_id).iterdir()]
    (w,) = run.aggregates["win_rates"]
    ref = w["reference_win_rate"]
    assert w["reference_metric"] == "embedding_similarity" and ref["n"] == 8 and ref["lo"] < ref["hi"]
    assert w["validation"] is not None and w["status"] in ("determined", "unverified", "undetermined")
    judge_run = store.load_run(settings.runs_dir, store.list_runs(settings.runs_dir, kind="judge")[0]["run_id"])
    assert all(r["item_id"].startswith("alpaca/") and int(r["item_id"].split("/")[1]) >= 4500
               for r in judge_run.items)  # held out of fine-tuning
    # Second run: the adapter is reused and every item comes from the cache.
    assert run_demo(settings, "ci") == 0
    second = capsys.readouterr().out
    assert "reusing" in second
    sources = [r for r in store.list_runs(settings.runs_dir, kind="eval")]
    latest = store.load_run(settings.runs_dir, sources[0]["run_id"])
    assert latest.manifest["cache"]["misses"] == 0
