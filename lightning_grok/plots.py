"""Matplotlib panels of the reproduced figures: times against a hyperparameter, and loss curves.

Every time is in GD steps. Axes use the paper's symbols: lambda (weight decay), n (training points),
m (parameters or hidden units), nu^2 (initialization scale), t1 = max{t : L_n(theta_t) >= eps} (overfit),
t2 = min{t : L(theta_t) <= c} (generalize), L_n the training loss with its 1/(2n), L the population loss.

Line styles, the same in every figure:

* measured: solid, the mean over seeds, with a band from the smallest to the largest seed (times) or
  +- one standard deviation (loss curves);
* bounds: dashed for Eq. (8) (Remark A.14: t1 <= n ln(14 m nu^2/eps) / (2 eta lambda+_min(Phi^T Phi)),
  t2 >= ln((m - n) nu^2 / (8 m eps)) / (2.02 eta lambda)), dash-dotted for Eq. (6) (t1 upper) and Eq. (7)
  (t2 lower) of Thm 4.2, each the mean of the seeds' values computed from their own Phi, theta0, theta*;
* exact GD dynamics (theory/exact.py), where the model is linear in its parameters: dotted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: runs on clusters and CI without a display
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from lightning_grok.atomic import atomic_write  # noqa: E402

T1_COLOR, T2_COLOR = "tab:blue", "tab:red"
TRAIN_COLOR, TEST_COLOR = "tab:blue", "tab:red"
# bounds drawn in the times panels: (bound name in phases.json, which time, line style, legend label)
BOUND_STYLES = (
    ("eq8_t_overfit_upper", "t1", "--", "Eq. (8) upper bound"),
    ("eq8_t_generalize_lower", "t2", "--", "Eq. (8) lower bound"),
    ("eq6_t_overfit_upper", "t1", "-.", "Eq. (6) upper bound"),
    ("eq7_t_generalize_lower", "t2", "-.", "Eq. (7) lower bound"),
)
PNG_DPI = 300  # print resolution: the PNG goes into a paper or a talk as it is
FLOOR = 1e-8  # loss axes stop at min(eps, c) * FLOOR: below it a float64 loss is rounding noise


def layout(count: int) -> tuple[plt.Figure, list[plt.Axes]]:
    """One row for up to three panels, 2 x 2 for four."""
    if count == 4:
        fig, axes = plt.subplots(2, 2, figsize=(11.0, 8.4))
    else:
        fig, axes = plt.subplots(1, count, figsize=(5.6 * count, 4.3), squeeze=False)
    return fig, list(np.ravel(axes))


def save(fig: plt.Figure, base: Path, title: str, provenance: str = "") -> dict[str, Path]:
    """``base``.png (PNG_DPI) and ``base``.pdf, each written atomically; closes the figure. ``provenance`` (the
    command, runs, seeds) goes into the files' metadata (PNG text chunk ``Description``, PDF ``Subject``), not
    into the image. An OSError (a full disk) names the file that could not be written; no partial file is left."""
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    paths = {"png": base.with_suffix(".png"), "pdf": base.with_suffix(".pdf")}
    options = {
        "png": {"dpi": PNG_DPI, "metadata": {"Title": title, "Description": provenance}},
        "pdf": {"metadata": {"Title": title, "Subject": provenance}},
    }
    try:
        for kind, path in paths.items():
            try:
                atomic_write(path, lambda f, kind=kind: fig.savefig(f, format=kind, **options[kind]))
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
    finally:
        plt.close(fig)
    return paths


def log_ticks(axis: matplotlib.axis.Axis) -> None:
    """A log axis with at least two labelled ticks: decades only when the range holds two or more of them,
    else the minor ticks (2, 3, 5 x 10^k) labelled too."""
    lo, hi = axis.get_view_interval()
    if lo > 0 and math.floor(math.log10(hi)) - math.ceil(math.log10(lo)) >= 1:
        axis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # decades only: no 6x10^1 clutter
    else:
        axis.set_minor_formatter(
            matplotlib.ticker.LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(9, 9))
        )


def seeds_text(counts: Sequence[int]) -> str:
    """Seeds per point for a legend: "3 seeds", or "2-3 seeds" when the points differ."""
    lo, hi = min(counts), max(counts)
    return f"{lo} seed{'s' if hi > 1 else ''}" if lo == hi else f"{lo}-{hi} seeds"


def _positive(values: Sequence[float | None]) -> np.ndarray:
    """floats with None, nan and values <= 0 as nan (not drawable on a log axis)."""
    out = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    out[~np.isfinite(out) | (out <= 0)] = np.nan
    return out


def times_panel(
    ax: plt.Axes,
    points: list[dict],
    *,
    x_label: str,
    x_log: bool,
    y_log: bool,
    title: str,
    legend: bool = True,
    step_unit: str = "GD steps",
) -> dict:
    """t1 and t2 (in ``step_unit``) against a hyperparameter: measured mean over the seeds that reached it
    (solid, seed min-max band), the Eq. (8) bounds (dashed) and Eq. (6)/(7) (dash-dotted), each the mean over
    the seeds whose hypotheses hold, the exact dynamics (dotted). A point where some seed never reached t2 gets
    an open marker at the last step run with an arrow up (t2 lies beyond it); their count is in the panel.
    ``points`` are ``reproduce.collect.point_stats`` rows. Returns the plotted arrays."""
    shown = [p for p in points if p["x"] is not None and (not x_log or p["x"] > 0)]
    x = np.array([p["x"] for p in shown], dtype=np.float64)
    plotted: dict = {"x": x.tolist(), "seeds": [len(p["seeds"]) for p in shown]}
    seeds = seeds_text(plotted["seeds"]) if shown else ""
    for t, color in (("t1", T1_COLOR), ("t2", T2_COLOR)):
        mean = _positive([p[t]["mean"] for p in shown])
        lo, hi = _positive([p[t]["min"] for p in shown]), _positive([p[t]["max"] for p in shown])
        ax.plot(x, mean, "o-", color=color, lw=1.8, ms=4, label=f"${t[0]}_{t[1]}$ measured ({seeds})")
        ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0)
        exact = _positive([p[f"exact_{t}"]["mean"] for p in shown])
        if np.isfinite(exact).any():
            ax.plot(x, exact, ":", color="k", lw=1.4, label="exact GD" if t == "t1" else None)
        plotted[t] = {"mean": mean.tolist(), "min": lo.tolist(), "max": hi.tolist(), "exact": exact.tolist()}
    never = [(p["x"], p["steps_run"], p["t2"]["missing"]) for p in shown if p["t2"]["missing"]]
    if never:
        xs, last = [v[0] for v in never], [v[1] for v in never]
        ax.plot(xs, last, "o", mfc="none", mec=T2_COLOR, ms=7, mew=1.4, label="$t_2$ not reached (last step)")
        for xv, yv in zip(xs, last, strict=True):
            ax.annotate(
                "",
                xy=(xv, yv * (1.8 if y_log else 1.15)),
                xytext=(xv, yv),
                arrowprops={"arrowstyle": "->", "color": T2_COLOR, "lw": 1.2},
            )
        missing, total = sum(v[2] for v in never), sum(len(p["seeds"]) for p in shown)
        ax.text(
            0.98,
            0.02,
            f"$t_2$ not reached: {missing} of {total} seeds",
            transform=ax.transAxes,
            fontsize=7,
            ha="right",
            color=T2_COLOR,
        )
        plotted["t2_not_reached"] = [{"x": v[0], "last_step": v[1], "seeds": v[2]} for v in never]
    for name, t, style, label in BOUND_STYLES:
        values = _positive([(p["bounds"].get(name) or {}).get("mean") for p in shown])
        if np.isfinite(values).any():
            color = T1_COLOR if t == "t1" else T2_COLOR
            ax.plot(x, values, style, color=color, lw=1.2, alpha=0.85, label=f"{label} on ${t[0]}_{t[1]}$")
            plotted[name] = values.tolist()
    left_out = [p["x"] for p in points if p not in shown]
    if left_out:
        ax.text(0.02, 0.02, f"not drawn (log axis): {x_label} = {left_out}", transform=ax.transAxes, fontsize=7)
    ax.set_xlabel(x_label)
    ax.set_ylabel(step_unit)
    ax.set_title(title, fontsize=9.5)
    if x_log:
        ax.set_xscale("log")
    if y_log:
        ax.set_yscale("log")
        log_ticks(ax.yaxis)
    if 0 < len(x) <= 8:  # the swept values themselves as ticks
        ax.set_xticks(x)
        ax.set_xticklabels([nice(v) for v in x], fontsize=8)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    elif x_log:
        log_ticks(ax.xaxis)
    ax.grid(alpha=0.3, which="both", lw=0.5)
    if legend:
        ax.legend(fontsize=7)
    return plotted


def _loss_axes(ax: plt.Axes, eps: float, c: float, title: str, step_unit: str = "GD steps") -> None:
    ax.axhline(eps, color="gray", ls=":", lw=1)
    if c != eps:
        ax.axhline(c, color="gray", ls="-.", lw=1)
    ax.set(xscale="log", yscale="log", xlabel=f"{step_unit.removesuffix('s')} $t$", ylabel="loss")
    ax.set_title(title, fontsize=9.5)
    bottom, top = ax.get_ylim()
    # an exact loss of 0.0 (reached in float64) makes log autoscaling pad by hundreds of decades: cap the top
    # at a few times the largest value drawn
    highest = [
        np.nanmax(y[np.isfinite(y) & (y > 0)])
        for y in (np.asarray(ln.get_ydata(), float) for ln in ax.get_lines())
        if np.any(np.isfinite(y) & (y > 0))
    ]
    if highest:
        top = min(top, 3 * max(highest))
    ax.set_ylim(bottom=max(bottom, min(eps, c) * FLOOR), top=top)
    log_ticks(ax.yaxis)
    ax.grid(alpha=0.3, which="major", lw=0.5)


def ensemble_panel(
    ax: plt.Axes,
    curve: dict,
    *,
    exact: dict | None,
    t1: float | None,
    t2: float | None,
    eps: float,
    c: float,
    title: str,
    step_unit: str = "GD steps",
) -> dict:
    """Training loss L_n and population loss L against GD steps (log x): the seeds' mean (solid, +- one std
    band), the exact GD dynamics of the same tensors (dashed) and the mean t1, t2 (vertical lines)."""
    steps = np.asarray(curve["step"], dtype=np.float64)
    shown = steps > 0
    out: dict = {"step": steps, "measured": {}, "exact": {}}
    for key, label, color in (("train/loss", "train $L_n$", TRAIN_COLOR), ("test/loss", "test $L$", TEST_COLOR)):
        if key not in curve:
            continue
        mean = np.asarray(curve[key], dtype=np.float64)
        out["measured"][key] = mean
        ax.plot(steps[shown], mean[shown], color=color, label=f"{label} (measured)")
        std = curve.get(f"{key}_std")
        if std is not None:
            std = np.asarray(std, dtype=np.float64)
            low = np.maximum(mean - std, mean / 10)  # a log axis cannot show mean - std <= 0
            ax.fill_between(steps[shown], low[shown], (mean + std)[shown], color=color, alpha=0.2, lw=0)
        if exact is not None and key in exact:
            out["exact"][key] = exact[key]
            ax.plot(steps[shown], exact[key][shown], color="k" if key == "test/loss" else "0.35", ls="--", lw=1.1)
    if exact:
        ax.plot([], [], color="0.2", ls="--", lw=1.1, label="exact GD")
    _mark_times(ax, t1, t2)
    _loss_axes(ax, eps, c, title, step_unit)
    ax.legend(fontsize=7)
    return out


def _mark_times(ax: plt.Axes, t1: float | None, t2: float | None) -> None:
    # the labels at two heights: t1 and t2 close together on a log axis would print over each other
    for t, name, color, y in ((t1, "t_1", T1_COLOR, 0.02), (t2, "t_2", T2_COLOR, 0.08)):
        if t is not None and t > 0:
            ax.axvline(t, color=color, ls=":", lw=1.2)
            where = ax.get_xaxis_transform()  # x in data, y in axes coordinates
            ax.text(t, y, f"${name}$={t:,.0f} ", color=color, fontsize=7, ha="right", va="bottom", transform=where)


def curves_panel(
    ax: plt.Axes,
    groups: list[dict],
    *,
    x_symbol: str,
    eps: float,
    c: float,
    title: str,
    log_values: bool = True,
    step_unit: str = "GD steps",
) -> dict:
    """One pair of loss curves per hyperparameter value (colour): training loss L_n dashed, population loss L
    solid, against GD steps (log x), each the seeds' mean; t1 marked with a circle on L_n at eps, t2 with a
    triangle on L at c. ``groups``: dicts with ``x``, ``curve``, ``t1``, ``t2`` (seed means or None)."""
    cmap = plt.get_cmap("viridis")
    out: dict = {}
    for i, g in enumerate(groups):
        color = cmap(0.9 * i / max(len(groups) - 1, 1))
        steps = np.asarray(g["curve"]["step"], dtype=np.float64)
        shown = steps > 0
        value = g["x"]
        label = f"{x_symbol} = {value:.3g}" if isinstance(value, float) else f"{x_symbol} = {value}"
        for key, ls in (("train/loss", "--"), ("test/loss", "-")):
            if key in g["curve"]:
                y = np.asarray(g["curve"][key], dtype=np.float64)
                ax.plot(steps[shown], y[shown], ls=ls, color=color, lw=1.3, label=label if key == "test/loss" else None)
        if g.get("t1"):
            ax.plot([g["t1"]], [eps], "o", color=color, ms=5, mec="k", mew=0.5)
        if g.get("t2"):
            ax.plot([g["t2"]], [c], "v", color=color, ms=6, mec="k", mew=0.5)
        out[str(value)] = {"t1": g.get("t1"), "t2": g.get("t2")}
    ax.plot([], [], "k--", lw=1, label="train $L_n$")
    ax.plot([], [], "k-", lw=1, label="test $L$")
    ax.plot([], [], "o", color="0.5", mec="k", mew=0.5, label="$t_1$")
    ax.plot([], [], "v", color="0.5", mec="k", mew=0.5, label="$t_2$")
    _loss_axes(ax, eps, c, title, step_unit)
    ax.legend(fontsize=6.5, ncol=2)
    return out


def accuracy_panel(
    ax: plt.Axes,
    curve: dict,
    *,
    t1: float | None,
    t2: float | None,
    eps: float,
    c: float,
    title: str,
    step_unit: str = "GD steps",
    tau: float | None = None,
) -> dict:
    """The losses (left axis, log) and, on the right axis, the accuracies against GD steps (log x): for
    classification the train and test accuracy (their t1 and t2 are where they reach ``tau``, dotted), for
    regression (App. B, Fig. 5) the surrogate accuracy Acc(t) = Pr_x((N(x; theta_t) - N*(x))^2 <= eps) on the
    test set."""
    steps = np.asarray(curve["step"], dtype=np.float64)
    shown = steps > 0
    out: dict = {"step": steps}
    # classification: the accuracies are the story, the losses (cross-entropy) stay behind them
    faint = {"lw": 1.0, "alpha": 0.6} if curve.get("test/acc") is not None else {}
    for key, label, color in (("train/loss", "train $L_n$", TRAIN_COLOR), ("test/loss", "test $L$", TEST_COLOR)):
        y = np.asarray(curve[key], dtype=np.float64)
        ax.plot(steps[shown], y[shown], color=color, label=label, **faint)
        out[key] = y
    _mark_times(ax, t1, t2)
    _loss_axes(ax, eps, c, title, step_unit)
    accuracies = (
        ("train/acc", "train accuracy", TRAIN_COLOR),
        ("test/acc", "test accuracy", TEST_COLOR),
        ("test/surrogate_acc", "surrogate accuracy (test)", "tab:green"),
    )
    drawn = [(key, label, color) for key, label, color in accuracies if curve.get(key) is not None]
    if drawn:
        twin = ax.twinx()
        for key, label, color in drawn:
            acc = np.asarray(curve[key], dtype=np.float64)
            twin.plot(steps[shown], acc[shown], color=color, lw=1.8, label=label)
            out[key] = acc
        if tau is not None and any(key != "test/surrogate_acc" for key, *_ in drawn):
            twin.axhline(tau, color="gray", ls=":", lw=1)
        twin.set_ylim(-0.02, 1.02)
        if [key for key, *_ in drawn] == ["test/surrogate_acc"]:
            twin.set_ylabel(r"Acc$(t)$ = Pr$[(N - N^*)^2 \leq \epsilon]$", color="tab:green")
        else:
            twin.set_ylabel(f"accuracy ($t_1$, $t_2$ at {tau:g})" if tau is not None else "accuracy")
        twin.legend(fontsize=7, loc="center left")
    ax.legend(fontsize=7, loc="lower left")
    return out


def nice(value: float) -> str:
    """Short tick-like text of a hyperparameter value: 1e-05, 0.25, 100."""
    if value == 0 or not math.isfinite(value):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.3g}"
