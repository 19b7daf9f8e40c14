"""Figures ready for a paper and a reproduce run a team can trace: drawn from real runs, a figure has no text
inside the image beyond its axes (the provenance goes into the file's metadata), a 300 dpi PNG, the seeds per
point in the legend and an open marker for a point whose seeds never reached t2; the reproduce W&B run lists
the plotted runs' results artifacts; quick panels are a W&B group of their own."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
from conftest import fit, load

SMALL = ("model.width=200", "data.n_train=20", "trainer.max_steps=3000")


@pytest.fixture(scope="module")
def panel_runs(tmp_path_factory):
    """Two real ridge runs of Fig. 2's weight-decay panel, logged to W&B offline: lambda = 1e-3 reaches t2
    (exact t2 2555) and lambda = 1e-5 does not within 3000 steps."""
    root = tmp_path_factory.mktemp("panel")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        for wd in ("1e-3", "1e-5"):
            status, _ = fit("ridge.yaml", root / f"wd{wd}", *SMALL, f"optim.weight_decay={wd}", "wandb.mode=offline")
            assert status == 0
    from lightning_grok.reproduce import FIGURES, read_runs

    figure = FIGURES["fig2"]
    panel = next(p for p in figure.panels if p.key == "weight_decay")
    runs, left_out = read_runs(root, panel)
    assert len(runs) == 2 and not left_out
    return dataclasses.replace(figure, panels=(panel,)), {panel.key: runs}, root


def test_a_figure_for_a_paper(panel_runs, tmp_path, monkeypatch):
    from PIL import Image

    from lightning_grok import plots
    from lightning_grok.reproduce import draw_figure

    figure, runs, _ = panel_runs
    seen = {}
    save = plots.save

    def observe(fig, base, title, provenance=""):  # what the image holds, just before it is written
        seen["texts"] = [t.get_text() for t in fig.texts]
        seen["open_markers"] = [
            (list(ln.get_xdata()), list(ln.get_ydata()))
            for ax in fig.axes
            for ln in ax.get_lines()
            if ln.get_marker() == "o" and ln.get_markerfacecolor() == "none"
        ]
        seen["legend"] = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
        return save(fig, base, title, provenance)

    monkeypatch.setattr(plots, "save", observe)
    provenance = "lightning-grok reproduce fig2: 2 run(s), 2 seed(s)"
    drawn = draw_figure(figure, runs, tmp_path, provenance)
    assert seen["texts"] == [], seen["texts"]  # no footer: only the suptitle (not a fig.texts artist)
    png = Image.open(drawn["paths"]["png"])
    assert png.info["Description"] == provenance
    assert [round(v) for v in png.info["dpi"]] == [300, 300]
    # the seeds per point, the side of each bound, and the point without t2 marked at its last step
    assert "$t_2$ measured (1 seed)" in seen["legend"]
    assert any("upper bound" in t for t in seen["legend"]) and any("lower bound" in t for t in seen["legend"])
    assert seen["open_markers"] == [([1e-5], [3000])]
    (plotted,) = drawn["panels"].values()
    assert plotted["t2_not_reached"] == [{"x": 1e-5, "last_step": 3000, "seeds": 1}]


def test_the_reproduce_run_lists_the_runs_it_plots(panel_runs, tmp_path, monkeypatch):
    from lightning_grok.reproduce.report import log_to_wandb

    figure, runs, root = panel_runs
    monkeypatch.setenv("WANDB_MODE", "offline")
    opts = {"quick": True, "seeds": 1, "overrides": ("wandb.mode=offline",)}
    import matplotlib.pyplot as plt

    png = tmp_path / "x.png"
    plt.figure().savefig(png)
    assert log_to_wandb(figure, png, [], opts, tmp_path, runs) == "offline"
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    wandb_bin = os.path.join(os.path.dirname(sys.executable), "wandb")
    records = [
        json.loads(line)
        for line in subprocess.check_output(
            [wandb_bin, "leet", "inspect", "--json", str(run_dir)], text=True
        ).splitlines()
        if line
    ]
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    assert (run["job_type"], run["display_name"]) == ("reproduce", "reproduce-fig2-quick")
    assert run["tags"] == ["fig2", "quick"]
    config = {k: v for r in records if r["type"] == "config" for k, v in r["config"].get("update", {}).items()}
    config |= run["config"].get("update", {})
    ids = sorted(f"results-{(root / d / 'wandb_run_id.txt').read_text().strip()}" for d in ("wd1e-3", "wd1e-5"))
    assert sorted(config["results_artifacts"]) == ids
    assert config["quick"] is True and config["panels"] == {"weight_decay": "fig2_weight_decay-quick"}


def test_quick_panels_have_their_own_group_and_tags():
    from lightning_grok.reproduce import FIGURES, panel_sweep
    from lightning_grok.sweep.spec import same_runs
    from lightning_grok.wandb_logger import run_tags

    panel = FIGURES["fig2"].panels[0]
    quick = panel_sweep(panel, quick=True, seeds=None, overrides=())
    full = panel_sweep(panel, quick=False, seeds=None, overrides=())
    assert quick["name"] == "fig2_weight_decay-quick" and full["name"] == "fig2_weight_decay"
    # a sweep directory made before the rename still holds the same runs
    assert same_runs(quick | {"name": "fig2_weight_decay"}, quick)
    assert not same_runs(quick, full)
    assert run_tags(load("ridge.yaml", "wandb.group=fig2_weight_decay-quick")) == [
        "ridge",
        "regression",
        "fig2",
        "fig2_weight_decay",
        "quick",
    ]
    assert run_tags(load("ridge.yaml", "seeds=2", "wandb.group=mine")) == ["ridge", "regression", "ensemble"]
