"""Synthetic teacher-student regression (Sec. 2, 5.1, 5.2; App. B Figs. 6, 7).

Ridge features (``model.ridge_features``):

* ``identity`` (default): phi(x) = x ~ N(0, I/m) with d = m, so Sigma = I/m and the population loss is exact,
  L(theta) = ||theta - theta*||^2 / m (Sec. 5.1).
* ``gaussian_projection``: z ~ ``data.input_dist`` in R^d (d = ``data.input_dim``, any d), phi(z) = W z / sqrt(d)
  with a fixed W (m x d), W_ij ~ N(0, 1/m), so E||phi||^2 = 1 for Gaussian z as with ``identity``. With
  E[z z^T] = s2 I: Sigma = s2 W W^T / d (rank min(d, m)). The training "inputs" of the ridge model are the
  features phi(z) themselves. ``data.population: exact`` uses the d points z = sqrt(s2 d) e_i as the test set:
  their features are the rows of sqrt(s2) W^T and mean_i <phi(z_i), theta - theta*>^2 = (theta - theta*)^T
  Sigma (theta - theta*) exactly.

Inputs of the network families (``data.input_dist``): ``gaussian`` x ~ N(0, I_d), ``gaussian_scaled``
x ~ N(0, I_d / d), ``sphere`` x uniform on the unit sphere S^{d-1} (radius 1; E[x x^T] = I_d / d).

Teachers: zero (N* = 0), linear (<theta*, x>, ||theta*|| = teacher_norm), relu (relu(<w*, x>),
||w*|| = teacher_norm, not realizable by random features), fourier (teacher_norm * sqrt(2) cos(<w*, x> + b*),
one fresh random Fourier feature, w* ~ N(0, sigma^2 I), b* ~ U[0, 2 pi]), student (<theta*, phi(x)> with the
student's own frozen features: realizable, ||theta*|| = teacher_norm). Label noise (Fig. 6) is N(0, std^2),
added to training labels only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from omegaconf import DictConfig

from lightning_grok.config import ConfigError
from lightning_grok.data.base import RunData
from lightning_grok.seeding import generator
from lightning_grok.theory.population import input_variance

FeatureMap = Callable[[torch.Tensor], torch.Tensor]
_PROJECTION_STREAM = 1000  # SeedSequence key of the ridge projection W, apart from seeding.STREAMS


def input_dim(cfg: DictConfig) -> int:
    """The model's input dimension: m for ridge (its inputs are the features), else data.input_dim (default 100)."""
    if cfg.model.family == "ridge":
        return cfg.model.width
    return cfg.data.input_dim if cfg.data.input_dim is not None else 100


def latent_dim(cfg: DictConfig) -> int:
    """d of the raw inputs: data.input_dim, or m for ridge when it is null, 100 for the networks."""
    if cfg.data.input_dim is not None:
        return cfg.data.input_dim
    return cfg.model.width if cfg.model.family == "ridge" else 100


def projected(cfg: DictConfig) -> bool:
    """Ridge with the gaussian_projection feature map (inputs drawn in R^d, features in R^m)."""
    return cfg.model.family == "ridge" and cfg.model.ridge_features == "gaussian_projection"


def ridge_projection(cfg: DictConfig) -> torch.Tensor:
    """The fixed W (m x d), W_ij ~ N(0, 1/m), of ``gaussian_projection``: its own seeded stream, so the data,
    teacher and initialization streams are those of every other run of the seed."""
    state = np.random.SeedSequence([cfg.seed, _PROJECTION_STREAM]).generate_state(1, dtype=np.uint64)[0]
    gen = torch.Generator().manual_seed(int(state) >> 1)
    m, d = cfg.model.width, latent_dim(cfg)
    return torch.randn(m, d, generator=gen, dtype=torch.float64) / math.sqrt(m)


def draw_inputs(dist: str, count: int, d: int, gen: torch.Generator) -> torch.Tensor:
    """``count`` inputs in R^d: N(0, I_d) (gaussian), N(0, I_d/d) (gaussian_scaled), uniform on S^{d-1} (sphere)."""
    g = torch.randn(count, d, generator=gen, dtype=torch.float64)
    if dist == "gaussian":
        return g
    if dist == "gaussian_scaled":
        return g / math.sqrt(d)
    if dist == "sphere":
        return g / g.norm(dim=1, keepdim=True)
    raise ConfigError(f"invalid value for 'data.input_dist': {dist!r}")


def _unit(dim: int, norm: float, gen: torch.Generator) -> torch.Tensor:
    v = torch.randn(dim, 1, generator=gen, dtype=torch.float64)
    return v * (norm / v.norm())


@dataclass
class TeacherSpec:
    """The teacher's parameters (for the closed-form population quantities, ``theory.population``)."""

    kind: str  # zero | linear | relu | fourier | student
    weight: torch.Tensor | None = None  # (d, 1) w* (linear, relu, fourier); theta* (m, 1) for student
    bias: float | None = None  # b* (fourier)
    scale: float = 1.0  # output multiplier (fourier: teacher_norm * sqrt(2))


