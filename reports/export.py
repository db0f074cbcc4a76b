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
from reports.text import diff_text, model_names

FORMATS = ("markdown", "html")
COMMENT_LIMIT = 65_000  # characters: a GitHub pull-request comment holds 65,536
TOP_PROMPTS = 10  # regressions shown per judge run in an export
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|#&~!])")


@dataclass(frozen=True)
class Section:
    title: str
    table: pd.DataFrame | None = None
    note: str = ""
    prompts: pd.DataFrame | None = None  # rows of reports.data.judge_prompts
    png: bytes | None = None  # HTML only
    folded: bool = False  # Markdown: inside a <details> block (a pull-request comment stays short)


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
    cands = ", ".join(f"{n} ({r})" if n != r else r for n, r in model_names(m).items())
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


def judge_sections(run: Run, *, is_standalone: bool = False) -> list[Section]:
    """A judge run's win rate, its `--grade` grades and judge-free reference metrics, and its `TOP_PROMPTS`
    largest regressions with the texts. Standalone (the document is this judge run), the first section is
    titled "Win rate": the page heading already names the run."""
    prompts = data.sort_by_regression(data.judge_prompts(run)).head(TOP_PROMPTS)
    title = "Win rate" if is_standalone else f"Judge run {run.run_id}"
    out = [Section(title, tables.win_rate_table(data.win_rates(run)))]
    grades = reference_metrics_table(run.aggregates)
    if not grades.empty:
        out.append(Section(f"Grades and reference metrics ({run.run_id})", grades,
                           "Per side: the judge's 1-10 grade (--grade) and judge-free metrics of each answer "
                           "against the ideal answer."))
    ref = reference_win_table(run.aggregates)
    if not ref.empty:
        out.append(Section(f"Reference win rate ({run.run_id})", ref,
                           "Candidate against baseline by closeness to the ideal answer; no judge involved."))
    return [*out, Section(f"Largest regressions by prompt ({run.run_id})", prompts=prompts)]


def _mean(d: Any, digits: int = 3) -> str:
    v = d.get("mean") if isinstance(d, dict) else None
    return "-" if v is None or v != v else f"{v:.{digits}f}"


def reference_metrics_table(agg: dict[str, Any]) -> pd.DataFrame:
    """One row per side (candidate, baseline): grade, checks passed, exact match, ROUGE-L, embedding similarity."""
    metrics, grades = agg.get("metrics") or {}, agg.get("grades") or {}
    rows = []
    for side in ("candidate", "baseline"):
        m, g = metrics.get(side) or {}, grades.get(side)
        if not m and not g:
            continue
        rows.append({"side": side,
                     "grade (1-10)": f"{_mean(g, 2)} over {g.get('n_graded', 0)} ({g.get('n_invalid', 0)} invalid)"
                     if g else "not graded",
                     "checks passed": _mean(m.get("checks_passed")), "exact match": _mean(m.get("exact_match")),
                     "ROUGE-L F1": _mean(m.get("rouge_l")),
                     "embedding similarity": _mean(m.get("embedding_similarity"))})
    return pd.DataFrame(rows)


def reference_win_table(agg: dict[str, Any]) -> pd.DataFrame:
    """The judge-free reference win rate per metric: value, interval, wins/ties/losses."""
    ref = agg.get("reference_win_rate") or {}
    rows = []
    for metric, r in ref.items():
        if not isinstance(r, dict) or "win_rate" not in r:
            continue
        w = r["win_rate"] or {}
        rows.append({"metric": metric, "headline": "yes" if metric == ref.get("metric") else "",
                     "win rate": tables.fmt_interval(w.get("value"), w.get("lo"), w.get("hi"), scale=100) + " %",
                     "ties within": f"±{r.get('epsilon', 0):g}",
                     "W/T/L": f"{r.get('n_wins')}/{r.get('n_ties')}/{r.get('n_losses')}"})
    return pd.DataFrame(rows)


def _png(groups: pd.DataFrame, scope: str) -> bytes | None:
    try:
        # A group is keyed by (task, group): mmlu_0shot and mmlu_5shot share subject names.
        keyed = groups.assign(key=groups["task"].astype(str) + " · " + groups["group"].astype(str))
        return interval_png(keyed, label="key", title=f"Accuracy difference by {scope}")
    except ImportError:
        return None  # matplotlib missing: the table still carries every number


def to_markdown(title: str, sections: Sequence[Section]) -> str:
    return "\n".join([f"# {md_escape(title)}", "", *(_md_section(s) for s in sections)]).rstrip() + "\n"


def _md_section(s: Section) -> str:
    """One section; a folded one sits in a <details> block whose summary is its title."""
    out = [f"<details><summary>{md_escape(s.title)}</summary>", ""] if s.folded else [f"## {md_escape(s.title)}", ""]
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
    if s.folded:
        out += ["</details>", ""]
    return "\n".join(out)


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


