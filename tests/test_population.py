"""Closed-form population quantities (theory/population.py) against large Monte-Carlo samples, and their use
in the theory of a run (data.population=exact) and in ridge's gaussian_projection feature map."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import load

from lightning_grok.config import ConfigError
from lightning_grok.data.regression import regression_tensors
from lightning_grok.members import build_member
from lightning_grok.theory import population as pop
from lightning_grok.theory.exact import ExactDynamics
from lightning_grok.theory.problem import feature_moments

MC = 100_000  # Monte-Carlo inputs per check
Z = 5.0  # tolerance in Monte-Carlo standard errors


def _inputs(dist: str, count: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return pop.draw_inputs(dist, count, d, lambda a, b: rng.standard_normal((a, b)))


def _check_mc(closed: float, sq_err: np.ndarray) -> None:
    mc, se = float(np.mean(sq_err)), pop.standard_error(sq_err)
    assert abs(closed - mc) <= Z * se, f"closed form {closed:.6g} vs Monte Carlo {mc:.6g} +- {se:.2g}"


@pytest.mark.parametrize("dist", pop.INPUT_DISTS)
@pytest.mark.parametrize("teacher", ["relu", "linear", "zero"])
def test_relu_random_feature_loss_matches_monte_carlo(dist, teacher):
    rng = np.random.default_rng(1)
    d, m = 12, 40
    w = rng.standard_normal((m, d)) / math.sqrt(d * m)  # the paper's w_j ~ N(0, nu^2/(dm) I), nu^2 = 1
    a = rng.standard_normal(m)
    feats = pop.Units("relu", w)
    t = (
        pop.Teacher(None)
        if teacher == "zero"
        else pop.Teacher(pop.Units(teacher, rng.standard_normal((1, d)) * 0.3), np.ones(1))
    )
    moments = pop.FeatureMoments(feats, t, dist, d)
    x = _inputs(dist, MC, d, 2)
    _check_mc(float(moments.loss(a)), (feats(x) @ a - t(x)) ** 2)


@pytest.mark.parametrize("dist", pop.INPUT_DISTS)
@pytest.mark.parametrize("teacher", ["fourier", "student", "linear"])
def test_fourier_random_feature_loss_matches_monte_carlo(dist, teacher):
    if teacher == "linear" and dist == "sphere":
        pytest.skip("no closed form for cos against linear on the sphere")
    rng = np.random.default_rng(3)
    d, m = 6, 30
    scale = 1.0 if dist == "gaussian" else math.sqrt(d)  # frequencies of order one against the input's scale
    w = rng.standard_normal((m, d)) * scale
    feats = pop.Units("cos", w, rng.uniform(0, 2 * math.pi, m), math.sqrt(2.0 / m))
    if teacher == "fourier":
        t = pop.Teacher(
            pop.Units("cos", rng.standard_normal((1, d)) * scale, rng.uniform(0, 2 * math.pi, 1), math.sqrt(2)),
            np.ones(1),
        )
    elif teacher == "student":
        t = pop.Teacher(feats, rng.standard_normal(m))
    else:
        t = pop.Teacher(pop.Units("linear", rng.standard_normal((1, d))), np.ones(1))
    a = rng.standard_normal(m)
    moments = pop.FeatureMoments(feats, t, dist, d)
    x = _inputs(dist, MC, d, 4)
    _check_mc(float(moments.loss(a)), (feats(x) @ a - t(x)) ** 2)


@pytest.mark.parametrize("dist", pop.INPUT_DISTS)
def test_two_layer_population_loss_matches_monte_carlo(dist):
    rng = np.random.default_rng(5)
    d, m = 10, 50
    w = rng.standard_normal((m, d)) / math.sqrt(d)  # Sec. 5.3 init w ~ N(0, nu^2/d I), a ~ N(0, 1/m)
    a = rng.standard_normal(m) / math.sqrt(m)
    t = pop.Teacher(pop.Units("relu", rng.standard_normal((1, d)) / math.sqrt(d)), np.ones(1))
    closed = float(pop.two_layer_population_loss(w, a, t, dist))
    x = _inputs(dist, MC, d, 6)
    _check_mc(closed, (np.maximum(x @ w.T, 0) @ a - t(x)) ** 2)


def test_population_rows_reproduce_the_quadratic_on_their_span():
    rng = np.random.default_rng(7)
    d, m, k = 8, 60, 11
    moments = pop.FeatureMoments(
        pop.Units("relu", rng.standard_normal((m, d))),
        pop.Teacher(pop.Units("relu", rng.standard_normal((1, d))), np.ones(1)),
        "gaussian",
        d,
    )
    basis = rng.standard_normal((m, k))
    rows, targets = pop.population_rows(moments, basis)
    assert rows.shape == (k + 1, m)  # fixed by the basis' width, so several runs' rows stack
    for _ in range(3):
        a = basis @ rng.standard_normal(k)
        np.testing.assert_allclose(np.mean((rows @ a - targets) ** 2), moments.loss(a), rtol=1e-9)


def test_closed_form_lambda_min_beats_the_4000_sample_estimate():
    """Truth: lambda_min of Sigma estimated from 3e5 inputs (a few % low at m = 100); the closed form is
    closer to it than the 4000-sample estimate the framework used before (about 30% low)."""
    rng = np.random.default_rng(8)
    d, m = 10, 100
    feats = pop.Units("relu", rng.standard_normal((m, d)) / math.sqrt(d * m))
    closed, source = pop.sigma_min(pop.FeatureMoments(feats, pop.Teacher(None), "gaussian", d))
    assert source.startswith("exact")

    def estimate(count: int, seed: int) -> float:
        sigma = np.zeros((m, m))
        for start in range(0, count, 50_000):
            phi = feats(_inputs("gaussian", min(50_000, count - start), d, seed + start))
            sigma += phi.T @ phi
        return float(np.linalg.eigvalsh(sigma / count)[0])

    truth, small = estimate(300_000, 100), estimate(4000, 9)
    assert abs(closed - truth) < abs(small - truth) / 3
    assert abs(closed - truth) / truth < 0.06


def test_lambda_min_through_the_cholesky_path_equals_eigvalsh():
    rng = np.random.default_rng(10)
    moments = pop.FeatureMoments(pop.Units("relu", rng.standard_normal((300, 15))), pop.Teacher(None), "sphere", 15)
    dense, _ = pop.sigma_min(moments)
    lanczos, source = pop.sigma_min(moments, dense_max_width=100)
    assert "Lanczos" in source
    np.testing.assert_allclose(lanczos, dense, rtol=1e-6)
    assert pop.sigma_min(moments, max_width=100)[0] is None


SMALL = ("model.width=300", "data.input_dim=20", "data.n_train=40", "optim.weight_decay=1e-3", "data.n_test=200")


@pytest.mark.parametrize(
    "extra",
    [
        ("data.input_dist=gaussian", "data.teacher_norm=0.2"),
        ("data.input_dist=sphere",),
        ("model.features=fourier", "data.teacher=fourier", "data.input_dist=gaussian_scaled"),
        ("model.features=fourier", "data.teacher=student", "data.teacher_norm=5"),
    ],
)
def test_exact_population_of_a_run_is_the_closed_form_along_the_gd_path(extra):
    cfg = load("random_features.yaml", *SMALL, "data.population=exact", *extra)
    member = build_member(cfg)
    moments = feature_moments(cfg, member.model)
    ex = member.theory.exact
    for t in (0, 10, 1000, 10**6):
        np.testing.assert_allclose(ex.population_loss(t)[0], moments.loss(ex.theta(t)[:, 0]), rtol=1e-8)
    assert member.theory.problem.sigma_min_source.startswith("exact")
    # the training-time test set is still drawn (the kernels measure it) and agrees within its standard error
    p, t = member.theory.problem, member.tensors
    with torch.no_grad():
        phi_test = member.model.features(t.x_test).numpy()
    err = (phi_test @ p.theta0 - t.y_test.numpy()) ** 2
    _check_mc(float(ex.population_loss(0)[0]), err[:, 0])


@pytest.mark.parametrize("dist", pop.INPUT_DISTS)
def test_ridge_gaussian_projection_has_an_exact_population(dist):
    cfg = load(
        "ridge.yaml",
        "model.ridge_features=gaussian_projection",
        "model.width=400",
        "data.input_dim=50",
        f"data.input_dist={dist}",
        "data.label_noise_std=0.1",
    )
    member = build_member(cfg)
    p = member.theory.problem
    assert p.phi_test.shape == (50, 400)  # d rows: exact, not sampled
    assert p.sigma_min == 0.0 and "rank" in p.sigma_min_source
    theta = p.theta0[:, 0]
    exact = float(np.mean((p.phi_test @ theta - p.y_test[:, 0]) ** 2))
    from lightning_grok.data.regression import ridge_projection

    w = ridge_projection(cfg).numpy()
    v = w.T @ (theta - p.theta_star[:, 0]) / math.sqrt(50)  # <phi(z), delta> = <z, W^T delta> / sqrt(d)
    _check_mc(exact, (_inputs(dist, MC, 50, 11) @ v) ** 2)


def test_input_distributions_have_the_documented_scale():
    for dist, norm2 in (("gaussian", 30.0), ("gaussian_scaled", 1.0), ("sphere", 1.0)):
        cfg = load("random_features.yaml", *SMALL, "data.input_dim=30", f"data.input_dist={dist}")
        x = regression_tensors(cfg).x_train
        mean = float(x.square().sum(dim=1).mean())
        assert abs(mean - norm2) < 0.35 * norm2
        if dist == "sphere":
            np.testing.assert_allclose(x.norm(dim=1).numpy(), 1.0, rtol=1e-12)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("data.input_dist=cube",), "'data.input_dist': 'cube'"),
        (("model.ridge_features=gaussian_projection",), "'model.ridge_features'"),
        (("data.population=exact", "data.teacher=fourier"), "closed forms exist for relu features"),
        (("model.family=two_layer", "data.population=exact", "data.teacher=fourier"), "arc-cosine kernel"),
    ],
)
def test_bad_settings_name_key_value_and_what_is_allowed(overrides, message):
    with pytest.raises(ConfigError, match=message):  # at validation: nothing is built
        load("random_features.yaml", *SMALL, *overrides)


@pytest.mark.parametrize(
    ("config", "overrides", "message"),
    [
        ("ridge.yaml", ("data.teacher=relu", "data.population=exact"), "needs a zero, linear or student teacher"),
        ("modular/ridge_add.yaml", ("data.modulus=3", "data.train_fraction=0.01"), "gives 0 of 9 pairs"),
        ("modular/ridge_add.yaml", ("data.modulus=5", "data.operation=div", "data.train_fraction=0.99"), "of 20 pairs"),
    ],
)
def test_data_combinations_are_refused_when_the_config_loads(config, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load(config, *overrides)


def test_identity_ridge_refuses_another_dimension_or_input_distribution():
    with pytest.raises(ConfigError, match="gaussian_projection allows any d"):
        load("ridge.yaml", "data.input_dim=50")
    with pytest.raises(ConfigError, match="identity ridge features are x ~ N"):
        load("ridge.yaml", "data.input_dist=sphere")


def test_standard_error_is_the_std_of_the_squared_errors_over_sqrt_n():
    e = np.array([0.0, 1.0, 2.0, 3.0])
    assert pop.standard_error(e) == pytest.approx(np.std(e, ddof=1) / 2)
    assert math.isnan(pop.standard_error(np.array([1.0])))
    assert ExactDynamics  # imported for the run-level checks above


def test_training_measures_the_closed_form_population_loss(tmp_path):
    """With data.population=exact the fused GD loop's test loss is the closed-form L of the trained parameters
    (not a test-set estimate), so measured t2 equals the exact one and phases.json reports no sampling error."""
    from conftest import fit

    args = (*SMALL, "data.population=exact", "trainer.max_steps=3000", "wandb.mode=disabled", "seeds=2")
    status, res = fit("random_features.yaml", tmp_path / "exact", *args)
    assert status == 0
    cfg = load("random_features.yaml", *args)
    for i, member_res in enumerate(res["members"]):
        member_cfg = load("random_features.yaml", *args, f"seed={cfg.seed + i}")
        member = build_member(member_cfg)
        # the last record is the loss of the iterate before the last step (records are L(theta_t), t < steps_run)
        a = member.theory.exact.theta(member_res["steps_run"] - 1)[:, 0]
        closed = feature_moments(member_cfg, member.model).loss(a)
        assert member_res["final"]["test/loss"] == pytest.approx(closed, rel=1e-9)
        assert member_res["t_generalize"] == member_res["exact"]["t_generalize"] is not None
        assert member_res["population"] == {"source": "closed form (theory/population.py)", "test_loss_stderr": 0.0}
    # sampled: the loss is a mean over data.n_test points and its standard error is reported
    status, sampled = fit("random_features.yaml", tmp_path / "sampled", *args[:-1], "data.population=sampled")
    assert status == 0
    stderr = sampled["population"]["test_loss_stderr"]
    assert sampled["population"]["source"] == "test set of 200 points (data.n_test)"
    assert 0 < stderr < sampled["final"]["test/loss"]
