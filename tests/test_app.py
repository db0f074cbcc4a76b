"""app.py through streamlit.testing AppTest: every view, the empty store, partial and failed runs,
escaping of model text, and the 10,000-prompt judge run (fast tier; no browser)."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.fixtures.synthetic import ATTACKS, ATTACK_TEXT, build_store

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT_S = 120  # two shared CPU cores in CI; a view normally renders in about a second


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    runs_dir = tmp_path_factory.mktemp("app-store") / "runs"
    return runs_dir, build_store(runs_dir, n_large=10_000)


def open_app(runs_dir: Path, monkeypatch: pytest.MonkeyPatch, **state):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("HARNESS_RUNS_DIR", str(runs_dir))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def assert_no_html(at) -> None:
    """No Markdown element may allow HTML, and none may carry run text that would become markup."""
    for el in at.markdown:
        assert not el.proto.allow_html, el.value
        for attack in ATTACKS:
            assert attack not in el.value, el.value
    for el in at.expander:
        assert "<" not in el.label.replace("\\<", "")


def test_empty_store_says_so(tmp_path, monkeypatch):
    at = open_app(tmp_path / "no-runs-yet", monkeypatch)
    assert "The run store is empty" in at.info[0].value
    assert not (tmp_path / "no-runs-yet").exists()  # read-only: not even the folder is created


def test_runs_view_lists_filters_and_shows_partial_and_failed_runs(store, monkeypatch):
    runs_dir, ids = store
    at = open_app(runs_dir, monkeypatch)
    assert len(at.dataframe[0].value) == 6
    at.multiselect(key="f_status").set_value(["partial", "failed"]).run()
    assert sorted(at.dataframe[0].value["status"]) == ["failed", "partial"]
    at.selectbox(key="inspect_run").set_value(ids["eval_failed"]).run()
    assert "This run is failed" in at.error[0].value
    assert "CUDA out of memory" in at.code[0].value
    at.selectbox(key="inspect_run").set_value(ids["eval_partial"]).run()
    assert "This run is partial" in at.warning[0].value
    assert "hellaswag: dataset hellaswag not found" in at.code[0].value
    at.text_input(key="f_model").set_value("lora-r16").run()
    assert at.dataframe[0].value["run"].tolist() == [ids["eval_failed"]]


def test_compare_view_shows_summary_forgetting_perplexity_win_rates_and_trend(store, monkeypatch):
    runs_dir, ids = store
    at = open_app(runs_dir, monkeypatch, view="Compare")
    summary = at.dataframe[0].value
    assert len(summary) == 4 and {"difference [interval]", "verdict", "level"} <= set(summary.columns)
    subheaders = [s.value for s in at.subheader]
    assert subheaders[:4] == ["Summary", "Forgetting", "Perplexity", "Win rate"]
    assert "Checkpoint trend" in subheaders and "Per-item regressions" in subheaders
    assert "gate verdict: regression" in at.text[0].value
    charts = at.get("vega_lite_chart")
    assert len(charts) >= 4  # subject, category, perplexity, trend
    frames = [d.value for d in at.dataframe]
    wins = next(f for f in frames if "judge win rate % [interval]" in f.columns)
    assert len(wins) == 2 and {"position consistency", "LC win rate % [interval]", "judge win rate status",
                               "reference win rate % [interval] (no judge)"} <= set(wins.columns)
    regressions = frames[-1]
    assert regressions["regression"].iloc[0] >= regressions["regression"].iloc[-1]
    # Narrowing to one candidate narrows every table.
    one = at.multiselect(key="compare_candidates").value[:1]
    at.multiselect(key="compare_candidates").set_value(one).run()
    assert set(at.dataframe[0].value["candidate"]) == set(one)
    assert_no_html(at)


def test_compare_links_to_the_per_prompt_view_of_its_judge_runs(store, monkeypatch):
    runs_dir, ids = store
    at = open_app(runs_dir, monkeypatch, view="Compare")
    at.button(key=f"open_{ids['judge']}").click().run()
    assert at.session_state["view"] == "Per prompt"
    assert at.selectbox(key="judge_run").value == ids["judge"]


def test_per_prompt_view_puts_the_worst_prompt_first_and_shows_model_text_as_text(store, monkeypatch):
    runs_dir, ids = store
    at = open_app(runs_dir, monkeypatch, view="Per prompt", judge_run=ids["judge"])
    overview = at.dataframe[1].value
    assert overview["item"].iloc[0] == "xss-0" and len(overview) == 25
    first = at.expander[0]
    shown = [c.value for c in first.code]
    assert ATTACK_TEXT in shown and ATTACKS[3] in shown and ATTACKS[2] in shown  # tuned, base, ideal answers
    assert "baseline" in shown  # both verdicts, from the candidate's side
    assert any("<script>alert(1)</script>" in s for s in shown)  # the judge's rationale quotes it too
    assert_no_html(at)
    at.selectbox(key="prompt_sort").set_value("item id").run()
    assert at.dataframe[1].value["item"].iloc[0] == "self_instruct/1"
    at.text_input(key="prompt_search").set_value("onerror").run()
    assert at.dataframe[1].value["item"].tolist() == ["xss-0"]


def test_ten_thousand_prompts_page_quickly(store, monkeypatch, capsys):
    runs_dir, ids = store
    t0 = time.perf_counter()
    at = open_app(runs_dir, monkeypatch, view="Per prompt", judge_run=ids["judge_large"])
    cold_s = time.perf_counter() - t0
    assert "of 400, 10000 prompts" in at.number_input(key="prompt_page").label
    t0 = time.perf_counter()
    at.number_input(key="prompt_page").set_value(400).run()
    warm_s = time.perf_counter() - t0
    assert not at.exception and len(at.dataframe[1].value) == 25 and len(at.expander) == 25
    with capsys.disabled():
        print(f"\n10,000-prompt judge run: first render {cold_s:.2f} s, next page {warm_s:.2f} s")
    assert warm_s < 5.0  # cached: a page turn must not reload or re-sort the run


def test_training_view_plots_losses_and_checkpoint_trends(store, monkeypatch):
    runs_dir, _ = store
    at = open_app(runs_dir, monkeypatch, view="Training")
    folders = at.dataframe[0].value
    assert sorted(Path(f).name for f in folders["folder"]) == ["lora-r16", "lora-r8"]
    assert len(at.get("vega_lite_chart")) == 2  # losses, accuracy trend
    assert len(at.dataframe[1].value) == 8  # 2 candidates x 4 steps