def trend_steps(run: Run) -> pd.DataFrame:
    """The checkpoint trend as `harness compare` prints it: one row per checkpoint in step order, per task the
    difference with its interval (accuracy in points, perplexity in log-perplexity; the unit in the heading)."""
    trend = run.aggregates.get("trend") or []
    if not trend:
        return pd.DataFrame()
    tasks = list(dict.fromkeys(t["task"] for t in trend))
    unit = {t["task"]: "logppl" if is_perplexity(t.get("metric")) else "pt" for t in trend}
    order = sorted({(t.get("step") if t.get("step") is not None else -1, str(t["candidate"])) for t in trend})
    cell = {(str(t["candidate"]), t["task"]): diff_text(t["diff"], t.get("metric")) for t in trend}
    return pd.DataFrame([{"checkpoint": name, "step": "-" if step < 0 else step,
                          **{f"{task} ({unit[task]})": cell.get((name, task), "-") for task in tasks}}
                         for step, name in order])


def compare_markdown(run: Run, limit: int = COMMENT_LIMIT) -> str:
    """A compare run as Markdown fit for a pull-request comment: the models by name, the verdict and the task
    summary open; the checkpoint trend open; forgetting by subject/category, perplexity and win rates folded in
    <details> blocks; under `limit` characters however many candidates and subjects (tables cut, saying so)."""
    m, agg = run.manifest, run.aggregates
    summary = agg.get("summary") or {}
    base = m.get("baseline") or {}
    base_ref = str(base.get("ref", "?"))
    models = [f"- baseline **{md_escape(base.get('name') or base_ref)}**: {md_escape(base_ref)}"]
    models += [f"- candidate **{md_escape(n)}**: {md_escape(r)}" for n, r in model_names(m).items()]
    note = (f"Verdict: {str(summary.get('verdict', '?')).upper()} ({summary.get('n_failures', '?')} failing "
            f"checks). Run status: {run.status}. Differences are candidate − baseline: accuracy in points (pt), "
            "perplexity in log-perplexity (logppl, lower is better); margins in the same unit."
            + "".join(f" Not scored: {e}." for e in agg.get("task_errors") or [])
            + "".join(f" Unverified (the gate passes none): {u}." for u in agg.get("unverified") or []))
    results = data.compare_results(run)
    sections = [Section("Summary", tables.summary_table(results), note)]
    trend = trend_steps(run)
    if not trend.empty:
        sections.append(Section("Checkpoint trend", trend, "One row per checkpoint, in step order."))
    for s in compare_sections(run)[1:]:
        if s.title != "Checkpoint trend":
            sections.append(Section(s.title, s.table, s.note, s.prompts, folded=True))
    if len("\n".join(models)) > limit // 4:
        # Hundreds of candidates: the list is folded and cut to a quarter of the comment.
        kept = []
        for line in models:
            if len("\n".join(kept)) + len(line) > limit // 4 - 100:
                break
            kept.append(line)
        models = ["<details><summary>Models</summary>", "", *kept,
                  f"- and {len(models) - len(kept)} more candidates", "", "</details>"]
    head = [f"# {md_escape(f'Comparison {run.run_id}')}", "", "\n".join(models), ""]
    return fit_markdown("\n".join(head) + "\n", sections, limit, run.run_id)


def fit_markdown(head: str, sections: Sequence[Section], limit: int, run_id: str = "RUN_ID") -> str:
    """`head` and the sections under `limit` characters: folded tables keep the same share of their rows, the
    largest share that fits (found by bisection); the open ones are cut the same way only if that is not enough."""
    sizes = {i: len(s.table) for i, s in enumerate(sections) if s.table is not None}

    def render(keep: dict[int, int]) -> str:
        body = []
        for i, s in enumerate(sections):
            if i in keep and keep[i] < sizes[i]:
                s = Section(s.title, s.table.head(keep[i]), (s.note + " " if s.note else "")
                            + f"First {keep[i]} of {sizes[i]} rows; harness report export {run_id} --format html "
                            "has them all.", s.prompts, s.png, s.folded)
            body.append(_md_section(s))
        return head + "\n".join(body).rstrip() + "\n"

    def share(f: float, which: set[int], keep: dict[int, int]) -> dict[int, int]:
        return {**keep, **{i: int(sizes[i] * f) for i in which}}
    keep = dict(sizes)
    text = render(keep)
    for which in ({i for i in sizes if sections[i].folded}, {i for i in sizes if not sections[i].folded}):
        if len(text) <= limit or not which:
            continue
        lo, hi = 0.0, 1.0
        for _ in range(12):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if len(render(share(mid, which, keep))) <= limit else (lo, mid)
        keep = share(lo, which, keep)
        text = render(keep)
    return text


def export_run(run: Run, fmt: str, judge_runs: Sequence[Run] = ()) -> str:
    """A compare or judge run as a Markdown or HTML document; HarnessError for other kinds or formats."""
    if fmt not in FORMATS:
        raise HarnessError(f"export format '{fmt}' unknown; choose {', '.join(FORMATS)}")
    if run.kind == "judge":
        title, sections = f"Judge run {run.run_id}", judge_sections(run, is_standalone=True)
    elif run.kind == "compare":
        title, sections = f"Comparison {run.run_id}", compare_sections(run, judge_runs)
    else:
        raise HarnessError(f"run '{run.run_id}' is kind '{run.kind}'; export supports compare and judge runs")
    return to_markdown(title, sections) if fmt == "markdown" else to_html(title, sections)
