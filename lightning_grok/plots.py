"""Matplotlib figures: measured loss curves with the exact GD dynamics drawn beside them."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: runs on clusters and CI without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lightning_grok.theory.exact import ExactDynamics  # noqa: E402


def exact_curves(exacts: list[ExactDynamics], steps: np.ndarray) -> dict[str, np.ndarray]:
    """Members' mean exact training loss L_n and population loss L at ``steps``."""
    return {
        "train/loss": np.mean([e.train_loss(steps) for e in exacts], axis=0),
        "test/loss": np.mean([e.population_loss(steps) for e in exacts], axis=0),
    }


def plot_loss_curves(curves: dict, exacts: list[ExactDynamics], eps: float, c: float, title: str, path: Path) -> dict:
    """Train and test loss against GD steps (log x): measured mean (solid, +- one std band when there are
    several seeds) and exact dynamics (dashed), with the thresholds eps and c. Returns the plotted arrays."""
    steps = np.asarray(curves["step"])
    shown = steps > 0  # log x
    theory = exact_curves(exacts, steps) if exacts else {}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for key, label, color in (("train/loss", "train $L_n$", "tab:blue"), ("test/loss", "test $L$", "tab:red")):
        mean = np.asarray(curves[key])
        ax.plot(steps[shown], mean[shown], color=color, label=f"{label} (measured)")
        if f"{key}_std" in curves:
            std = np.asarray(curves[f"{key}_std"])
            low = np.maximum(mean - std, mean / 10)  # a log axis cannot show mean - std <= 0
            ax.fill_between(steps[shown], low[shown], (mean + std)[shown], color=color, alpha=0.2, lw=0)
        if key in theory:
            ax.plot(steps[shown], theory[key][shown], color=color, ls="--", lw=1.2, label=f"{label} (exact GD)")
    ax.axhline(eps, color="gray", ls=":", lw=1)
    if c != eps:
        ax.axhline(c, color="gray", ls="-.", lw=1)
    ax.set(xscale="log", yscale="log", xlabel="GD step t", ylabel="loss", title=title)
    # below ~eps * 1e-8 a float64 loss is rounding noise, not dynamics: keep the axis on the transitions
    ax.set_ylim(bottom=min(eps, c) * 1e-8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return {"step": steps, "measured": {k: np.asarray(curves[k]) for k in theory}, "exact": theory}
