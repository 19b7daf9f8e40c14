"""A run in feature space: the LinearProblem that the closed-form dynamics and the bounds take.

Computed from the very tensors the run trains on (the sampled Phi, theta^(0), theta*), in float64, never
from a second sample. Lightning-free, so ``lightning-grok theory`` starts in the time torch takes.

Population quantities (notes Sec. 1, L(theta) = (theta - theta*)^T Sigma (theta - theta*) when realizable):

* ridge, identity features: Sigma = I/m exactly (``sigma_scale``).
* ridge, gaussian_projection: Sigma = s2 W W^T / d; the data's test set is d points whose mean squared error
  is L exactly (data/regression.py); lambda_min(Sigma) = 0 when d < m, else the smallest eigenvalue of Sigma.
* random features with ``data.population: exact``: the closed-form Sigma, E[phi y] and E[y^2] of
  theory/population.py (arc-cosine kernel for ReLU features, Gaussian / Bessel characteristic function for
  Fourier features; Gaussian and sphere inputs). The exact dynamics get the equivalent rows of
  ``population.population_rows`` on span(Phi^T, theta^(0)), where GD moves, so their population loss and t2 have
  no sampling error; lambda_min(Sigma) is computed from the closed form.
* otherwise (``sampled``): the test set, and lambda_min(Sigma) estimated from ``data.n_sigma_samples`` inputs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from omegaconf import DictConfig

from lightning_grok.data.base import RunData
from lightning_grok.plan import SIGMA_ESTIMATE_MAX_WIDTH, RunPlan
from lightning_grok.theory import population as pop
from lightning_grok.theory.exact import LinearProblem


def param_dtype(cfg: DictConfig) -> torch.dtype:
    """float64 for ``trainer.precision`` 64-*, else float32 (the parameters' dtype; mixed precision autocasts)."""
    return torch.float64 if cfg.trainer.precision.startswith("64") else torch.float32


def feature_moments(cfg: DictConfig, model: torch.nn.Module) -> pop.FeatureMoments:
    """The closed-form second moments of a random-feature model's features and the run's teacher."""
    from lightning_grok.data.regression import draw_teacher, input_dim

    w = model.weight.double().cpu().numpy()
    m = w.shape[0]
    if model.kind == "relu":
        feats = pop.Units("relu", w)
    else:
        feats = pop.Units("cos", w, model.bias.double().cpu().numpy(), math.sqrt(2.0 / m))
    spec = draw_teacher(cfg)
    one = np.ones(1)
    if spec.kind == "zero":
        teacher = pop.Teacher(None)
    elif spec.kind == "student":
        teacher = pop.Teacher(feats, spec.weight.numpy().ravel())
    elif spec.kind == "fourier":
        teacher = pop.Teacher(pop.Units("cos", spec.weight.numpy().T, np.array([spec.bias]), spec.scale), one)
    else:  # linear, relu
        teacher = pop.Teacher(pop.Units(spec.kind, spec.weight.numpy().T), one)
    return pop.FeatureMoments(feats, teacher, cfg.data.input_dist, input_dim(cfg))


def _ridge_projection_sigma_min(cfg: DictConfig) -> tuple[float, str]:
    from lightning_grok.data.regression import latent_dim, ridge_projection

    d, m = latent_dim(cfg), cfg.model.width
    if d < m:
        return 0.0, f"exact (Sigma = s2 W W^T / d has rank d = {d} < m = {m})"
    w = ridge_projection(cfg).numpy()
    s2 = pop.input_variance(cfg.data.input_dist, d)
    return max(0.0, float(np.linalg.eigvalsh(s2 * (w @ w.T) / d)[0])), "exact (Sigma = s2 W W^T / d)"


def linear_problem(
    cfg: DictConfig, model: torch.nn.Module, t: RunData, plan: RunPlan | None = None
) -> tuple[LinearProblem | None, str]:
    """The run in feature space (float64), or None with the reason no closed form applies (``RunPlan.theory``;
    ``plan``: the run's, that of ``cfg`` if None). Its Phi, Y and test side are also what the linear GD loops train
    on and measure (``GrokkingModule``): one Phi for training and theory."""
    plan = plan or RunPlan.from_config(cfg)
    if not plan.theory:
        return None, plan.theory_note
    dtype = param_dtype(cfg)
    exact_rf = plan.closed_form_features  # the population quantities of theory/population.py
    moments = feature_moments(cfg, model) if exact_rf else None  # one teacher draw for lambda_min and the rows
    with torch.no_grad():
        feats = lambda x: model.features(x.to(dtype)).double().numpy()  # noqa: E731
        phi = feats(t.x_train)
        phi_test = feats(t.x_test) if t.x_test is not None else None
        theta0 = model.theta_init.to(dtype).double().numpy()
        y = t.y_train.to(dtype).double().numpy()
        y_test = None if t.y_test is None else t.y_test.to(dtype).double().numpy()
        sigma_min, source = None, "unknown"
        if t.sigma_scale is not None:
            sigma_min, source = t.sigma_scale, "exact (Sigma = I/m)"
        elif cfg.data.kind == "regression" and cfg.model.family == "ridge":
            sigma_min, source = _ridge_projection_sigma_min(cfg)
        elif exact_rf:
            sigma_min, source = pop.sigma_min(moments)
        elif t.x_sigma is not None:
            m = phi.shape[1]
            if m > SIGMA_ESTIMATE_MAX_WIDTH and not t.sigma_is_exact:
                source = f"not estimated (m = {m} > {SIGMA_ESTIMATE_MAX_WIDTH})"
            else:
                f_sig = feats(t.x_sigma)
                sigma = f_sig.T @ f_sig / f_sig.shape[0]
                sigma_min = max(0.0, float(np.linalg.eigvalsh(sigma)[0]))
                source = (
                    "exact over the finite input population"
                    if t.sigma_is_exact
                    else f"estimated from {f_sig.shape[0]} fresh samples"
                )
        rows = [phi] + ([phi_test] if phi_test is not None else [])
        b2 = float(max(np.max(np.sum(r**2, axis=1)) for r in rows))
    if exact_rf:
        # rows whose mean squared error is L exactly on span(Phi^T, theta0), where GD moves: they replace the test
        # set here and in training (the linear GD loops measure this problem's test side)
        rows, targets = pop.population_rows(moments, np.hstack([phi.T, theta0]))
        phi_test, y_test = rows, targets[:, None]
    theta_star = None if t.theta_star is None else t.theta_star.to(dtype).double().numpy()
    residual = None
    if theta_star is None and t.finite_population:
        theta_star, residual = realizing_teacher(np.vstack([phi, phi_test]), np.vstack([y, y_test]))
    problem = LinearProblem(
        phi=phi,
        y=y,
        theta0=theta0,
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay,
        theta0_variance=model.theta0_variance,
        theta_star=theta_star,
        sigma_scale=t.sigma_scale,
        phi_test=phi_test,
        y_test=y_test,
        realizability_residual=residual,
        sigma_min=sigma_min,
        sigma_min_source=source,
        gaussian_identity=t.gaussian_identity,
        noise_free=t.noise_free,
        b2=b2,
    )
    return problem, ""


def realizing_teacher(phi_all: np.ndarray, y_all: np.ndarray, rtol: float = 1e-8) -> tuple[np.ndarray | None, float]:
    """On a finite population, is Y in the span of the features? Returns (min-norm theta*, relative residual);
    theta* is None when the residual exceeds ``rtol`` (the task is not realizable by this feature map)."""
    sol, *_ = np.linalg.lstsq(phi_all, y_all, rcond=None)
    residual = float(np.linalg.norm(phi_all @ sol - y_all) / max(np.linalg.norm(y_all), 1e-300))
    return (sol if residual <= rtol else None), residual