def draw_teacher(cfg: DictConfig) -> TeacherSpec:
    """The seeded teacher of a run (stream "teacher"); linear and relu in the raw input space R^d
    (ridge: the feature space R^m), student in the student's feature space R^m."""
    data = cfg.data
    gen = generator(cfg.seed, "teacher")
    d = input_dim(cfg)
    if data.teacher == "zero":
        return TeacherSpec("zero")
    if data.teacher in ("linear", "relu"):
        return TeacherSpec(data.teacher, _unit(d, data.teacher_norm, gen))
    if data.teacher == "fourier":
        w = torch.randn(d, 1, generator=gen, dtype=torch.float64) * math.sqrt(cfg.model.fourier_variance)
        b = float(torch.rand(1, generator=gen, dtype=torch.float64)[0]) * 2 * math.pi
        return TeacherSpec("fourier", w, b, data.teacher_norm * math.sqrt(2.0))
    if data.teacher == "student":
        return TeacherSpec("student", _unit(cfg.model.width, data.teacher_norm, gen))
    raise ConfigError(f"invalid value for 'data.teacher': {data.teacher!r}")


def regression_tensors(cfg: DictConfig, feature_map: FeatureMap | None = None) -> RunData:
    """The seeded training set, test set and teacher of a regression run (``feature_map``: the student's
    fixed features, needed by the realizable ``student`` teacher)."""
    data, seed = cfg.data, cfg.seed
    family = cfg.model.family
    project = projected(cfg)
    gaussian_identity = family == "ridge" and not project
    d = input_dim(cfg)
    if project:
        w_proj = ridge_projection(cfg)
        d_raw = latent_dim(cfg)

        def draw(count: int, stream: str) -> torch.Tensor:
            z = draw_inputs(data.input_dist, count, d_raw, generator(seed, stream))
            return z @ w_proj.T / math.sqrt(d_raw)
    elif gaussian_identity:

        def draw(count: int, stream: str) -> torch.Tensor:
            return torch.randn(count, d, generator=generator(seed, stream), dtype=torch.float64) * (1.0 / math.sqrt(d))
    else:

        def draw(count: int, stream: str) -> torch.Tensor:
            return draw_inputs(data.input_dist, count, d, generator(seed, stream))

    x_train = draw(data.n_train, "data")
    spec = draw_teacher(cfg)
    theta_star = None
    if spec.kind == "zero":
        teacher = lambda x: torch.zeros(x.shape[0], 1, dtype=x.dtype)  # noqa: E731
        theta_star = torch.zeros(cfg.model.width if family != "two_layer" else d, 1, dtype=torch.float64)
    elif spec.kind == "linear":
        w = spec.weight
        teacher = lambda x: x @ w  # noqa: E731
        theta_star = w if family == "ridge" else None
    elif spec.kind == "relu":
        w = spec.weight
        teacher = lambda x: torch.relu(x @ w)  # noqa: E731
    elif spec.kind == "fourier":
        w, b, scale = spec.weight, spec.bias, spec.scale
        teacher = lambda x: scale * torch.cos(x @ w + b)  # noqa: E731
    else:  # student
        if feature_map is None:
            raise ConfigError("data.teacher='student' needs a model with a fixed feature map (ridge, random_features)")
        theta_star = spec.weight
        teacher = lambda x: feature_map(x) @ theta_star  # noqa: E731

    y_clean = teacher(x_train)
    y_train = y_clean
    if data.label_noise_std > 0:
        noise = torch.randn(y_clean.shape, generator=generator(seed, "noise"), dtype=torch.float64)
        y_train = y_clean + data.label_noise_std * noise

    exact = data.population == "exact"  # the combinations allowed: config.rules._validate_population
    x_test = y_test = None
    if exact and project:
        # the d points z = sqrt(s2 d) e_i: their features sqrt(s2) W^T give the exact population loss
        x_test = math.sqrt(input_variance(data.input_dist, latent_dim(cfg))) * w_proj.T.contiguous()
        y_test = teacher(x_test)
    elif exact and not gaussian_identity:
        # random features: training and theory use the closed-form rows (theory/population.population_rows); the
        # two-layer network's fused GD loop the arc-cosine closed form (theory/two_layer_population.py). This test
        # set serves the optimizers without a closed form (sgd, adamw), which measure it instead
        x_test = draw(data.n_test, "test")
        y_test = teacher(x_test)
    elif not exact:
        x_test = draw(data.n_test, "test")
        y_test = teacher(x_test)
    x_sigma = None
    if not (gaussian_identity or project or exact):
        x_sigma = draw(data.n_sigma_samples, "sigma")
    return RunData(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        theta_star=theta_star if family != "two_layer" else None,
        sigma_scale=1.0 / d if gaussian_identity else None,
        gaussian_identity=gaussian_identity,
        noise_free=data.label_noise_std == 0,
        x_sigma=x_sigma,
        teacher=spec,
    )
