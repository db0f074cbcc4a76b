"""The llm-harness report: browse runs, compare a baseline with its candidates, read prompts side by side.

    harness report                        # or: HARNESS_RUNS_DIR=runs streamlit run app.py

Views: Runs (filters by model, suite, kind, status, date), Compare (summary
with intervals and gate verdicts, forgetting by subject/category, perplexity,
win rates, checkpoint trend, per-item regressions), Per prompt (judge runs:
prompt, both answers, ideal, both verdicts and rationale, largest regression
first), Golden items (eval runs: prompt, output, checks, pass/fail) and
Training (loss curves from finetune manifests, checkpoint trends).

Tables hold numbers (they sort numerically) formatted by column configs
from reports.tables; differences and margins are in points (pt) for
accuracy and in log-perplexity (logppl) for perplexity, as the CLI prints.

Read-only: it lists and reads run folders and never writes. Text from runs
(model answers, prompts, reasons, references) is shown only through
st.code, st.text, st.dataframe and charts, or Markdown-escaped in labels;
never as HTML. Big runs are loaded once per folder version (st.cache_*) and
shown a page at a time.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from harness.compare import is_perplexity
from harness.errors import HarnessError
from harness.settings import Settings
from harness.store import INDEX, Run, load_run
from reports import data, plots, tables
from reports.export import export_run, md_escape

VIEWS = ("Runs", "Compare", "Per prompt", "Golden items", "Training")
RESULTS = ("all", "pass", "fail", "unchecked", "unscored")
SORTS = {"largest regression": "regression", "largest improvement": "improvement",
         "order disagreements first": "disagree", "item id": "id"}
PAGE_SIZES = (10, 25, 50)


def _stamp(path: Path) -> float:
    """Modification time, so a cached copy is dropped when a run is rewritten or the index changes."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


@st.cache_data(ttl=10, show_spinner=False)
def cached_runs(runs_dir: str, stamp: float) -> pd.DataFrame:
    return data.runs_frame(Path(runs_dir))


@st.cache_resource(max_entries=4, show_spinner="Loading run…")
def cached_run(runs_dir: str, run_id: str, stamp: float) -> Run:
    # A resource, not data: shared without copying; nothing here mutates a Run.
    return load_run(Path(runs_dir), run_id)


@st.cache_data(max_entries=8, show_spinner=False)
def cached_prompts(runs_dir: str, run_id: str, stamp: float) -> pd.DataFrame:
    return data.sort_by_regression(data.judge_prompts(cached_run(runs_dir, run_id, stamp)))


@st.cache_data(max_entries=8, show_spinner=False)
def cached_golden(runs_dir: str, run_id: str, stamp: float) -> pd.DataFrame:
    return data.golden_items(cached_run(runs_dir, run_id, stamp))


def show_table(df: pd.DataFrame, key: str | None = None) -> None:
    """A table of numbers formatted by column configs (so they sort as numbers); names and texts in full."""
    config: dict[str, object] = {}
    for col, fmt in tables.column_formats(df).items():
        if col in tables.PROGRESS:
            lo, hi = tables.PROGRESS[col]
            config[col] = st.column_config.ProgressColumn(col, format=fmt, min_value=lo, max_value=hi)
        else:
            config[col] = st.column_config.NumberColumn(col, format=fmt)
    for col in ("prompt", "output", "reason", "why"):
        if col in df:
            config[col] = st.column_config.TextColumn(col, width="large")
    if "candidate" in df and not df.empty:
        # Wide enough for the longest name (about 7.5 px a character) and pinned: names are never cut.
        longest = int(df["candidate"].astype(str).str.len().max())
        config["candidate"] = st.column_config.TextColumn("candidate", width=max(120, 24 + int(7.5 * longest)),
                                                          pinned=True)
    if "item_id" in df:
        config["item_id"] = st.column_config.TextColumn("item_id", width="medium")
    st.dataframe(df, hide_index=True, column_config=config, key=key)


def get_run(runs_dir: Path, run_id: str) -> Run | None:
    """The run, or None after showing why it cannot be read (a damaged folder is not a crash)."""
    try:
        return cached_run(str(runs_dir), run_id, _stamp(runs_dir / run_id / "items.jsonl"))
    except HarnessError as e:
        st.error("This run cannot be read:")
        st.code(str(e), language=None, wrap_lines=True)
        return None


