"""Fast tier for issue 16: calibrated and judge-free win rates, judge validation on human labels, and
the rule that makes a win rate (or an injection flip rate) "undetermined".

Statistics are checked against hand-computed cases. The end-to-end tests drive the real CLI with tiny
random models for the answers and, as the judge, a stub OpenAI-compatible endpoint that always answers
"[[A]]" (the first position): the HTTP path a user's API judge takes.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from harness import stats
from judges.config import load_judge_config
from judges.judge import Judge
from judges.trust import assess_injection, assess_win_rate, describe_agreement
from judges.validate import ValidationPair, load_hh_pairs, load_pairs_file, validate_judge
from tests.test_judge import ScriptedJudge, blocks, render


# --- statistics, by hand --------------------------------------------------------------------------

def test_calibrated_win_rate_cancels_a_constant_position_preference():
    # Content preference q = (0.7, 0.4, 0.6); the judge adds β = 0.2 to whichever answer is shown first.
    q = np.array([0.7, 0.4, 0.6])
    p = np.stack([q + 0.2, q - 0.2], axis=1)  # (3, 2): candidate first, candidate second
    cal = stats.estimate_calibrated_win_rate(p, np.random.default_rng(0), n_resamples=500)
    assert cal.win_rate.value == pytest.approx(q.mean()) and cal.win_rate.n == 3
    assert cal.first_position_bias == pytest.approx(0.2) and cal.position_consistency == 1.0
    assert cal.win_rate.lo < cal.win_rate.value < cal.win_rate.hi
    # A judge driven by position alone scores every prompt 0.5: a zero-width interval, no information.
    blind = stats.estimate_calibrated_win_rate([[0.9, 0.1]] * 4, np.random.default_rng(0), n_resamples=100)
    assert (blind.win_rate.value, blind.win_rate.lo, blind.win_rate.hi) == (0.5, 0.5, 0.5)
    # A prompt missing either order is left out and counted.
    part = stats.estimate_calibrated_win_rate([[0.8, 0.6], [np.nan, 0.3]], np.random.default_rng(0), n_resamples=50)
    assert part.win_rate.n == 1 and part.n_invalid_prompts == 1 and part.win_rate.value == pytest.approx(0.7)
    with pytest.raises(ValueError, match="probabilities in"):
        stats.estimate_calibrated_win_rate([[1.2, 0.1]], np.random.default_rng(0))


def test_reference_win_rate_ties_within_epsilon_and_counts_unscored():
    cand = [0.80, 0.50, 0.605, np.nan, 0.30]
    base = [0.60, 0.70, 0.600, 0.40, 0.295]
    r = stats.estimate_reference_win_rate(cand, base, np.random.default_rng(0), epsilon=0.01, n_resamples=500)
    # win, loss, tie (0.005 ≤ ε), unscored, tie: (1 + 0 + 0.5 + 0.5) / 4
    assert (r.n_wins, r.n_losses, r.n_ties, r.n_unscored) == (1, 1, 2, 1)
    assert r.win_rate.value == pytest.approx(0.5) and r.win_rate.n == 4 and "ties = 0.5" in r.win_rate.method
    with pytest.raises(ValueError, match="epsilon"):
        stats.estimate_reference_win_rate([1.0], [0.0], np.random.default_rng(0), epsilon=-1)


def test_reference_interval_covers_the_truth_in_simulation():
    """Coverage of the paired bootstrap: ~95% of intervals hold the true win probability (0.6)."""
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(200):
        wins = rng.random(60) < 0.6
        cand, base = wins.astype(float), np.zeros(60) + 0.5
        r = stats.estimate_reference_win_rate(cand, base, rng, epsilon=0.01, n_resamples=400)
        hits += r.win_rate.lo <= 0.6 <= r.win_rate.hi
    assert 0.88 <= hits / 200 <= 0.99


# --- the rule ---------------------------------------------------------------------------------------

EST = {"value": 0.62, "lo": 0.55, "hi": 0.69, "n": 80, "confidence": 0.95}


def _validation(lo, hi, mode="calibrated"):
    return {"run_id": "v1", "source": "HH", "n_pairs": 200, "modes": {mode: {"value": (lo + hi) / 2, "lo": lo, "hi": hi}}}


def test_win_rate_is_undetermined_for_position_bias_chance_agreement_or_no_variation():
    ok = assess_win_rate(EST, 0.8, _validation(0.58, 0.66), mode="calibrated", judge_ref="J")
    assert ok.status == "determined" and ok.reasons == ()
    unverified = assess_win_rate(EST, 0.8, None, mode="calibrated", judge_ref="J")
    assert unverified.status == "unverified" and "harness judge validate --judge J" in unverified.reasons[0]
    biased = assess_win_rate(EST, 0.1, _validation(0.58, 0.66), mode="calibrated", judge_ref="J")
    assert biased.status == "undetermined" and "position consistency 10% is below 50%" in biased.reasons[0]
    chance = assess_win_rate(EST, 0.8, _validation(0.47, 0.55), mode="calibrated", judge_ref="J")
    assert chance.status == "undetermined"
    assert "judge agrees with people on 51% [47%, 55%] of 200 HH pairs" in chance.reasons[0]
    narrow = {"value": 0.5002, "lo": 0.499, "hi": 0.502, "n": 16, "confidence": 0.95}
    assert "agrees with people on 50.0% [49.9%, 50.2%] of 16" in describe_agreement(narrow, 16, "HH")
    assert "includes chance (50%)" in chance.reasons[0]
    flat = assess_win_rate({**EST, "value": 0.5, "lo": 0.5, "hi": 0.5}, 0.8, None, mode="discrete", judge_ref="J")
    assert flat.status == "undetermined" and flat.reasons[0].startswith("zero-width interval")
    # A validation in the other mode does not vouch for this one.
    other = assess_win_rate(EST, 0.8, _validation(0.58, 0.66, mode="discrete"), mode="calibrated", judge_ref="J")
    assert other.status == "unverified" and "not validated in calibrated mode" in other.reasons[0]


def test_injection_flip_rate_is_undetermined_when_the_judge_never_changes_its_verdict():
    from judges.injection import measure_injection

    always_a = measure_injection(Judge(ScriptedJudge(lambda p: "[[A]]"), load_judge_config("pairwise")))
    assert always_a.n_flipped == 0
    a = assess_injection(always_a.rows)
    assert a.status == "undetermined" and "answered 'a' to all 48 probe prompts" in a.reasons[0]

    def honest(prompt):
        from judges.injection import load_injection_set

        good = {d["good"] for d in load_injection_set()}
        return "[[A]]" if blocks(prompt)[0] in good else "[[B]]"

    assert assess_injection(measure_injection(Judge(ScriptedJudge(honest), load_judge_config("pairwise"))).rows) \
        .status == "determined"


# --- validation on human labels -------------------------------------------------------------------

def test_hh_pairs_come_from_every_split_with_the_last_answer_split_off(data_dir):
    pairs, skipped = load_hh_pairs(data_dir, limit=8)
    assert len(pairs) == 8 and all(p.preferred == "a" for p in pairs)
    splits = {p.id.split("/")[1] for p in pairs}
    assert splits == {"harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled"}
    p = next(p for p in pairs if p.id == "hh/helpful-base/0")
    assert p.question.startswith("Do you know why turkeys") and p.a.startswith("To be honest")
    assert "Assistant:" not in p.a and p.a != p.b
    assert set(skipped) == {"dialogues differ", "identical answers", "no final Assistant answer"}


def test_pairs_file_errors_name_the_line_and_key(tmp_path):
    f = tmp_path / "pairs.jsonl"
    f.write_text('{"id": "1", "prompt": "q", "a": "x", "b": "y", "preferred": "a"}\n'
                 '{"id": "2", "prompt": "q", "a": "x", "preferred": "b"}\n')
    with pytest.raises(Exception, match=r"pairs.jsonl:2: key b missing"):
        load_pairs_file(f)
    f.write_text('{"id": "1", "prompt": "q", "a": "x", "b": "y", "preferred": "A"}\n')
    with pytest.raises(Exception, match=r"pairs.jsonl:1: preferred 'A'; choose a, b or tie"):
        load_pairs_file(f)


PAIRS = [ValidationPair(f"p{i}", f"question {i}", f"first {i} GOOD" if i % 2 else f"first {i}",
                        f"second {i}" if i % 2 else f"second {i} GOOD", "a" if i % 2 else "b") for i in range(8)]


def test_an_honest_judge_agrees_with_people_in_both_modes_and_ties_are_counted_apart():
    judge = Judge(ScriptedJudge(lambda p: "never asked", can_score=True), load_judge_config("pairwise"),
                  render_chat=render, count_tokens=len)
    pairs = PAIRS + [ValidationPair("t", "q", "same", "same too", "tie")]
    rows, agg = validate_judge(judge, pairs, np.random.default_rng(0), n_resamples=200)
    assert agg["discrete"]["win_rate"]["value"] == 1.0 and agg["discrete"]["win_rate"]["n"] == 8
    assert agg["calibrated"]["win_rate"]["value"] > 0.85 and agg["calibrated"]["win_rate"]["n"] == 8
    assert agg["n_human_ties"] == 1 and agg["n_judge_ties_on_human_ties"] == 1 and rows[-1]["agreement"] is None
    assert agg["discrete"]["position_consistency"] == 1.0
    assert agg["judge_tokens"]["prompt_tokens"] > 0 and agg["judge_tokens"]["n_games"] == 18


def test_a_first_position_judge_agrees_at_chance_and_says_so():
    judge = Judge(ScriptedJudge(lambda p: "[[A]]"), load_judge_config("pairwise"))
    rows, agg = validate_judge(judge, PAIRS, np.random.default_rng(0), n_resamples=200)
    d = agg["discrete"]
    assert d["win_rate"]["value"] == 0.5 and d["position_consistency"] == 0.0 and d["first_position_win_rate"] == 1.0
    assert d["n_ties"] == 8 and d["n_invalid_verdicts"] == 0 and agg["calibrated"]["win_rate"]["n"] == 0


# --- end to end: `harness judge`, `harness judge validate`, `harness compare --golden` ---------------

@pytest.fixture
def always_first_judge():
    """An OpenAI-compatible chat endpoint whose model always prefers the answer shown first."""
    from tests.helpers import ChatStub

    server = ChatStub(lambda body: "A is better. [[A]]", usage=(100, 6))
    yield f"openai:always-first@{server.url}"
    server.close()


@pytest.fixture
def cli_env(tmp_path, monkeypatch, smollm2_tokenizer_dir):
    from conftest import build_tiny_llama

    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    golden = tmp_path / "golden.jsonl"
    golden.write_text("".join(json.dumps({"id": f"g{i}", "prompt": q, "ideal": a}) + "\n" for i, (q, a) in
                              enumerate([("Capital of France?", "Paris is the capital of France."),
                                         ("2+3?", "2 + 3 = 5"), ("Say hi.", "Hi there!")])))
    models = []
    for seed in (0, 1):
        d = build_tiny_llama(tmp_path / f"tiny-{seed}", smollm2_tokenizer_dir, seed=seed)
        # `harness compare --golden` answers with up to 256 new tokens: give the random models room for them.
        config = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 1024}))
        models.append(str(d))
    return {"golden": golden, "candidate": models[0], "baseline": models[1], "runs": tmp_path / "runs"}


def test_first_position_judge_win_rate_is_undetermined_with_reason_and_exit_0(cli_env, always_first_judge, capsys):
    from cli.main import main
    from harness.store import list_runs, load_run

    argv = ["judge", "--golden", str(cli_env["golden"]), "--candidate", f"tuned={cli_env['candidate']}", "--baseline",
            cli_env["baseline"], "--judge", always_first_judge, "--backend", "hf", "--max-new-tokens", "6"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    # NAME=REF names the candidate; the baseline's default name is its folder's
    assert out.splitlines()[0].endswith(f": tuned vs {cli_env['baseline'].rstrip('/').rsplit('/', 1)[-1]}")
    assert "=> discrete win rate is UNDETERMINED" in out and "position consistency 0% is below 50%" in out
    assert "50.0%  (no interval: zero-width interval" in out and "[50.0%, 50.0%]" not in out
    assert "flip rate is UNDETERMINED" in out and "calibrated win rate  n/a" in out
    assert "reference win rate (MiniLM embedding cosine, ties within ±0.01; no judge)" in out
    (row,) = list_runs(cli_env["runs"], kind="judge")
    run = load_run(cli_env["runs"], row["run_id"])
    assert row["summary"]["win_rate_status"] == "undetermined" and row["summary"]["win_rate"] == 0.5  # still stored
    roles = {m["role"]: m for m in run.manifest["models"]}
    assert roles["candidate"]["name"] == "tuned" and roles["candidate"]["ref"] == cli_env["candidate"]
    # Tokens per game: completion from the endpoint's usage; the prompt is not countable without its tokenizer.
    games = [g for r in run.items for g in r["games"]]
    assert all(g["n_completion_tokens"] == 6 and g["n_prompt_tokens"] is None for g in games)
    assert run.aggregates["judge_tokens"] == {"n_games": 6, "prompt_tokens": 0, "completion_tokens": 36,
                                              "n_games_prompt_uncounted": 6, "n_games_completion_uncounted": 0}

    # Validated on people's labels, the same judge carries its agreement beside the win rate.
    pairs = cli_env["golden"].parent / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"id": f"v{i}", "prompt": f"q{i}", "a": f"good {i}", "b": f"bad {i}",
                                         "preferred": "a" if i % 2 else "b"}) + "\n" for i in range(6)))
    assert main(["judge", "validate", "--judge", always_first_judge, "--pairs", str(pairs)]) == 0
    out = capsys.readouterr().out
    assert "agreement, discrete    50.0%  (no interval" in out and "position consistency 0.0%" in out
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "validation       judge agrees with people on 50% of 6 pairs.jsonl pairs (no interval: zero-width) " \
           "(discrete" in out
    assert "includes chance (50%)" in out


@pytest.mark.slow  # tiny models only, but it answers 256 new tokens per golden item (about a minute on 2 cores)
def test_compare_neither_passes_nor_fails_on_an_undetermined_win_rate(cli_env, always_first_judge, tmp_path, capsys):
    from cli.main import main
    from tests.helpers import make_lora

    texts = [{"text": f"The number {i} comes after {i - 1} and before {i + 1}. " * 2} for i in range(1, 9)]
    (tmp_path / "texts.jsonl").write_text("".join(json.dumps(t) + "\n" for t in texts))
    suite = tmp_path / "suite.yaml"
    suite.write_text("# test suite: perplexity on a small text file\nname: tiny-ppl\nversion: 1\nseed: 0\n"
                     "tasks:\n  - harness: perplexity\n    data: texts.jsonl\n    metric: token_perplexity\n"
                     "    margin: 2.0\n")
    mild = make_lora(Path(cli_env["candidate"]), tmp_path / "mild", seed=1, scale=1e-2)
    code = main(["compare", "--baseline", cli_env["candidate"], "--candidate", f"{cli_env['candidate']}+{mild}",
                 "--suite", str(suite), "--golden", str(cli_env["golden"]), "--judge", always_first_judge,
                 "--format", "json"])
    captured = capsys.readouterr()
    assert captured.out.startswith("{"), captured.err[-2000:]
    report = json.loads(captured.out)
    (w,) = report["win_rates"]
    assert w["status"] == "undetermined" and any("position consistency" in r for r in w["reasons"])
    assert w["reference_win_rate"]["n"] == 3 and not math.isnan(w["reference_win_rate"]["value"])
    # The gate's verdict comes from the suite's task alone: the win rate neither passes nor fails it.
    assert code == 0 and report["summary"]["verdict"] == "pass" and report["failures"] == []
    assert [r["metric"] for r in report["results"]] == ["token_perplexity"]
    assert report["summary"]["mild win_rate_status"] == "undetermined"  # keyed by the candidate's name


def test_compare_text_says_the_win_rate_is_not_gated():
    from reports.text import compare_text
    from harness.store import Run

    # A row as compare runs stored it before judges.winrate.WinRateEntry ("n_invalid"): still read.
    entry = {"candidate": "c", "judge": "j", "n_prompts": 4, "win_rate": {"value": 0.5, "lo": 0.5, "hi": 0.5, "n": 4,
                                                                          "confidence": 0.95},
             "lc_win_rate": {"value": 0.5}, "n_wins": 0, "n_ties": 4, "n_losses": 0, "n_invalid": 0,
             "n_disagreements": 4, "position_consistency": 0.0, "verdict_mode": "discrete", "status": "undetermined",
             "reasons": ["position consistency 0% is below 50%"], "validation": None,
             "reference_metric": "embedding_similarity", "reference_epsilon": 0.01,
             "reference_win_rate": {"value": 0.75, "lo": 0.5, "hi": 1.0, "n": 4, "confidence": 0.95},
             "reference_counts": {"n_wins": 3, "n_ties": 0, "n_losses": 1, "n_unscored": 0}}
    run = Run(kind="compare", manifest={"confidence": 0.95},
              aggregates={"results": [], "win_rates": [entry], "summary": {"verdict": "pass"}, "failures": []})
    shown = compare_text(run)
    assert max(map(len, shown.splitlines())) <= 100  # prose wraps to a 100-column terminal
    text = _flat(shown)
    assert "invalid 0, order disagreements 4" in text
    assert "judge win rate status: UNDETERMINED (position consistency 0% is below 50%)" in text
    assert "win rates are reported, not gated" in text and "[50.0%, 50.0%]" not in text
    assert _flat("reference win rate (MiniLM embedding cosine to the ideal, ties within ±0.01; no judge): 75.0%  95% "
                 "interval [50.0%, 100.0%]") in text


def _flat(text: str) -> str:
    """Text with its wrapping undone (any run of whitespace one space)."""
    return " ".join(text.split())


def test_an_undetermined_judge_or_an_unverified_adapter_prints_no_interval():
    """A judge whose orders disagree can still give a wide, non-zero interval: it is withheld all the
    same, in the compare text and the report table, and an unverified adapter withholds the reference's."""
    import pandas as pd

    from reports.text import compare_text
    from harness.store import Run
    from reports.tables import win_rate_table

    est = {"value": 0.6, "lo": 0.4, "hi": 0.8, "n": 5, "confidence": 0.95}
    entry = {"candidate": "c", "judge": "j", "n_prompts": 5, "win_rate": est, "lc_win_rate": {"value": 0.6},
             "n_wins": 2, "n_ties": 2, "n_losses": 1, "n_invalid_verdicts": 0, "n_disagreements": 3,
             "position_consistency": 0.4, "verdict_mode": "discrete", "status": "undetermined",
             "reasons": ["position consistency 40% is below 50%", "adapter unverified: c: skipped"],
             "validation": None, "unverified": ["c: skipped"], "reference_metric": "rouge_l",
             "reference_epsilon": 0.01, "reference_win_rate": {**est, "value": 0.7},
             "reference_counts": {"n_wins": 3, "n_ties": 1, "n_losses": 1, "n_unscored": 0}}
    run = Run(kind="compare", manifest={"confidence": 0.95},
              aggregates={"results": [], "win_rates": [entry], "summary": {"verdict": "error"}, "failures": []})
    text = _flat(compare_text(run))
    assert _flat("60.0%  (no interval: the judge's win rate is undetermined") in text and "[40.0%, 80.0%]" not in text
    assert _flat("70.0%  (no interval: unverified adapter (c: skipped))") in text
    row = {"candidate": "c", "judge": "j", "n_prompts": 5, "status": "undetermined", "reasons": "…",
           "verdict_mode": "discrete", "confidence": 0.95, "n_wins": 2, "n_ties": 2, "n_losses": 1,
           "n_invalid_verdicts": 0,
           "n_disagreements": 3, "position_consistency": 0.4, "first_position_win_rate": 0.8,
           "injection_flip_rate": None, "headline_win_rate": 0.6, "headline_win_rate_lo": 0.4,
           "headline_win_rate_hi": 0.8, **{f"{c}{s}": v for c in ("win_rate", "lc_win_rate")
                                           for s, v in (("", 0.6), ("_lo", 0.4), ("_hi", 0.8))}}
    table = win_rate_table(pd.DataFrame([row, {**row, "candidate": "d", "status": "determined"}]))
    assert list(table["judge win rate % [interval]"]) == ["60.0 (undetermined: no interval)", "60.0 [40.0, 80.0]"]
    assert table["LC win rate % [interval]"][0] == "60.0 (undetermined: no interval)"


