"""Static exports of a comparison: Markdown and self-contained HTML (no scripts, no external assets).

    compare_markdown(run) -> str          # also used by `harness compare --format markdown`
    export_run(run, "html", judge_runs)   # `harness report export RUN_ID --format html --out FILE`

Both render the same sections (reports.tables). Every value taken from a run
is escaped: Markdown table cells backslash-escape the characters that would
start markup or HTML, prompts and answers go in fences longer than any
backtick run inside them, and HTML goes through html.escape. So model text
such as `<script>` or `[x](javascript:...)` appears as text in either file.
"""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from typing import Any, Sequence

import pandas as pd

from harness.compare import is_perplexity
from harness.errors import HarnessError
from harness.store import Run
from reports import data, tables
from reports.plots import interval_png

FORMATS = ("markdown", "html")
TOP_PROMPTS = 10  # regressions shown per judge run in an export
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|#&~!])")


@dataclass(frozen=True)
class Section:
    title: str
    table: pd.DataFrame | None = None
    note: str = ""
    prompts: pd.DataFrame | None = None  # rows of reports.data.judge_prompts
    png: bytes | None = None  # HTML only


def md_escape(value: Any) -> str:
    """One Markdown table cell: markup characters backslash-escaped, newlines folded.

    >>> md_escape("<b>|x|</b>")
    '\\\\<b\\\\>\\\\|x\\\\|\\\\</b\\\\>'
    """
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(value).split()))


def md_fence(text: str) -> str:
    """`text` in a fenced block that nothing inside can close (fence longer than any backtick run)."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def compare_sections(run: Run, judge_runs: Sequence[Run] = ()) -> list[Section]:
    """What an export shows for a compare run, and the top regressions of its judge runs."""
    if run.kind != "compare":
        raise HarnessError(f"run '{run.run_id}' is kind '{run.kind}'; a comparison export needs a compare run "
                           "(or a judge run)")
    m, agg = run.manifest, run.aggregates
    summary = agg.get("summary") or {}
    cands = ", ".join(c.get("ref", "?") for c in m.get("candidates") or [] if isinstance(c, dict))
    note = (f"Baseline: {(m.get('baseline') or {}).get('ref', '?')}. Candidates: {cands or '?'}. "
            f"Verdict: {summary.get('verdict', '?')} ({summary.get('n_failures', '?')} failing checks). "
            f"Run status: {run.status}. Differences are candidate − baseline: accuracy in points, "
            "perplexity in log-perplexity (lower is better)."
            + "".join(f" Not scored: {e}." for e in agg.get("task_errors") or [])
            + "".join(f" Unverified (the gate passes none): {u}." for u in agg.get("unverified") or []))
    results = data.compare_results(run)
    sections = [Section("Summary", tables.summary_table(results), note)]
    for scope in ("subject", "category"):
        groups = results[(results["scope"] == scope) & ~results["metric"].map(is_perplexity)]
        if not groups.empty:
            sections.append(Section(f"Forgetting by {scope}", tables.group_table(results, scope),
                                    png=_png(groups, scope)))
    if results["metric"].map(is_perplexity).any():
        sections.append(Section("Perplexity", tables.perplexity_table(results)))
    wins = data.win_rates(run)
    if not wins.empty:
        sections.append(Section("Win rate", tables.win_rate_table(wins)))
    trend = data.trend_frame(run)
    if not trend.empty:
        sections.append(Section("Checkpoint trend", tables.trend_table(trend)))
    for j in judge_runs:
        sections += judge_sections(j)
    return sections


def judge_sections(run: Run) -> list[Section]:
    """A judge run's win rate and its `TOP_PROMPTS` largest regressions, with the texts."""
    prompts = data.sort_by_regression(data.judge_prompts(run)).head(TOP_PROMPTS)
    return [Section(f"Judge run {run.run_id}", tables.win_rate_table(data.win_rates(run))),
            Section(f"Largest regressions by prompt ({run.run_id})", prompts=prompts)]


def _png(groups: pd.DataFrame, scope: str) -> bytes | None:
    try:
        # A group is keyed by (task, group): mmlu_0shot and mmlu_5shot share subject names.
        keyed = groups.assign(key=groups["task"].astype(str) + " · " + groups["group"].astype(str))
        return interval_png(keyed, label="key", title=f"Accuracy difference by {scope}")
    except ImportError:
        return None  # matplotlib missing: the table still carries every number