def pick_run(runs: pd.DataFrame, kind: str | None, key: str, label: str) -> str | None:
    ids = runs["run_id"].tolist() if kind is None else runs.loc[runs["kind"] == kind, "run_id"].tolist()
    if not ids:
        st.info(f"No {kind or ''} runs in the store yet.")
        return None
    if st.session_state.get(key) not in ids:
        st.session_state[key] = ids[0]  # newest first; also replaces a choice that disappeared
    return st.selectbox(label, ids, key=key)


def show_status(run: Run) -> None:
    """Partial and failed runs are shown as such, with their reasons as plain text."""
    if run.status == "complete":
        return
    reasons = [f"{name}: {t.get('failure_reason')}" for name, t in (run.aggregates.get("tasks") or {}).items()
               if isinstance(t, dict) and t.get("failure_reason")]
    reasons += [str(run.manifest["error"])] if run.manifest.get("error") else []
    (st.error if run.status == "failed" else st.warning)(
        f"This run is {run.status}: what it holds is shown, and may be incomplete.")
    if reasons:
        st.code("\n".join(reasons), language=None, wrap_lines=True)


def view_runs(runs_dir: Path, runs: pd.DataFrame) -> None:
    st.header("Runs")
    c1, c2, c3, c4 = st.columns(4)
    model = c1.text_input("Model contains", key="f_model")
    suites = c2.multiselect("Suite", sorted(runs["suite"].dropna().unique()), key="f_suite")
    kinds = c3.multiselect("Kind", sorted(runs["kind"].dropna().unique()), key="f_kind")
    statuses = c4.multiselect("Status", ["complete", "partial", "failed"], key="f_status")
    dates = runs["created"].dropna()
    since = until = None
    if not dates.empty:
        span = st.date_input("Created between", (dates.min().date(), dates.max().date()), key="f_dates")
        since, until = (span[0], span[1]) if isinstance(span, (tuple, list)) and len(span) == 2 else (None, None)
    shown = data.filter_runs(runs, model=model, suites=suites, kinds=kinds, statuses=statuses, since=since, until=until)
    st.caption(f"{len(shown)} of {len(runs)} runs")
    st.dataframe(tables.runs_table(shown), hide_index=True, key="runs_table", column_config={
        "created (UTC)": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
        "models": st.column_config.TextColumn(width="large")})
    if shown.empty:
        return
    run_id = pick_run(shown, None, "inspect_run", "Inspect run")
    run = get_run(runs_dir, run_id) if run_id else None
    if run is None:
        return
    show_status(run)
    st.text(f"kind {run.kind} · {len(run.items)} items · models: "
            + ", ".join(str(m.get("ref", m)) if isinstance(m, dict) else str(m) for m in run.manifest.get("models") or []))
    tasks = run.aggregates.get("tasks") or {}
    if tasks:
        st.dataframe(pd.DataFrame([{"task": k, "metric": t.get("metric"), "value": t.get("value"), "n": t.get("n"),
                                    "failure": t.get("failure_reason") or ""} for k, t in tasks.items()]),
                     hide_index=True, column_config={"value": st.column_config.NumberColumn(format="%.4f")})
    if run.kind == "eval" and any("output" in it for it in run.items):
        st.button(md_escape(f"Golden items of {run.run_id}"), key=f"golden_{run.run_id}", on_click=_open_view,
                  args=("Golden items", "golden_run", run.run_id))
    with st.expander("Manifest and aggregates (JSON)"):
        st.json({"manifest": run.manifest, "aggregates": run.aggregates}, expanded=False)


def open_picked_run(runs_dir: Path, runs: pd.DataFrame, kind: str, key: str, label: str) -> Run | None:
    """The run the user picks for this view, loaded and with its status shown; None when there is none."""
    run_id = pick_run(runs, kind, key, label)
    run = get_run(runs_dir, run_id) if run_id else None
    if run is not None:
        show_status(run)
    return run