def test_a_judge_run_without_the_canary_is_undetermined(cli_env, always_first_judge, tmp_path, capsys):
    from cli.main import main
    from harness.store import list_runs, load_run
    from tests.helpers import make_lora

    lora = make_lora(Path(cli_env["candidate"]), tmp_path / "lora", seed=1, scale=1e-2)
    assert main(["judge", "--golden", str(cli_env["golden"]), "--candidate", f"{cli_env['candidate']}+{lora}",
                 "--baseline", cli_env["candidate"], "--judge", always_first_judge, "--backend", "hf",
                 "--max-new-tokens", "4", "--no-canary", "--no-embeddings", "--no-injection-probe"]) == 0
    out = capsys.readouterr().out
    assert "adapter unverified:" in out and "(no interval: unverified adapter" in out
    (row,) = list_runs(cli_env["runs"], kind="judge")
    head = load_run(cli_env["runs"], row["run_id"]).aggregates["headline"]
    assert head["status"] == "undetermined" and any(r.startswith("adapter unverified: ") for r in head["reasons"])


def test_calibrated_probabilities_come_from_both_orders_of_the_stored_label_probabilities():
    from judges.pairwise import Game, PairJudgment
    from judges.winrate import candidate_probabilities

    def game(order, p):
        return Game(order, "a", None, "logprobs", {"p": p})

    j = PairJudgment("x", (game("candidate_first", {"a": 0.6, "b": 0.2, "tie": 0.2}),
                           game("candidate_second", {"a": 0.7, "b": 0.1, "tie": 0.2})))
    gen = PairJudgment("y", (Game("candidate_first", "a", None, "generate", {}),
                             Game("candidate_second", "a", None, "generate", {})))
    p = candidate_probabilities([j, gen])
    assert p[0].tolist() == pytest.approx([0.7, 0.2]) and np.isnan(p[1]).all()


def test_generation_tokens_are_recorded_per_game():
    from judges.pairwise import PairInput, judge_pairs

    # Cannot score text, so the verdict is generated; `len` stands in for the judge's tokenizer.
    judge = Judge(ScriptedJudge(lambda p: "[[B]]"), load_judge_config("pairwise"), render_chat=render, count_tokens=len)
    (j,) = judge_pairs(judge, [PairInput("x", "q", "a", "b")])
    assert all(g.via == "generate" and g.n_completion_tokens == 5 and g.n_prompt_tokens > 100 for g in j.games)


def test_cli_errors_are_one_line_with_exit_2(tmp_path, monkeypatch, capsys):
    from cli.main import main

    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    assert main(["judge", "--candidate", "x"]) == 2
    assert "harness judge needs --golden, --baseline (or the action: harness judge validate)" in capsys.readouterr().err
    assert main(["judge", "validate", "--judge-config", "reference-pairwise", "--backend", "hf"]) == 2
    assert "is reference-guided; human preference pairs have no reference answer" in capsys.readouterr().err
    assert main(["judge", "validate", "--limit", "0"]) == 2
    assert "--limit must be at least 1, got 0" in capsys.readouterr().err
