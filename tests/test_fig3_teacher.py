"""Fig. 3's default learns its teacher (issue 16 item 3), by the exact dynamics of studies/fig3_teacher.py; and
that study's shortcut (one set of population rows for every teacher norm and n, zero teacher = norm 0) is the
run's own problem."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import load

from lightning_grok.members import build_member
from lightning_grok.theory import population as pop
from lightning_grok.theory.exact import ExactDynamics
from lightning_grok.theory.problem import feature_moments

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "studies"))

import fig3_teacher as study  # noqa: E402

FIG3 = "configs/paper/fig3_random_features.yaml"
STEPS = np.array([0, 1, 7, 100, 1000, 10_000, 100_000, 10**7])


@pytest.mark.parametrize(
    "config, settings",
    [
        ("configs/random_features.yaml", study.rf(300, 10, 2.0, "gaussian")),
        ("configs/random_features.yaml", study.rf(300, 10, 1.0, "sphere")),
        ("configs/paper/fig7_fourier.yaml", ("model.width=300",)),
    ],
)
def test_study_problems_equal_the_runs_own_problems(config, settings):
    """For each n and for teacher norms a and 0, the study's scaled unit-teacher problem has the same training and
    population loss at every step as the run built from the config with data.teacher_norm=a (or teacher=zero)."""
    teacher = "fourier" if "fourier" in config else "relu"
    group = study.Group(config, 3, (20, 45), settings)
    problems, ey2_unit, _ = study.unit_problems(group, teacher)
    for n, unit in problems.items():
        for kind, norm in ((teacher, 0.7), ("zero", 0.0)):
            cfg = load(str(ROOT / config), *group.overrides(n, kind, norm if norm else 1.0))
            member = build_member(cfg)
            mine = ExactDynamics(study.scaled(unit, norm))
            run = member.theory.exact
            np.testing.assert_allclose(mine.train_loss(STEPS), run.train_loss(STEPS), rtol=1e-9, atol=1e-15)
            np.testing.assert_allclose(mine.population_loss(STEPS), run.population_loss(STEPS), rtol=1e-8, atol=1e-14)
            ey2 = feature_moments(cfg, member.model).target_second_moment()
            assert norm**2 * ey2_unit == pytest.approx(ey2, rel=1e-12, abs=1e-300)


def test_population_rows_batch_equals_one_basis_at_a_time():
    rng = np.random.default_rng(0)
    d, m = 8, 60
    feats = pop.Units("relu", rng.standard_normal((m, d)) / np.sqrt(d * m))
    teacher = pop.Teacher(pop.Units("relu", rng.standard_normal((1, d)) * 0.3), np.ones(1))
    moments = pop.FeatureMoments(feats, teacher, "gaussian", d)
    bases = [rng.standard_normal((m, k)) for k in (5, 11, 3)]
    for (rows, targets), basis in zip(pop.population_rows_batch(moments, bases), bases, strict=True):
        one_rows, one_targets = pop.population_rows(moments, basis)
        np.testing.assert_allclose(rows, one_rows, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(targets, one_targets, rtol=1e-10, atol=1e-12)
        a = basis @ rng.standard_normal(basis.shape[1])  # a point of the span: the rows' loss is L(a)
        assert np.mean((rows @ a - targets) ** 2) == pytest.approx(moments.loss(a), rel=1e-9)


def test_fig3_default_learns_its_teacher():
    """The Fig. 3 default (seed 0, exact dynamics at the paper's m = 10^4): E[y^2] >= 10 c, L(theta0) >= 10 c,
    the population loss stays above c for at least a decade of steps after t1, t2 exists, and t2 is at least
    RATIO_MIN x the zero teacher's t2 of the same features, inputs and init: the teacher, not the forgetting of
    the initialization, sets t2."""
    cfg = load(str(ROOT / FIG3))
    c = cfg.phases.c
    assert cfg.phases.eps == c  # the study's t1 is t1(eps = c)
    group = study.Group(FIG3, int(cfg.seed), (int(cfg.data.n_train),))
    (row,) = study.evaluate(group, [], [c], cfg.data.teacher, norms=[float(cfg.data.teacher_norm)])
    assert row["Ey2"] >= study.SIGNAL_MIN * c
    assert row["L0"] >= study.START_MIN * c
    assert row["t1"] is not None and row["t2"] is not None
    assert row["t2"] >= study.PLATEAU_DECADE * row["t1"]
    assert row["plateau_10t1"] >= 1.5 * c  # 2.03 c at seed 0: a plateau, not a brush past c
    assert row["L_limit"] < c
    assert row["zero"]["t2"] is not None
    assert row["t2"] >= study.RATIO_MIN * row["zero"]["t2"]
    assert row["pass"]