def view_compare(runs_dir: Path, runs: pd.DataFrame) -> None:
    st.header("Compare")
    run = open_picked_run(runs_dir, runs, "compare", "compare_run", "Compare run")
    if run is None:
        return
    m, summary = run.manifest, run.aggregates.get("summary") or {}
    st.text(f"baseline: {(m.get('baseline') or {}).get('ref', '?')}\ncandidates: "
            + ", ".join(str(c.get("ref")) for c in m.get("candidates") or [] if isinstance(c, dict))
            + f"\ngate verdict: {summary.get('verdict', '?')} ({summary.get('n_failures', '?')} failing checks)")
    results = data.compare_results(run)
    cands = results["candidate"].dropna().unique().tolist()
    # Keyed by run: another run's candidates never carry over as a selection that matches nothing here.
    chosen = st.multiselect("Candidates", cands, default=cands, key=f"compare_candidates:{run.run_id}")
    results = results[results["candidate"].isin(chosen)]
    st.subheader("Summary")
    st.caption("Differences and margins are candidate − baseline in the row's unit: accuracy in points (pt), "
               "perplexity in log-perplexity (logppl, lower is better); low/high bound the interval at the level "
               "shown.")
    show_table(tables.summary_frame(results), key="summary")
    st.subheader("Forgetting")
    for tab, scope in zip(st.tabs(["by subject", "by category"]), ("subject", "category")):
        groups = results[(results["scope"] == scope) & ~results["metric"].map(is_perplexity)]
        with tab:
            if groups.empty:
                st.info(f"No {scope}-level results in this run.")
                continue
            for task in groups["task"].unique():
                st.altair_chart(plots.interval_chart(groups[groups["task"] == task].rename(columns={"group": scope}),
                                                     label=scope, x_title=f"{task}: difference, pt"))
            show_table(tables.group_frame(results, scope))
    st.subheader("Perplexity")
    ppl = results[results["metric"].map(is_perplexity)]
    if ppl.empty:
        st.info("No perplexity results in this run.")
    else:
        st.altair_chart(plots.interval_chart(ppl.assign(label=ppl["task"]), label="label", scale=1.0,
                                             x_title="difference, logppl (lower is better)"))
        show_table(tables.perplexity_frame(results))
    st.subheader("Win rate")
    wins = data.win_rates(run)
    wins = wins[wins["candidate"].isin(chosen)] if not wins.empty else wins
    if wins.empty:
        st.info("No judge results in this run.")
    else:
        show_table(tables.win_rate_frame(wins))
    judge_ids = [r for r in dict.fromkeys((m.get("source_runs") or {}).values()) if r in set(runs.loc[runs["kind"] == "judge", "run_id"])]
    for jid in judge_ids:
        st.button(md_escape(f"Per-prompt view of judge run {jid}"), key=f"open_{jid}", on_click=_open_view,
                  args=("Per prompt", "judge_run", jid))
    trend = data.stepped_trend(data.trend_frame(run))
    trend = trend[trend["candidate"].isin(chosen)]
    if not trend.empty:  # candidates that are not checkpoints have no trend to draw
        st.subheader("Checkpoint trend")
        show_trend(trend)
    st.subheader("Per-item regressions")
    items = data.item_regressions(run)
    items = items[items["candidate"].isin(chosen)] if "candidate" in items else items
    show_page(items[[c for c in ("candidate", "task", "subject", "item_id", "flip", "regression") if c in items]], "items")
    export_buttons(run)


def _open_view(view: str, key: str, run_id: str) -> None:
    st.session_state["view"] = view
    st.session_state[key] = run_id


def export_buttons(run: Run) -> None:
    c1, c2 = st.columns(2)
    for col, fmt, ext, mime in ((c1, "markdown", "md", "text/markdown"), (c2, "html", "html", "text/html")):
        # The export is built only when asked for: formatting and the plot cost time on every rerun otherwise.
        col.download_button(f"Export {fmt}", data=lambda f=fmt: export_run(run, f), file_name=f"{run.run_id}.{ext}",
                            mime=mime, key=f"export_{fmt}")


