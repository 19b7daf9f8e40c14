"""One command per reproduced paper figure: train the figure's config, then draw measurement beside theory.

  lightning-grok reproduce fig1 [--quick] [--out figures]

``--quick`` shrinks the run (fewer seeds, smaller m, larger lambda) to a minute on a laptop; without it the
figure's own config runs at the paper's scale (Fig. 1 left: 50 seeds, m = 10^4, about 2 minutes on 2 cores).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lightning_grok.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@dataclass(frozen=True)
class Figure:
    config: str
    title: str
    quick: tuple[str, ...]


FIGURES = {
    "fig1": Figure(
        "paper/fig1_ridge.yaml",
        "Fig. 1 (left): ridge regression, zero teacher",
        ("seeds=8", "model.width=2000", "optim.weight_decay=1e-4", "trainer.max_steps=40000"),
    ),
}


def reproduce(name: str, out_dir: Path, quick: bool = False, overrides: tuple[str, ...] = ()) -> dict:
    """Run figure ``name`` into ``out_dir``/``name``; returns the phases and the plotted arrays."""
    from lightning_grok.experiment import build, fit
    from lightning_grok.plots import plot_loss_curves

    fig = FIGURES[name]
    run_dir = out_dir / name
    cfg = load_config(CONFIGS / fig.config, [*(fig.quick if quick else ()), *overrides, f"output_dir={run_dir}"])
    built = build(cfg)
    status, res = fit(cfg, name, built=built)
    curves = json.loads((run_dir / "curves.json").read_text())
    exacts = [m.theory.exact for m in built.members if m.theory is not None]
    plotted = plot_loss_curves(curves, exacts, cfg.phases.eps, cfg.phases.c, fig.title, out_dir / f"{name}.png")
    return {"status": status, "phases": res, "plotted": plotted, "png": out_dir / f"{name}.png"}
