"""`lightning-grok reproduce fig1`: the figure is drawn, and its measured curves sit on the exact dynamics."""

from __future__ import annotations

import numpy as np

from lightning_grok.reproduce import reproduce


def test_fig1_measured_curves_lie_on_the_exact_dynamics(tmp_path):
    out = reproduce("fig1", tmp_path, quick=True, overrides=("seeds=3", "model.width=500", "optim.weight_decay=1e-3"))
    assert out["status"] == 0 and out["png"].stat().st_size > 10_000
    assert out["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plotted = out["plotted"]
    for key in ("train/loss", "test/loss"):
        measured, exact = plotted["measured"][key], plotted["exact"][key]
        visible = measured > 1e-20  # above float64 rounding noise
        np.testing.assert_allclose(measured[visible], exact[visible], rtol=1e-8)
    agg = out["phases"]["aggregate"]
    assert agg["t_generalize_matches_exact"] and agg["t_overfit_matches_exact"]