def show_page(df: pd.DataFrame, key: str, page_size: int = 50, table_key: str | None = None) -> pd.DataFrame:
    """One page of `df` as a table, with a page number input; returns the rows shown."""
    if df.empty:
        st.info("Nothing to show.")
        return df
    n_pages = max(1, -(-len(df) // page_size))
    if st.session_state.get(f"page_{key}", 1) > n_pages:  # fewer rows since (a filter, another run): last page
        st.session_state[f"page_{key}"] = n_pages
    page = st.number_input(f"Page (of {n_pages}, {len(df)} rows)", min_value=1, max_value=n_pages, value=1,
                           key=f"page_{key}")
    rows, _ = data.paginate(df, int(page), page_size)
    show_table(rows, key=table_key)
    return rows


def view_prompts(runs_dir: Path, runs: pd.DataFrame) -> None:
    st.header("Per prompt")
    run = open_picked_run(runs_dir, runs, "judge", "judge_run", "Judge run")
    if run is None:
        return
    show_table(tables.win_rate_frame(data.win_rates(run)))
    prompts = cached_prompts(str(runs_dir), run.run_id, _stamp(runs_dir / run.run_id / "items.jsonl"))
    c1, c2, c3 = st.columns([2, 2, 1])
    order = SORTS[c1.selectbox("Sort by", list(SORTS), key="prompt_sort")]
    needle = c2.text_input("Prompt or answer contains", key="prompt_search")
    page_size = c3.selectbox("Per page", PAGE_SIZES, index=1, key="prompt_page_size")
    if needle:
        hay = prompts["question"] + "\n" + prompts["candidate_output"] + "\n" + prompts["baseline_output"]
        prompts = prompts[hay.str.contains(needle, case=False, regex=False)]
    if order == "improvement":
        prompts = prompts.iloc[::-1]  # prompts is sorted largest regression first; invalid prompts come first here
    elif order == "disagree":
        prompts = prompts.sort_values("orders_disagree", ascending=False, kind="stable")
    elif order == "id":
        prompts = prompts.sort_values("item_id", kind="stable")
    if prompts.empty:
        st.info("No prompts match.")
        return
    n_pages = max(1, -(-len(prompts) // page_size))
    page = st.number_input(f"Page (of {n_pages}, {len(prompts)} prompts)", 1, n_pages, 1, key="prompt_page")
    rows, _ = data.paginate(prompts, int(page), page_size)
    show_table(tables.prompt_frame(rows), key="prompt_overview")
    for k, p in enumerate(rows.itertuples(index=False)):
        # Expander labels are Markdown: the item id is escaped like any other run text.
        with st.expander(md_escape(f"{p.item_id} · outcome {tables.fmt_num(p.outcome, 1)}"), expanded=k == 0):
            show_prompt(p)


def show_prompt(p: object) -> None:
    """One prompt side by side; every text through st.code, which never interprets it."""
    text = lambda label, body: (st.caption(label), st.code(str(body or ""), language=None, wrap_lines=True))  # noqa: E731
    text("Prompt", p.question)
    left, right = st.columns(2)
    with left:
        text("Base answer", p.baseline_output)
    with right:
        text("Tuned answer", p.candidate_output)
    text("Ideal answer", p.ideal)
    left, right = st.columns(2)
    with left:
        text("Judge, candidate shown first: verdict", p.verdict_candidate_first)
        text("Rationale", p.rationale_candidate_first)
    with right:
        text("Judge, candidate shown second: verdict", p.verdict_candidate_second)
        text("Rationale", p.rationale_candidate_second)


def view_golden(runs_dir: Path, runs: pd.DataFrame) -> None:
    st.header("Golden items")
    run = open_picked_run(runs_dir, runs, "eval", "golden_run", "Eval run")
    if run is None:
        return
    items = cached_golden(str(runs_dir), run.run_id, _stamp(runs_dir / run.run_id / "items.jsonl"))
    if items.empty:
        st.info("This eval run has no golden-set items (only multiple-choice or perplexity tasks).")
        return
    if not items["prompt"].astype(bool).any():
        st.caption("This run stored no prompts or checks with its items: outputs and results are shown.")
    counts = items["result"].value_counts()
    st.text(" · ".join(f"{r} {counts.get(r, 0)}" for r in RESULTS[1:]) + f" · of {len(items)} items")
    c1, c2, c3 = st.columns([2, 1, 2])
    tasks = c1.multiselect("Task", sorted(items["task"].dropna().unique()), key="golden_task")
    result = c2.selectbox("Result", RESULTS, key="golden_result")
    needle = c3.text_input("Prompt, output or check contains", key="golden_search")
    if tasks:
        items = items[items["task"].isin(tasks)]
    if result != "all":
        items = items[items["result"] == result]
    if needle:
        hay = items["prompt"] + "\n" + items["output"] + "\n" + items["check list"] + "\n" + items["failure_reasons"]
        items = items[hay.str.contains(needle, case=False, regex=False)]
    if items.empty:
        st.info("No items match.")
        return
    st.caption("Click a column header to sort; numbers sort as numbers. Full texts of the rows on this page below.")
    rows = show_page(items.drop(columns=["passed"]), "golden", table_key="golden_table")
    for p in rows.head(10).to_dict("records"):
        # Expander labels are Markdown: the item id is escaped like any other run text.
        with st.expander(md_escape(f"{p['item_id']} · {p['result']}")):
            for label, col in (("Prompt", "prompt"), ("Output", "output"), ("Checks", "check list"),
                               ("Failed checks", "failure_reasons"), ("Ideal answer", "ideal")):
                body = p[col]
                st.caption(label)
                st.code(str(body or ""), language=None, wrap_lines=True)


def view_training(runs_dir: Path, runs: pd.DataFrame) -> None:
    st.header("Training")
    extra = st.text_area("More finetune output folders (one per line)", key="extra_dirs")
    dirs = data.model_dirs(m for ms in runs["models"] for m in ms or [])
    dirs += [Path(line.strip()) for line in extra.splitlines() if line.strip()]
    manifests = data.training_manifests(dirs)
    if not manifests:
        st.info("No finetune manifests (harness_manifest.json) found in the folders of the models in the store.")
    else:
        losses = pd.concat([data.loss_frame(m).assign(run=name) for name, m in manifests.items()], ignore_index=True)
        if losses.empty:
            st.info("The finetune manifests found hold no loss history.")
        else:
            st.altair_chart(plots.loss_chart(losses))
        st.dataframe(pd.DataFrame([{"folder": name, "method": m.get("method"), "steps": m.get("steps"),
                                    "best validation loss": m.get("best_validation_loss"),
                                    "stopped early": m.get("stopped_early")} for name, m in manifests.items()]),
                     hide_index=True,
                     column_config={"best validation loss": st.column_config.NumberColumn(format="%.4f"),
                                    "folder": st.column_config.TextColumn(width="large")})
    st.subheader("Checkpoint trends")
    run_id = pick_run(runs, "compare", "trend_run", "Compare run")
    run = get_run(runs_dir, run_id) if run_id else None
    trend = data.stepped_trend(data.trend_frame(run)) if run is not None else pd.DataFrame()
    if trend.empty:
        st.info("This compare run has no checkpoint trend: none of its candidates names a training step "
                "(…/checkpoint-200).")
        return
    show_trend(trend)


def show_trend(trend: pd.DataFrame) -> None:
    """Accuracy (pt) and perplexity (logppl) trends on separate axes (their units differ), then the numbers."""
    is_ppl = trend["metric"].map(is_perplexity)
    if (~is_ppl).any():
        st.altair_chart(plots.trend_chart(trend[~is_ppl]))
    if is_ppl.any():
        st.altair_chart(plots.trend_chart(trend[is_ppl], scale=1.0, y_title="difference, logppl", y_format="+.3f"))
    show_table(tables.trend_frame(trend))


def main() -> None:
    st.set_page_config(page_title="llm-harness report", layout="wide")
    runs_dir = Settings.from_env().runs_dir
    view = st.sidebar.radio("View", VIEWS, key="view")
    st.sidebar.text(f"runs: {runs_dir}")
    runs = cached_runs(str(runs_dir), _stamp(runs_dir / INDEX))
    if runs.empty:
        st.title("llm-harness report")
        st.info("The run store is empty. Runs appear here after `harness eval`, `harness judge` or `harness compare`.")
        st.text(f"looked in {runs_dir} (set HARNESS_RUNS_DIR to read another store)")
        return
    {"Runs": view_runs, "Compare": view_compare, "Per prompt": view_prompts, "Golden items": view_golden,
     "Training": view_training}[view](runs_dir, runs)


main()
