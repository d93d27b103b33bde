"""Charts: pure functions from selector output to Plotly figures. Pages embed the figure's JSON and
render it with the plotly.js the site serves itself (never a CDN); tests assert on the figures."""
from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

BASELINE_COLOUR = "#9aa3b5"
SUBMISSION_COLOUR = "#2456d6"
PALETTE = ["#2456d6", "#e4572e", "#17bebb", "#ffc914", "#76b041", "#9b5de5", "#f15bb5", "#00bbf9",
           "#8d6a9f", "#c5283d"]


def _layout(fig: go.Figure, title: str, **kwargs: Any) -> go.Figure:
    fig.update_layout(title={"text": title, "x": 0.0, "font": {"size": 15}}, template="plotly_white",
                      margin={"l": 60, "r": 20, "t": 50, "b": 50}, height=kwargs.pop("height", 380),
                      legend={"orientation": "h", "y": -0.2}, **kwargs)
    return fig


def ranking_figure(*, task_title: str, metric: str, higher_is_better: bool, rows: list[dict]) -> go.Figure:
    """Horizontal bars of the primary metric, best at the top, with 95% intervals where known.
    ``rows``: dicts with name, value, ci95 ([low, high] or None), is_baseline."""
    ordered = list(reversed(rows))  # Plotly draws the first bar at the bottom
    values = [r["value"] for r in ordered]
    has_ci = [r.get("ci95") for r in ordered]
    error = {
        "type": "data", "symmetric": False,
        "array": [(ci[1] - v) if ci else 0 for ci, v in zip(has_ci, values, strict=False)],
        "arrayminus": [(v - ci[0]) if ci else 0 for ci, v in zip(has_ci, values, strict=False)],
        "visible": any(has_ci), "color": "#555",
    }
    fig = go.Figure(go.Bar(
        x=values, y=[r["name"] + (" (baseline)" if r.get("is_baseline") else "") for r in ordered],
        orientation="h", error_x=error,
        marker_color=[BASELINE_COLOUR if r.get("is_baseline") else SUBMISSION_COLOUR for r in ordered],
        hovertemplate="%{y}: %{x:.4g}<extra></extra>",
    ))
    arrow = "higher is better" if higher_is_better else "lower is better"
    return _layout(fig, f"{task_title}: {metric} ({arrow})", xaxis_title=metric,
                   height=max(260, 28 * len(rows) + 120))


def trajectory_figure(*, function: str, runs: list[dict]) -> go.Figure:
    """Synthetic-function runs: the parameter x over the steps, one line per optimizer.
    ``runs``: dicts with name and trajectory {step, x, loss}."""
    fig = go.Figure()
    for i, run in enumerate(runs):
        traj = run["trajectory"]
        fig.add_trace(go.Scatter(x=traj["step"], y=traj["x"], mode="lines", name=run["name"],
                                 line={"color": PALETTE[i % len(PALETTE)], "width": 2}))
    return _layout(fig, f"{function}: parameter trajectory from θ0 = −1", xaxis_title="step", yaxis_title="x")


def loss_curve_figure(*, function: str, runs: list[dict], log_y: bool = True) -> go.Figure:
    """Loss against step, one line per run."""
    fig = go.Figure()
    for i, run in enumerate(runs):
        traj = run["trajectory"]
        fig.add_trace(go.Scatter(x=traj["step"], y=traj["loss"], mode="lines", name=run["name"],
                                 line={"color": PALETTE[i % len(PALETTE)], "width": 2}))
    fig = _layout(fig, f"{function}: loss", xaxis_title="step", yaxis_title="F(x)")
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def to_json(fig: go.Figure) -> str:
    return fig.to_json()
