"""Charts: pure functions from selector output to Plotly figure specs ({"data", "layout"}).

Pages embed the spec as JSON and render it with the plotly.js the site serves itself (never a
CDN); tests assert on the specs. The specs are built as plain dicts rather than through
plotly.graph_objects, whose validation costs about 60 ms a figure — most of a page's budget."""
from __future__ import annotations

import json
from typing import Any

Figure = dict[str, Any]

BASELINE_COLOUR = "#9aa3b5"
SUBMISSION_COLOUR = "#2456d6"
PALETTE = ["#2456d6", "#e4572e", "#17bebb", "#ffc914", "#76b041", "#9b5de5", "#f15bb5", "#00bbf9",
           "#8d6a9f", "#c5283d"]


def _figure(data: list[dict], title: str, *, height: int = 380, **layout: Any) -> Figure:
    return {
        "data": data,
        "layout": {
            "title": {"text": title, "x": 0.0, "font": {"size": 15}},
            "template": {"layout": {"paper_bgcolor": "#fff", "plot_bgcolor": "#fff",
                                    "xaxis": {"gridcolor": "#eceff5", "zerolinecolor": "#d5d9e3"},
                                    "yaxis": {"gridcolor": "#eceff5", "zerolinecolor": "#d5d9e3"},
                                    "font": {"family": "system-ui, sans-serif", "color": "#1d2330"}}},
            "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
            "height": height,
            "legend": {"orientation": "h", "y": -0.2},
            **layout,
        },
    }


def ranking_figure(*, task_title: str, metric: str, higher_is_better: bool, rows: list[dict]) -> Figure:
    """Horizontal bars of the primary metric, best at the top, with 95% intervals where known.
    ``rows``: dicts with name, value, ci95 ([low, high] or None), is_baseline."""
    ordered = list(reversed(rows))  # Plotly draws the first bar at the bottom
    values = [r["value"] for r in ordered]
    intervals = [r.get("ci95") for r in ordered]
    bar = {
        "type": "bar", "orientation": "h", "x": values,
        "y": [r["name"] + (" (baseline)" if r.get("is_baseline") else "") for r in ordered],
        "marker": {"color": [BASELINE_COLOUR if r.get("is_baseline") else SUBMISSION_COLOUR for r in ordered]},
        "error_x": {
            "type": "data", "symmetric": False, "visible": any(intervals), "color": "#555",
            "array": [(ci[1] - v) if ci else 0 for ci, v in zip(intervals, values, strict=True)],
            "arrayminus": [(v - ci[0]) if ci else 0 for ci, v in zip(intervals, values, strict=True)],
        },
        "hovertemplate": "%{y}: %{x:.4g}<extra></extra>",
    }
    arrow = "higher is better" if higher_is_better else "lower is better"
    return _figure([bar], f"{task_title}: {metric} ({arrow})", height=max(260, 28 * len(rows) + 120),
                   xaxis={"title": {"text": metric}}, yaxis={"automargin": True})


def _lines(runs: list[dict], key: str) -> list[dict]:
    return [{"type": "scatter", "mode": "lines", "name": run["name"], "x": run["trajectory"]["step"],
             "y": run["trajectory"][key], "line": {"color": PALETTE[i % len(PALETTE)], "width": 2}}
            for i, run in enumerate(runs)]


def trajectory_figure(*, function: str, runs: list[dict]) -> Figure:
    """Synthetic-function runs: the parameter x over the steps, one line per optimizer.
    ``runs``: dicts with name and trajectory {step, x, loss}."""
    return _figure(_lines(runs, "x"), f"{function}: parameter trajectory from θ0 = −1",
                   xaxis={"title": {"text": "step"}}, yaxis={"title": {"text": "x"}})


def loss_curve_figure(*, function: str, runs: list[dict], log_y: bool = True) -> Figure:
    """Loss against step, one line per run."""
    return _figure(_lines(runs, "loss"), f"{function}: loss", xaxis={"title": {"text": "step"}},
                   yaxis={"title": {"text": "F(x)"}, "type": "log" if log_y else "linear"})


def to_json(fig: Figure) -> str:
    return json.dumps(fig, separators=(",", ":"), allow_nan=False)
