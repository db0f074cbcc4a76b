"""app.py through streamlit.testing AppTest: every view, the empty store, partial and failed runs,
escaping of model text, and the 10,000-prompt judge run (fast tier; no browser)."""
from __future__ import annotations

import json
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
    assert len(at.dataframe[0].value) == 8
    assert at.dataframe[0].value["created (UTC)"].dtype.kind == "M"  # a date, sorted as one
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


def test_compare_view_shows_summary_forgetting_perplexity_win_rates_and_no_trend_without_checkpoints(store,
                                                                                                     monkeypatch):
    runs_dir, ids = store
    at = open_app(runs_dir, monkeypatch, view="Compare")
    assert at.selectbox(key="compare_run").value == ids["compare"]
    summary = at.dataframe[0].value
    assert len(summary) == 4 and {"difference", "low", "high", "margin", "unit", "verdict", "level %"} <= set(summary)
    subheaders = [s.value for s in at.subheader]
    assert subheaders[:4] == ["Summary", "Forgetting", "Perplexity", "Win rate"]
    # Its candidates are adapters, not checkpoints: no trend section and no (empty) trend chart.
    assert "Checkpoint trend" not in subheaders and "Per-item regressions" in subheaders
    assert "gate verdict: regression" in at.text[0].value
    assert len(at.get("vega_lite_chart")) == 3  # subject, category, perplexity
    frames = [d.value for d in at.dataframe]
    wins = next(f for f in frames if "judge win rate %" in f.columns)
    assert len(wins) == 2 and {"position consistency", "LC win rate %", "judge win rate status",
                               "reference win rate %", "judge win rate low", "judge win rate high"} <= set(wins)
    regressions = frames[-1]
    assert regressions["regression"].iloc[0] >= regressions["regression"].iloc[-1]
    # Narrowing to one candidate narrows every table.
    key = f"compare_candidates:{ids['compare']}"
    one = at.multiselect(key=key).value[:1]
    at.multiselect(key=key).set_value(one).run()
    assert set(at.dataframe[0].value["candidate"]) == set(one)
    assert_no_html(at)


def test_summary_margins_and_differences_share_a_labelled_unit(store, monkeypatch):
    runs_dir, ids = store
    at = open_app(runs_dir, monkeypatch, view="Compare")
    summary = at.dataframe[0].value.set_index(["candidate", "task"])
    acc = summary.xs("mmlu_0shot", level="task").iloc[0]
    ppl = summary.xs("perplexity", level="task").iloc[0]
    # The synthetic accuracy margin is 0.05: 5 points beside a difference in points, as `harness compare` prints.
    assert acc["unit"] == "pt" and acc["margin"] == pytest.approx(5.0)
    assert acc["low"] <= acc["difference"] <= acc["high"] and abs(acc["difference"]) < 20  # points, not fractions
    assert ppl["unit"] == "logppl" and ppl["margin"] == pytest.approx(0.05)
    assert "accuracy in points (pt)" in at.caption[0].value and "log-perplexity (logppl" in at.caption[0].value


def test_report_tables_hold_numbers_with_column_formats(store, monkeypatch):
    """Every number handed to st.dataframe is numeric (it sorts as a number) and formatted by a column config."""
    runs_dir, ids = store
    at = open_app(runs_dir, monkeypatch, view="Compare", compare_run=ids["compare_ckpt"])
    numeric = {"difference", "low", "high", "margin", "n", "baseline", "p (Holm)", "difference (pt)", "low (pt)",
               "baseline %", "baseline ppl", "difference (logppl)", "margin, ppl change %", "judge win rate %",
               "LC win rate %", "wins", "position consistency", "step"}
    seen = set()
    for df in at.dataframe:
        frame = df.value
        for col in numeric & set(frame.columns):
            assert frame[col].dtype.kind in "fiu", (col, frame[col].dtype)
            seen.add(col)
        configs = json.loads(df.proto.columns)
        for col in numeric & set(frame.columns):
            assert configs[col]["type_config"]["format"].startswith("%"), (col, configs[col])
    assert {"difference", "difference (pt)", "difference (logppl)", "judge win rate %", "step"} <= seen
    wins = next(df for df in at.dataframe if "judge win rate %" in df.value.columns)
    assert json.loads(wins.proto.columns)["judge win rate %"]["type_config"]["type"] == "progress"


def test_switching_compare_runs_shows_the_new_runs_candidates(store, monkeypatch):
    runs_dir, ids = store
    at = open_app(runs_dir, monkeypatch, view="Compare")
    assert len(at.dataframe[0].value) == 4
    at.selectbox(key="compare_run").set_value(ids["compare_ckpt"]).run()
    assert not at.exception
    summary = at.dataframe[0].value
    assert len(summary) == 8 and summary["candidate"].str.endswith("checkpoint-400").any()
    assert not [i.value for i in at.info]  # no section says it is empty
    at.selectbox(key="compare_run").set_value(ids["compare"]).run()
    assert len(at.dataframe[0].value) == 4 and not [i.value for i in at.info]


