"""Synthetic teacher-student regression (Sec. 2, 5.1, 5.2; App. B Figs. 6, 7).

Inputs: ridge regression uses phi(x) = x ~ N(0, I/m) with d = m, so Sigma = I/m and the population
loss is exact, L(theta) = ||theta - theta*||^2 / m. The network families draw x ~ N(0, I_d).
Teachers: zero (N* = 0), linear (<theta*, x>, ||theta*|| = teacher_norm), relu (relu(<w*, x>),
||w*|| = teacher_norm, not realizable by random features), fourier (teacher_norm * sqrt(2) cos(<w*, x> + b*),
one fresh random Fourier feature), student (<theta*, phi(x)> with the student's own frozen features:
realizable). Label noise (Fig. 6) is N(0, std^2), added to training labels only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from omegaconf import DictConfig

from lightning_grok.config import ConfigError
from lightning_grok.data.base import Tensors
from lightning_grok.seeding import generator

FeatureMap = Callable[[torch.Tensor], torch.Tensor]


def input_dim(cfg: DictConfig) -> int:
    """d: the model width for ridge (identity features), else data.input_dim (default 100)."""
    if cfg.model.family == "ridge":
        return cfg.model.width
    return cfg.data.input_dim if cfg.data.input_dim is not None else 100


def _unit(dim: int, norm: float, gen: torch.Generator) -> torch.Tensor:
    v = torch.randn(dim, 1, generator=gen, dtype=torch.float64)
    return v * (norm / v.norm())


def regression_tensors(cfg: DictConfig, feature_map: FeatureMap | None = None) -> Tensors:
    """The seeded training set, test set and teacher of a regression run (``feature_map``: the student's
    fixed features, needed by the realizable ``student`` teacher)."""
    data, seed = cfg.data, cfg.seed
    gaussian_identity = cfg.model.family == "ridge"
    d = input_dim(cfg)
    scale = 1.0 / math.sqrt(d) if gaussian_identity else 1.0

    def draw(count: int, stream: str) -> torch.Tensor:
        return torch.randn(count, d, generator=generator(seed, stream), dtype=torch.float64) * scale

    x_train = draw(data.n_train, "data")
    teacher_gen = generator(seed, "teacher")
    theta_star = None
    if data.teacher == "zero":
        teacher = lambda x: torch.zeros(x.shape[0], 1, dtype=x.dtype)  # noqa: E731
        theta_star = torch.zeros(cfg.model.width if cfg.model.family != "two_layer" else d, 1, dtype=torch.float64)
    elif data.teacher == "linear":
        w = _unit(d, data.teacher_norm, teacher_gen)
        teacher = lambda x: x @ w  # noqa: E731
        theta_star = w if gaussian_identity else None
    elif data.teacher == "relu":
        w = _unit(d, data.teacher_norm, teacher_gen)
        teacher = lambda x: torch.relu(x @ w)  # noqa: E731
    elif data.teacher == "fourier":
        w = torch.randn(d, 1, generator=teacher_gen, dtype=torch.float64) * math.sqrt(cfg.model.fourier_variance)
        b = torch.rand(1, generator=teacher_gen, dtype=torch.float64) * 2 * math.pi
        teacher = lambda x: data.teacher_norm * math.sqrt(2.0) * torch.cos(x @ w + b)  # noqa: E731
    elif data.teacher == "student":
        if feature_map is None:
            raise ConfigError("data.teacher='student' needs a model with a fixed feature map (ridge, random_features)")
        theta_star = _unit(cfg.model.width, data.teacher_norm, teacher_gen)
        teacher = lambda x: feature_map(x) @ theta_star  # noqa: E731
    else:  # validated earlier; kept for direct use of the class
        raise ConfigError(f"invalid value for 'data.teacher': {data.teacher!r}")

    y_clean = teacher(x_train)
    y_train = y_clean
    if data.label_noise_std > 0:
        noise = torch.randn(y_clean.shape, generator=generator(seed, "noise"), dtype=torch.float64)
        y_train = y_clean + data.label_noise_std * noise

    exact = data.population == "exact"
    if exact and not (gaussian_identity and theta_star is not None):
        raise ConfigError(
            f"invalid value for 'data.population': 'exact' with model.family={cfg.model.family!r} and "
            f"data.teacher={data.teacher!r} (allowed: 'sampled'; the exact population loss needs ridge "
            "regression's Gaussian identity features and a zero or linear teacher)"
        )
    x_test = y_test = None
    if not exact:
        x_test = draw(data.n_test, "test")
        y_test = teacher(x_test)
    return Tensors(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        theta_star=theta_star if cfg.model.family != "two_layer" else None,
        sigma_scale=1.0 / d if gaussian_identity else None,
        gaussian_identity=gaussian_identity,
        noise_free=data.label_noise_std == 0,
        x_sigma=None if gaussian_identity else draw(data.n_sigma_samples, "sigma"),
    )
