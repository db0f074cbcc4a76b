"""Charts: Altair specs for the app, one Matplotlib PNG for the static HTML export.

Every difference is drawn as a point with its interval as a bar, and a zero
line, because a point estimate alone hides whether a drop is noise. Altair
charts carry data only (no HTML), so model-provided names are safe in them.
"""
from __future__ import annotations

import io
import math
from typing import Any

import pandas as pd


# Legends sit below the chart, one entry per line and never cut: candidate names are shown in full.
LEGEND = dict(orient="bottom", direction="vertical", labelLimit=0, titleLimit=0)


def _domain(*columns: pd.Series) -> list[float]:
    """An axis domain fitted to the data and zero, padded by 5%: small differences stay visible."""
    values = pd.concat([c for c in columns] + [pd.Series([0.0])]).astype(float)
    values = values[values.map(math.isfinite)]
    lo, hi = float(values.min()), float(values.max())
    pad = (hi - lo) * 0.05 or 1.0
    return [lo - pad, hi + pad]


def interval_chart(df: pd.DataFrame, *, label: str, x_title: str, scale: float = 100.0, color: str = "candidate") -> Any:
    """Points with horizontal interval bars, one row per `label` value, offset by `color`.

    `df` needs columns `label`, `color`, diff, lo, hi; values are multiplied by `scale`.
    The x axis fits the data (and zero), so a difference of a point is not lost on a ±100 axis.
    """
    import altair as alt

    data = df.assign(d=df["diff"] * scale, l=df["lo"] * scale, h=df["hi"] * scale)[[label, color, "d", "l", "h"]]
    order = data.groupby(label)["d"].min().sort_values().index.tolist()  # worst group on top
    x_scale = alt.Scale(domain=_domain(data["l"], data["h"], data["d"]), nice=False)
    y = alt.Y(f"{label}:N", sort=order, title=None, axis=alt.Axis(labelLimit=0))
    base = alt.Chart(data).encode(y=y, yOffset=f"{color}:N", color=alt.Color(f"{color}:N", legend=alt.Legend(**LEGEND)))
    bars = base.mark_rule(strokeWidth=2).encode(x=alt.X("l:Q", title=x_title, scale=x_scale), x2="h:Q")
    points = base.mark_point(filled=True, size=60).encode(
        x=alt.X("d:Q", scale=x_scale), tooltip=[label, color, alt.Tooltip("d:Q", format="+.2f"),
                                                alt.Tooltip("l:Q", format="+.2f"), alt.Tooltip("h:Q", format="+.2f")])
    zero = alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(color="gray", strokeDash=[4, 4]).encode(
        x=alt.X("x:Q", scale=x_scale))
    # A step per (group, color) row: a fixed total height squeezes the rows once the legend and axis take their share.
    return (bars + points + zero).properties(height=alt.Step(14))


def trend_chart(trend: pd.DataFrame, *, scale: float = 100.0, y_title: str = "difference, pt",
                y_format: str = "+.1f") -> Any:
    """Difference against training step: one line per task (and training run), its interval as a band.

    `trend` is reports.data.stepped_trend's frame (column `line` names the series); integer step ticks.
    """
    import altair as alt

    data = trend.assign(d=trend["diff"] * scale, l=trend["lo"] * scale, h=trend["hi"] * scale)[
        ["line", "candidate", "task", "step", "d", "l", "h"]]
    steps = sorted(int(s) for s in data["step"].unique())
    x = alt.X("step:Q", title="training step",
              scale=alt.Scale(domain=[steps[0], steps[-1]] if len(steps) > 1 else alt.Undefined),
              axis=alt.Axis(format="d", tickMinStep=1, values=steps if len(steps) <= 12 else alt.Undefined))
    y_scale = alt.Scale(domain=_domain(data["l"], data["h"], data["d"]), nice=True)
    base = alt.Chart(data).encode(x=x, color=alt.Color("line:N", title="task", legend=alt.Legend(**LEGEND)))
    band = base.mark_area(opacity=0.2).encode(
        y=alt.Y("l:Q", title=y_title, scale=y_scale, axis=alt.Axis(format=y_format)), y2="h:Q")
    line = base.mark_line(point=True).encode(
        y=alt.Y("d:Q", scale=y_scale),
        tooltip=["candidate", "task", "step", alt.Tooltip("d:Q", format=y_format),
                 alt.Tooltip("l:Q", format=y_format), alt.Tooltip("h:Q", format=y_format)])
    zero = alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(color="gray", strokeDash=[4, 4]).encode(
        y=alt.Y("y:Q", scale=y_scale))
    return band + line + zero


def loss_chart(losses: pd.DataFrame) -> Any:
    """Training and validation loss against step; `losses` has columns run, split, step, loss.

    One coloured, labelled series per (run, split): a legend of dash styles drew identical dots.
    """
    import altair as alt

    data = losses.assign(series=losses["run"].astype(str) + " · " + losses["split"].astype(str))
    return alt.Chart(data).mark_line(point=alt.OverlayMarkDef(size=15)).encode(
        x=alt.X("step:Q", title="step", axis=alt.Axis(format="d", tickMinStep=1)),
        y=alt.Y("loss:Q", title="loss", scale=alt.Scale(zero=False), axis=alt.Axis(format=".2f")),
        color=alt.Color("series:N", title="run · split", legend=alt.Legend(**LEGEND)),
        strokeDash=alt.StrokeDash("split:N", legend=None),
        tooltip=["run", "split", "step", alt.Tooltip("loss:Q", format=".4f")])


def interval_png(df: pd.DataFrame, *, label: str, title: str, scale: float = 100.0) -> bytes:
    """The same point-and-interval plot as `interval_chart`, as PNG bytes (for the static export).

    `label` must name one row per candidate (key groups by task and group where tasks share
    group names); a repeated label is a ValueError naming it.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display; the export runs headless
    import matplotlib.pyplot as plt

    repeated = df[df.duplicated(["candidate", label])][label].tolist()
    if repeated:
        raise ValueError(f"interval_png: label {repeated[0]!r} appears twice for one candidate; key rows uniquely")
    groups = df.groupby(label)["diff"].min().sort_values(ascending=False).index.tolist()
    cands = list(dict.fromkeys(df["candidate"]))
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(groups) * max(1, len(cands)) + 1.2))
    for k, cand in enumerate(cands):
        sub = df[df["candidate"] == cand].set_index(label).reindex(groups)
        ys = [g * len(cands) + k for g in range(len(groups))]
        err = [(sub["diff"] - sub["lo"]) * scale, (sub["hi"] - sub["diff"]) * scale]
        ax.errorbar(sub["diff"] * scale, ys, xerr=err, fmt="o", capsize=3, label=str(cand))
    ax.set_yticks([g * len(cands) + (len(cands) - 1) / 2 for g in range(len(groups))], [str(g) for g in groups])
    ax.axvline(0, color="gray", linestyle="--", linewidth=1)
    ax.set_xlabel("difference, points (candidate − baseline)")
    ax.set_title(title)
    if len(cands) > 1:  # below the plot, one name a line, in full
        ax.legend(loc="upper left", bbox_to_anchor=(0, -0.15 - 0.3 / max(1, len(groups))), fontsize=8, ncols=1,
                  frameon=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")  # "tight" keeps the legend below in the image
    plt.close(fig)
    return buf.getvalue()
