"""Charts: Altair specs for the app, one Matplotlib PNG for the static HTML export.

Every difference is drawn as a point with its interval as a bar, and a zero
line, because a point estimate alone hides whether a drop is noise. Altair
charts carry data only (no HTML), so model-provided names are safe in them.
"""
from __future__ import annotations

import io
from typing import Any

import pandas as pd


def interval_chart(df: pd.DataFrame, *, label: str, x_title: str, scale: float = 100.0, color: str = "candidate") -> Any:
    """Points with horizontal interval bars, one row per `label` value, offset by `color`.

    `df` needs columns `label`, `color`, diff, lo, hi; values are multiplied by `scale`.
    """
    import altair as alt

    data = df.assign(d=df["diff"] * scale, l=df["lo"] * scale, h=df["hi"] * scale)[[label, color, "d", "l", "h"]]
    order = data.groupby(label)["d"].min().sort_values().index.tolist()  # worst group on top
    y = alt.Y(f"{label}:N", sort=order, title=None)
    base = alt.Chart(data).encode(y=y, yOffset=f"{color}:N", color=alt.Color(f"{color}:N", legend=alt.Legend(orient="bottom", labelLimit=400)))
    bars = base.mark_rule(strokeWidth=2).encode(x=alt.X("l:Q", title=x_title), x2="h:Q")
    points = base.mark_point(filled=True, size=60).encode(
        x="d:Q", tooltip=[label, color, alt.Tooltip("d:Q", format="+.2f"), alt.Tooltip("l:Q", format="+.2f"),
                          alt.Tooltip("h:Q", format="+.2f")])
    zero = alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(color="gray", strokeDash=[4, 4]).encode(x="x:Q")
    # A step per (group, color) row: a fixed total height squeezes the rows once the legend and axis take their share.
    return (bars + points + zero).properties(height=alt.Step(14))


def trend_chart(trend: pd.DataFrame, *, scale: float = 100.0, y_title: str = "difference, points") -> Any:
    """Difference against training step per candidate and task, with the interval as a band.

    Rows without a step (a candidate that names none) are left out.
    """
    import altair as alt

    trend = trend[trend["step"].notna()]
    data = trend.assign(d=trend["diff"] * scale, l=trend["lo"] * scale, h=trend["hi"] * scale,
                        series=trend["candidate"].astype(str) + " · " + trend["task"].astype(str))
    base = alt.Chart(data).encode(x=alt.X("step:Q", title="training step"),
                                  color=alt.Color("series:N", legend=alt.Legend(orient="bottom", labelLimit=400)))
    band = base.mark_area(opacity=0.2).encode(y=alt.Y("l:Q", title=y_title), y2="h:Q")
    line = base.mark_line(point=True).encode(y="d:Q", tooltip=["series", "step", alt.Tooltip("d:Q", format="+.2f")])
    zero = alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(color="gray", strokeDash=[4, 4]).encode(y="y:Q")
    return band + line + zero


def loss_chart(losses: pd.DataFrame) -> Any:
    """Training and validation loss against step; `losses` has columns run, split, step, loss."""
    import altair as alt

    return alt.Chart(losses).mark_line(point=alt.OverlayMarkDef(size=15)).encode(
        x=alt.X("step:Q", title="step"), y=alt.Y("loss:Q", title="loss", scale=alt.Scale(zero=False)),
        color=alt.Color("run:N", legend=alt.Legend(orient="bottom", labelLimit=400)), strokeDash="split:N",
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
        ax.errorbar(sub["diff"] * scale, ys, xerr=err, fmt="o", capsize=3, label=f"candidate {k + 1}")
    ax.set_yticks([g * len(cands) + (len(cands) - 1) / 2 for g in range(len(groups))], [str(g) for g in groups])
    ax.axvline(0, color="gray", linestyle="--", linewidth=1)
    ax.set_xlabel("difference, points (candidate − baseline)")
    ax.set_title(title)
    if len(cands) > 1:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
