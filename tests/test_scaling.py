"""The scaling-law fits recover known slopes from synthetic sweeps and judge them as the paper would."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_grok.scaling import fit_law, fit_line, markdown_table


def _seeds(xs, f, noise, seeds=5, rng=None):
    rng = rng or np.random.default_rng(0)
    x = np.repeat(xs, seeds)
    return x, f(x) * np.exp(noise * rng.standard_normal(len(x)))


def test_fit_line_recovers_a_known_slope_and_its_interval_covers_it():
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(200):
        x = np.repeat(np.linspace(0, 1, 6), 5)
        y = 2.5 * x - 1 + 0.1 * rng.standard_normal(len(x))
        fit = fit_line(x, y)
        covered += fit.ci_low <= 2.5 <= fit.ci_high
    assert 0.90 <= covered / 200 <= 0.99  # a 95% interval, checked by its coverage


def test_t2_inverse_in_weight_decay_is_consistent_and_a_square_law_is_not():
    lam = np.logspace(-6, -3, 6)
    x, t2 = _seeds(lam, lambda v: 2.3 / v, noise=0.01)
    good = fit_law("t2_vs_weight_decay", x, t2)
    assert good.fit.slope == pytest.approx(-1.0, abs=0.01) and good.verdict == "consistent"
    x, t2 = _seeds(lam, lambda v: 1e-3 / v**2, noise=0.01)
    assert fit_law("t2_vs_weight_decay", x, t2).verdict == "inconsistent"


def test_flat_t1_and_log_linear_init_scale_laws():
    lam = np.logspace(-6, -4, 5)
    x, t1 = _seeds(lam, lambda v: 212 + 0 * v, noise=0.002)
    assert fit_law("t1_vs_weight_decay", x, t1).verdict == "consistent"
    nu2 = np.logspace(-1, 2, 6)
    x = np.repeat(nu2, 4)
    report = fit_law("t2_vs_log_init_scale", x, 5000 * np.log(x) + 20000)
    assert report.fit.slope == pytest.approx(5000) and report.verdict == "consistent"
    assert fit_law("t1_vs_log_init_scale", x, 30000 - 10 * np.log(x)).verdict == "inconsistent"


def test_missing_times_are_dropped_and_too_few_points_say_so():
    report = fit_law("t2_vs_weight_decay", [1e-4, 1e-3, 1e-2], [None, 2300, None])
    assert report.verdict == "insufficient data" and report.fit is None
    table = markdown_table([report])
    assert "insufficient data" in table and table.count("\n") == 2
