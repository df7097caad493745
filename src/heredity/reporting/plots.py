"""The report's plots: matplotlib figures returned as self-contained ``<img>`` tags.

Why matplotlib, and why SVG in a data URI: matplotlib draws offline with no JavaScript, is
already what training uses for ``loss.png``, and its SVG output is small for these plots
(tens of kB, against ~3.5 MB for plotly's inlined JS). Each SVG goes into an ``<img
src="data:image/svg+xml;base64,...">`` rather than inline ``<svg>``, so the ids matplotlib
gives markers and clip paths can never collide between figures, and the page makes no
request: the file opened from disk offline shows every plot.

Every function takes plain numbers (no run directory) and returns an HTML string, or "" when
there is nothing to draw.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from typing import Any

from markupsafe import Markup

# One colour per arm, the same in every plot; runs in a comparison take the tab10 cycle.
ARM_COLOURS = {"pool": "#9e9e9e", "base": "#6d6d6d", "passive": "#1f77b4", "active": "#d62728"}
CYCLE = ["#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#ff7f0e"]


def colour(name: str, order: Sequence[str] = ()) -> str:
    if name in ARM_COLOURS:
        return ARM_COLOURS[name]
    others = [n for n in order if n not in ARM_COLOURS]
    index = others.index(name) if name in others else abs(hash(name))
    return CYCLE[index % len(CYCLE)]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "svg.fonttype": "none",  # text stays text: small files, selectable labels
        "svg.hashsalt": "heredity",  # stable ids: the same run renders the same bytes
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
    })
    return plt


def figure_html(fig: Any, alt: str) -> Markup:
    """The figure as an ``<img>`` holding its SVG in a data URI (the figure is closed); Markup, so
    a template puts it in as it is."""
    plt = _plt()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return Markup('<img class="plot" alt="{}" src="data:image/svg+xml;base64,{}">').format(alt, data)


def _finite(values: Sequence[Any]) -> list[float]:
    out = []
    for v in values:
        try:
            x = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(x):
            out.append(x)
    return out


def _grid(n: int, cols: int = 3) -> tuple[int, int]:
    cols = max(1, min(cols, n))
    return math.ceil(n / cols), cols


def distributions(per_metric: dict[str, dict[str, Sequence[float]]], target: str) -> str:
    """One panel per metric: a box plot of each set (pool, passive, active, variants) with its
    mean marked; the target's panel first and titled as such."""
    metrics = [m for m in per_metric if any(_finite(v) for v in per_metric[m].values())]
    if not metrics:
        return ""
    plt = _plt()
    rows, cols = _grid(len(metrics))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 0.5 + 0.42 * rows * (len(per_metric[metrics[0]]) + 1)),
                             squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    for ax, metric in zip(axes.flat, metrics):
        sets = [s for s, v in per_metric[metric].items() if _finite(v)]
        data = [_finite(per_metric[metric][s]) for s in sets]
        positions = list(range(len(sets), 0, -1))
        box = ax.boxplot(data, positions=positions, vert=False, widths=0.6, patch_artist=True, showfliers=False,
                         medianprops={"color": "black"})
        for patch, name in zip(box["boxes"], sets):
            patch.set_facecolor(colour(name, sets))
            patch.set_alpha(0.55)
        ax.scatter([sum(d) / len(d) for d in data], positions, marker="D", s=14, color="black", zorder=3,
                   label="mean")
        ax.set_yticks(positions, sets)
        ax.set_title(f"{metric} (target)" if metric == target else metric, fontsize=9,
                     fontweight="bold" if metric == target else "normal")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Training data: pool vs selected sets (boxes: quartiles, whiskers: 1.5 IQR, ◆ mean)", fontsize=9)
    fig.tight_layout()
    return figure_html(fig, "distribution of every metric in the pool and the selected sets")