def to_markdown(title: str, sections: Sequence[Section]) -> str:
    out = [f"# {md_escape(title)}", ""]
    for s in sections:
        out += [f"## {md_escape(s.title)}", ""]
        if s.note:
            out += [md_escape(s.note), ""]
        if s.table is not None and not s.table.empty:
            cols = list(s.table.columns)
            out.append("| " + " | ".join(md_escape(c) for c in cols) + " |")
            out.append("|" + "---|" * len(cols))
            out += ["| " + " | ".join(md_escape(v) for v in row) + " |" for row in s.table.itertuples(index=False)]
            out.append("")
        if s.prompts is not None:
            for p in s.prompts.itertuples(index=False):
                out += [f"### {md_escape(p.item_id)}", "",
                        f"Judge: {md_escape(p.verdict_candidate_first)} (candidate first), "
                        f"{md_escape(p.verdict_candidate_second)} (candidate second)", ""]
                for label, text in (("Prompt", p.question), ("Tuned answer", p.candidate_output),
                                    ("Base answer", p.baseline_output), ("Ideal answer", p.ideal or ""),
                                    ("Judge rationale (candidate first)", p.rationale_candidate_first),
                                    ("Judge rationale (candidate second)", p.rationale_candidate_second)):
                    out += [f"**{label}**", "", md_fence(str(text)), ""]
    return "\n".join(out).rstrip() + "\n"


_CSS = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;"
        "margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
        "th{background:#f3f3f3}pre{white-space:pre-wrap;background:#f7f7f7;padding:8px;border:1px solid #ddd}")


def to_html(title: str, sections: Sequence[Section]) -> str:
    """A self-contained page: inline CSS, the plot as a data URI, every run value escaped."""
    e = html.escape
    out = ["<!doctype html>", "<html><head><meta charset='utf-8'>",
           # Scripts blocked outright: the file may be opened from a shared folder or a CI artifact.
           "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">",
           f"<title>{e(title)}</title><style>{_CSS}</style></head><body>", f"<h1>{e(title)}</h1>"]
    for s in sections:
        out.append(f"<h2>{e(s.title)}</h2>")
        if s.note:
            out.append(f"<p>{e(s.note)}</p>")
        if s.png:
            out.append(f"<img alt='{e(s.title)}' src='data:image/png;base64,{base64.b64encode(s.png).decode()}'>")
        if s.table is not None and not s.table.empty:
            out.append("<table><tr>" + "".join(f"<th>{e(str(c))}</th>" for c in s.table.columns) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in row) + "</tr>"
                    for row in s.table.itertuples(index=False)]
            out.append("</table>")
        if s.prompts is not None:
            for p in s.prompts.itertuples(index=False):
                out.append(f"<h3>{e(str(p.item_id))}</h3><p>Judge: {e(p.verdict_candidate_first)} (candidate first), "
                           f"{e(p.verdict_candidate_second)} (candidate second)</p>")
                for label, text in (("Prompt", p.question), ("Tuned answer", p.candidate_output),
                                    ("Base answer", p.baseline_output), ("Ideal answer", p.ideal or ""),
                                    ("Judge rationale (candidate first)", p.rationale_candidate_first),
                                    ("Judge rationale (candidate second)", p.rationale_candidate_second)):
                    out.append(f"<h4>{e(label)}</h4><pre>{e(str(text))}</pre>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def compare_markdown(run: Run) -> str:
    """A compare run as Markdown: summary, forgetting by subject/category, perplexity, win rate, trend."""
    return to_markdown(f"Comparison {run.run_id}", compare_sections(run))


def export_run(run: Run, fmt: str, judge_runs: Sequence[Run] = ()) -> str:
    """A compare or judge run as a Markdown or HTML document; HarnessError for other kinds or formats."""
    if fmt not in FORMATS:
        raise HarnessError(f"export format '{fmt}' unknown; choose {', '.join(FORMATS)}")
    if run.kind == "judge":
        title, sections = f"Judge run {run.run_id}", judge_sections(run)
    elif run.kind == "compare":
        title, sections = f"Comparison {run.run_id}", compare_sections(run, judge_runs)
    else:
        raise HarnessError(f"run '{run.run_id}' is kind '{run.kind}'; export supports compare and judge runs")
    return to_markdown(title, sections) if fmt == "markdown" else to_html(title, sections)