def _spec(chart) -> dict:
    return json.loads(chart.proto.spec)


def _rows(chart) -> list[dict]:
    """The rows of a chart's first named data set (Streamlit sends them as Arrow, beside the spec)."""
    import pyarrow as pa

    return pa.ipc.open_stream(chart.proto.datasets[0].data.data).read_all().to_pylist()


def test_checkpoint_trend_is_a_line_per_task_with_interval_bands_and_integer_steps(store, monkeypatch):
    runs_dir, ids = store
    at = open_app(runs_dir, monkeypatch, view="Compare", compare_run=ids["compare_ckpt"])
    assert "Checkpoint trend" in [s.value for s in at.subheader]
    charts = [(c, _spec(c)) for c in at.get("vega_lite_chart")]
    charts = [(c, s) for c, s in charts
              if any(layer.get("encoding", {}).get("x", {}).get("field") == "step" for layer in s.get("layer", []))]
    assert len(charts) == 2  # accuracy (pt) and perplexity (logppl): their units differ
    trends = [s for _, s in charts]
    for chart, spec in charts:
        marks = {layer["mark"]["type"]: layer["encoding"] for layer in spec["layer"]}
        assert {"line", "area"} <= set(marks)
        assert marks["area"]["y2"]["field"] == "h" and marks["line"]["color"]["field"] == "line"
        axis = marks["line"]["x"]["axis"]
        assert axis["format"] == "d" and axis["values"] == [100, 200, 300, 400]
        assert marks["area"]["y"]["axis"]["format"] in ("+.1f", "+.3f")
        assert marks["line"]["color"]["legend"]["labelLimit"] == 0  # names in full
        rows = _rows(chart)
        assert len({r["line"] for r in rows}) == 1 and len(rows) == 4  # four checkpoints joined into one line
    assert [c["layer"][0]["encoding"]["y"]["title"] for c in trends] == ["difference, pt", "difference, logppl"]


def test_golden_items_view_filters_by_task_result_and_text(store, monkeypatch):
    runs_dir, ids = store
    at = open_app(runs_dir, monkeypatch, view="Golden items", golden_run=ids["eval_golden"])
    items = at.dataframe[0].value
    assert len(items) == 16 and {"prompt", "output", "check list", "result", "output chars"} <= set(items)
    assert items["output chars"].dtype.kind == "f" and items["failed checks"].dtype.kind in "iu"
    assert set(items["result"]) == {"pass", "fail", "unchecked", "unscored"}
    at.selectbox(key="golden_result").set_value("fail").run()
    assert set(at.dataframe[0].value["result"]) == {"fail"}
    at.multiselect(key="golden_task").set_value(["golden_json"]).run()
    assert set(at.dataframe[0].value["task"]) == {"golden_json"}
    at.selectbox(key="golden_result").set_value("all").run()
    at.text_input(key="golden_search").set_value("three colours").run()
    assert len(at.dataframe[0].value) == 2
    shown = [c.value for c in at.expander[0].code]
    assert any(s.startswith("Here are three colours") and "<script>" in s for s in shown)  # model text as text
    assert "JSON schema" in " ".join(shown)
    assert_no_html(at)


def test_runs_view_links_an_eval_run_to_its_golden_items(store, monkeypatch):
    runs_dir, ids = store
    at = open_app(runs_dir, monkeypatch, inspect_run=ids["eval_golden"])
    at.button(key=f"golden_{ids['eval_golden']}").click().run()
    assert at.session_state["view"] == "Golden items" and at.selectbox(key="golden_run").value == ids["eval_golden"]


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
    runs_dir, ids = store
    at = open_app(runs_dir, monkeypatch, view="Training", trend_run=ids["compare"])
    folders = at.dataframe[0].value
    assert sorted(Path(f).name for f in folders["folder"]) == ["lora-r16", "lora-r8"]
    (chart,) = at.get("vega_lite_chart")  # a run without checkpoints: no trend charts at all
    losses = _spec(chart)
    assert "no checkpoint trend" in at.info[0].value
    # One labelled colour per run and split (not a legend of identical dash-style dots).
    assert losses["encoding"]["color"]["field"] == "series" and losses["encoding"]["strokeDash"]["legend"] is None
    series = {r["series"] for r in _rows(chart)}
    assert len(series) == 4 and any(s.endswith("lora-r8 · validation") for s in series)
    at.selectbox(key="trend_run").set_value(ids["compare_ckpt"]).run()
    assert len(at.get("vega_lite_chart")) == 3  # losses, accuracy trend, perplexity trend
    trend = at.dataframe[1].value
    assert len(trend) == 8 and trend["step"].tolist()[:4] == [100, 200, 300, 400]  # 4 checkpoints x 2 tasks