def teacher_shares(shares: dict[str, dict[str, float]], pool_share: dict[str, float] | None = None) -> str:
    """Grouped horizontal bars: each teacher's share of every set's winners (and of the pool)."""
    sets = dict(shares)
    if pool_share:
        sets = {"pool": pool_share, **sets}
    teachers = sorted({t for s in sets.values() for t in s})
    if not teachers or not sets:
        return ""
    plt = _plt()
    names = list(sets)
    height = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(7, 0.6 + len(teachers) * (0.18 * len(names) + 0.15)))
    for i, name in enumerate(names):
        ys = [t_i + 0.4 - (i + 0.5) * height for t_i in range(len(teachers))][::-1]
        ax.barh(ys, [100 * sets[name].get(t, 0.0) for t in teachers], height=height, color=colour(name, names),
                label=name, alpha=0.85)
    ax.set_yticks(list(range(len(teachers)))[::-1], teachers)
    ax.set_xlabel("share of the set's examples (%)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    ax.set_title("Which teacher wrote the selected examples", fontsize=9)
    fig.tight_layout()
    return figure_html(fig, "each teacher's share of every set's winners")


def sweep(steps: dict[str, dict[str, Any]], metrics: Sequence[str], unit: str) -> str:
    """The steering-strength sweep: each metric's mean in the active set against k'."""
    ks = sorted(steps, key=lambda k: float(k))
    metrics = [m for m in metrics if any(isinstance(steps[k].get(m), (int, float)) for k in ks)]
    if len(ks) < 2 or not metrics:
        return ""
    plt = _plt()
    rows, cols = _grid(len(metrics))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    x = [float(k) for k in ks]
    for ax, metric in zip(axes.flat, metrics):
        y = [steps[k].get(metric) for k in ks]
        ax.plot(x, [v if isinstance(v, (int, float)) else float("nan") for v in y], marker="o", color=ARM_COLOURS["active"])
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel(f"k' ({unit}s per prompt)")
        ax.grid(alpha=0.3)
    fig.suptitle("Steering strength: the active rule on the first k' per prompt (k'=1 is passive-like)", fontsize=9)
    fig.tight_layout()
    return figure_html(fig, "steering-strength sweep")


def dose_response(points: Sequence[dict[str, Any]], base: tuple[float | None, float | None, float | None],
                  metric: str) -> str:
    """The student-level dose-response: against the selection strength k', the mean of each
    arm's kept data (left) and the student's held-out mean with its 95% CI (right), the
    untrained base as a dashed line and band."""
    if len(points) < 3:
        return ""
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 2.9))
    ks = [p["k"] for p in points]
    names = [p["arm"] for p in points]
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [f"{k:g}\n{a}" for k, a in zip(ks, names)])
        ax.minorticks_off()
        ax.set_xlabel("k' (candidates per prompt the rule chose among)")
        ax.grid(alpha=0.3)
    kept = [p["kept_mean"] if p["kept_mean"] is not None else float("nan") for p in points]
    left.plot(ks, kept, color="#9e9e9e", linewidth=1, zorder=1)
    for k, v, a in zip(ks, kept, names):
        left.plot([k], [v], "o", color=colour(a, names), zorder=2)
    left.set_title(f"the training data: mean {metric} kept", fontsize=9)
    value, lo, hi = base
    if value is not None:
        right.axhline(value, color=ARM_COLOURS["base"], linestyle="--", linewidth=1, label="base (untrained)")
        if lo is not None and hi is not None:
            right.axhspan(lo, hi, color=ARM_COLOURS["base"], alpha=0.12)
        right.legend(fontsize=8, frameon=False)
    means_ = [p["mean"] if p["mean"] is not None else float("nan") for p in points]
    right.plot(ks, means_, color="#9e9e9e", linewidth=1, zorder=1)
    for p in points:
        c = colour(p["arm"], names)
        if p["ci95"] and None not in p["ci95"]:
            right.plot([p["k"], p["k"]], p["ci95"], color=c, linewidth=2, alpha=0.7)
        if p["mean"] is not None:
            right.plot([p["k"]], [p["mean"]], "o", color=c, zorder=2)
    right.set_title(f"the student: held-out {metric}, 95% CI", fontsize=9)
    fig.suptitle("Dose-response: how strong the selection must be to move the student", fontsize=9)
    fig.tight_layout()
    return figure_html(fig, f"dose-response of {metric} against the selection strength")


