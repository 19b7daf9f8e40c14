"""The closed-form dynamics agree with iterated GD (Eq. 2) step by step, in every regime they cover."""

from __future__ import annotations

import time

import numpy as np
import pytest

from lightning_grok.theory.exact import ExactDynamics, LinearProblem


def _gd(problem: LinearProblem, steps: int, population):
    theta = problem.theta0.copy()
    train, pop = [], []
    for _ in range(steps):
        r = problem.phi @ theta - problem.y
        train.append(np.sum(r**2) / (2 * problem.n))
        pop.append(population(theta))
        theta = (1 - problem.lr * problem.weight_decay) * theta - problem.lr / problem.n * problem.phi.T @ r
    return np.array(train), np.array(pop), theta


def _problem(n=40, m=200, k=1, lam=1e-3, eta=1.0, noise=0.0, seed=0, exact=True):
    rng = np.random.default_rng(seed)
    phi = rng.normal(size=(n, m)) / np.sqrt(m)
    ts = rng.normal(size=(m, k))
    ts /= np.linalg.norm(ts)
    y = phi @ ts + noise * rng.normal(size=(n, k))
    th0 = rng.normal(size=(m, k))
    phit = rng.normal(size=(300, m)) / np.sqrt(m)
    kw = {"sigma_scale": 1 / m} if exact else {"phi_test": phit, "y_test": phit @ ts}
    p = LinearProblem(phi, y, th0, eta, lam, 1.0, theta_star=ts, noise_free=noise == 0, **kw)
    if exact:
        return p, lambda th: np.sum((th - ts) ** 2) / m
    return p, lambda th: np.mean(np.sum((phit @ th - phit @ ts) ** 2, axis=1))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # realizable, Sigma = I/m exact
        {"exact": False},  # population loss over a test set
        {"k": 3, "exact": False},  # several outputs (one-hot targets)
        {"noise": 0.1},  # label noise: not realizable, still exact dynamics
        {"n": 150, "m": 60},  # n > m: Phi^T Phi full rank, no null space
        {"lam": 0.0},  # no weight decay: the null-space part never moves
        {"eta": 30.0, "lam": 1e-2},  # large step: some rho_j < 0 (oscillating modes)
    ],
)
def test_closed_form_matches_iterated_gd(kwargs):
    problem, population = _problem(**kwargs)
    steps = 3000
    train, pop, theta = _gd(problem, steps, population)
    exact = ExactDynamics(problem)
    t = np.arange(steps)
    np.testing.assert_allclose(exact.train_loss(t), train, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(exact.population_loss(t), pop, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(exact.theta(steps), theta, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("lam", [1e-2, 1e-3])
def test_exact_phase_times_equal_iterated_gd(lam):
    problem, population = _problem(lam=lam, seed=3)
    exact = ExactDynamics(problem)
    t1, t2 = exact.t_overfit(0.01), exact.t_generalize(0.01)
    train, pop, _ = _gd(problem, t2 + 50, population)
    assert t1 == np.nonzero(train >= 0.01)[0].max()
    assert t2 == np.nonzero(pop <= 0.01)[0].min()


def test_ridge_fixed_point_is_the_ridge_solution():
    problem, _ = _problem(lam=1e-2, noise=0.05)
    exact = ExactDynamics(problem)
    n, m = problem.phi.shape
    direct = np.linalg.solve(problem.phi.T @ problem.phi / n + 1e-2 * np.eye(m), problem.phi.T @ problem.y / n)
    np.testing.assert_allclose(exact.theta_ridge, direct, rtol=1e-8, atol=1e-12)


def test_tiny_weight_decay_is_solved_without_iterating():
    """lambda = 1e-7 puts t2 in the tens of millions of steps; the closed form needs a fraction of a second
    (iterating GD that far would take minutes). CPU time with a wide margin: the check must not depend on
    what else the machine is running."""
    problem, _ = _problem(n=100, m=1000, lam=1e-7)
    start = time.process_time()
    exact = ExactDynamics(problem)
    t1, t2 = exact.t_overfit(0.01), exact.t_generalize(0.01)
    elapsed = time.process_time() - start
    assert elapsed < 5.0
    assert t2 > 10**7
    # t2 is the first step at or below c: check the two steps around it exactly
    assert exact.population_loss(t2)[0] <= 0.01 < exact.population_loss(t2 - 1)[0]
    assert exact.train_loss(t1)[0] >= 0.01 > exact.train_loss(t1 + 1)[0]


def test_never_generalizes_and_never_overfits_are_none():
    # label noise with no weight decay cannot be fit below a large eps? use eps above the start instead:
    problem, _ = _problem(lam=1e-3)
    exact = ExactDynamics(problem)
    assert exact.t_generalize(1e-30) is None  # the limit (ridge bias) is above 1e-30
    assert exact.t_overfit(1e6) is None  # starts below eps: the set {t: L_n >= eps} is empty


@pytest.mark.parametrize("end", [10, 2048, 2049, 10**5, 10**9, 10**13])
def test_the_step_grid_is_dense_then_geometric_and_its_length_bound_holds(end):
    from lightning_grok.theory.grid import DENSE_GRID_STEPS, GRID_LOG_SPACING, grid_length, step_grid

    grid = step_grid(end)
    assert grid[0] == 0 and grid[-1] == end and np.all(np.diff(grid) > 0)
    assert len(grid) <= grid_length(end)  # the memory estimate never undercounts
    dense = grid[grid <= DENSE_GRID_STEPS]
    assert np.array_equal(dense, np.arange(len(dense)))
    # beyond the dense part consecutive steps are GRID_LOG_SPACING apart in log t, up to rounding to whole steps
    tail = grid[grid >= DENSE_GRID_STEPS].astype(float)
    if len(tail) > 1:
        assert np.max(np.diff(np.log(tail))) <= GRID_LOG_SPACING + 1 / DENSE_GRID_STEPS


@pytest.mark.parametrize("kwargs", [{}, {"exact": False}, {"n": 150, "m": 60}, {"noise": 0.1, "lam": 1e-2}])
def test_one_svd_serves_the_dynamics_and_the_bounds(kwargs):
    """RunTheory computes the SVD of Phi once: the bounds' quantities from ``ExactDynamics.spectrum`` equal those
    from their own SVD to rounding, and ``phase_times`` (the powers on the grid computed once) equals t1 and t2
    computed apart."""
    from dataclasses import asdict

    from lightning_grok.theory.bounds import Quantities
    from lightning_grok.theory.run_theory import RunTheory

    problem, _ = _problem(**kwargs)
    theory = RunTheory.from_problem(problem, 0.01, 0.01, 0.1)
    alone = asdict(Quantities.from_problem(problem, 0.01, 0.01, 0.1))
    for key, value in asdict(theory.quantities).items():
        if isinstance(value, float) and not isinstance(value, bool):
            assert value == pytest.approx(alone[key], rel=1e-12, abs=1e-300), key
        else:
            assert value == alone[key], key
    exact = ExactDynamics(problem)
    assert (theory.exact_t_overfit, theory.exact_t_generalize) == (exact.t_overfit(0.01), exact.t_generalize(0.01))
    assert theory.exact_t_generalize is not None