def losses(logs: dict[str, dict[str, list[tuple[float, float]]]]) -> str:
    """Every arm's training loss (solid) and validation loss (dashed, circles) against the step."""
    logs = {arm: series for arm, series in logs.items() if any(series.values())}
    if not logs:
        return ""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    names = list(logs)
    for arm, series in logs.items():
        c = colour(arm, names)
        if series.get("loss"):
            xs, ys = zip(*series["loss"])
            ax.plot(xs, ys, color=c, label=f"{arm} train", linewidth=1.4, marker="o" if len(xs) < 25 else None,
                    markersize=3)
        if series.get("eval_loss"):
            xs, ys = zip(*series["eval_loss"])
            ax.plot(xs, ys, color=c, linestyle="--", marker="o", markersize=3, label=f"{arm} validation")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False, ncol=2)
    ax.set_title("Training loss of every arm", fontsize=9)
    fig.tight_layout()
    return figure_html(fig, "training loss of every arm")


def means(per_metric: dict[str, dict[str, tuple[float | None, float | None, float | None]]], title: str,
          order: Sequence[str] = ()) -> str:
    """One panel per metric: each arm's (or run's) mean with its 95% CI."""
    metrics = [m for m in per_metric if any(v[0] is not None for v in per_metric[m].values())]
    if not metrics:
        return ""
    plt = _plt()
    rows, cols = _grid(len(metrics))
    n = max(len(per_metric[m]) for m in metrics)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, (0.6 + 0.32 * n) * rows + 0.3), squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    for ax, metric in zip(axes.flat, metrics):
        names = list(per_metric[metric])
        for i, name in enumerate(names):
            value, lo, hi = per_metric[metric][name]
            y = len(names) - i
            if value is None:
                continue
            c = colour(name.split(" · ")[-1], order or names)
            if lo is not None and hi is not None:
                ax.plot([lo, hi], [y, y], color=c, linewidth=2, alpha=0.7)
            ax.plot([value], [y], "o", color=c)
        ax.set_yticks(list(range(len(names), 0, -1)), names)
        ax.set_ylim(0.4, len(names) + 0.6)
        ax.set_title(metric, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return figure_html(fig, title)


def forest(per_metric: dict[str, dict[str, dict[str, Any]]], title: str) -> str:
    """One panel per metric, one row per comparison: the paired difference with its 95% CI.
    Filled when the CI excludes 0 (counts), hollow and grey when it does not."""
    metrics = [m for m in per_metric if any(d.get("diff") is not None for d in per_metric[m].values())]
    if not metrics:
        return ""
    plt = _plt()
    rows, cols = _grid(len(metrics))
    n = max(len(per_metric[m]) for m in metrics)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, (0.6 + 0.32 * n) * rows + 0.4), squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    for ax, metric in zip(axes.flat, metrics):
        names = list(per_metric[metric])
        for i, name in enumerate(names):
            d = per_metric[metric][name]
            y = len(names) - i
            if d.get("diff") is None:
                continue
            lo, hi = d.get("ci95") or (None, None)
            counts = significant(d)
            c = colour(name.split(" − ")[0]) if counts else "#9e9e9e"
            if lo is not None and hi is not None:
                ax.plot([lo, hi], [y, y], color=c, linewidth=2)
            ax.plot([d["diff"]], [y], "o", color=c, markerfacecolor=c if counts else "white", markersize=6)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(list(range(len(names), 0, -1)), names)
        ax.set_ylim(0.4, len(names) + 0.6)
        ax.set_title(metric, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title + "  (● counts: CI excludes 0, and q < 0.05 if exploratory; ○ grey: not)", fontsize=9)
    fig.tight_layout()
    return figure_html(fig, title)


def significant(d: dict[str, Any]) -> bool:
    """A paired difference counts when its 95% CI excludes 0; an exploratory one (``family``, see
    ``core.arms.mark_families``) only when its Benjamini-Hochberg q-value is below 0.05 as well."""
    lo, hi = d.get("ci95") or (None, None)
    excludes = lo is not None and hi is not None and (lo > 0 or hi < 0)
    if d.get("family") == "exploratory" and "q" in d:
        return excludes and bool(d.get("moved"))
    return excludes


def bars(values: dict[str, float], title: str, xlabel: str) -> str:
    """Horizontal bars, one per name (e.g. tokens per teacher)."""
    values = {k: v for k, v in values.items() if v is not None}
    if not values:
        return ""
    plt = _plt()
    names = list(values)
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.28 * len(names)))
    ax.barh(list(range(len(names)))[::-1], [values[n] for n in names], color="#4c72b0", alpha=0.85)
    ax.set_yticks(list(range(len(names)))[::-1], names)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return figure_html(fig, title)
