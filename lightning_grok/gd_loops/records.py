"""What every GD loop takes in and hands back: ``EvalSpec`` (what a loop needs to measure a step) and ``Chunk``
(the per-step records of one call), plus ``Reduce``, the all-reduce a loop applies to sums over training rows
under DDP (``_identity`` in a single process)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lightning_grok.theory.two_layer_population import TwoLayerPopulation

Reduce = Callable[[torch.Tensor], torch.Tensor]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclass
class Chunk:
    """Per-step records of one GD-loop call, shape (K, B): row i is GD step ``start + i`` (theta before update i),
    column b is ensemble member b (B = 1 for a single run)."""

    start: int
    train_loss: torch.Tensor
    test_loss: torch.Tensor  # NaN where not evaluated (sparse evaluation)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    # (K, B) bool: entries whose test-side records (test_loss, test_* extras) were evaluated; None: all of them
    evaluated: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.train_loss.shape[0]

    @property
    def members(self) -> int:
        return self.train_loss.shape[1]


@dataclass
class EvalSpec:
    """What a GD loop needs to measure each step besides the training loss, on the run's device:

    * the population side: a test set (``x_test``, ``y_test``), or an exact population: Sigma = sigma_scale I with
      the target ``theta_star`` (linear models, closed-form loss sigma_scale ||theta - theta*||^2), or the
      two-layer teachers and input law (``two_layer``, closed-form arc-cosine kernel loss);
    * the labels: ``train_labels`` and ``test_labels`` (classification: training and test accuracy), and
      ``cross_entropy`` (the loss the autograd loop trains and tests with);
    * the thresholds: ``c`` (t2 on the test loss) and ``tau`` (t2 on the test accuracy), which sparse evaluation
      watches for crossings, and ``surrogate_eps`` (regression: the error eps of the surrogate accuracy).

    Formerly ``PopulationSide`` (an alias is kept in ``lightning_grok.gd_loops``): it holds more than the
    population side."""

    x_test: torch.Tensor | None = None  # inputs (network loops) or features (linear GD loop)
    y_test: torch.Tensor | None = None
    theta_star: torch.Tensor | None = None
    sigma_scale: float | None = None
    test_labels: torch.Tensor | None = None
    train_labels: torch.Tensor | None = None
    surrogate_eps: float | None = None  # regression: fraction of test points with error <= eps (Fig. 5)
    cross_entropy: bool = False
    c: float | None = None  # t2 threshold on the test loss; sparse evaluation needs it to find crossings
    tau: float | None = None  # t2 threshold on the test accuracy (classification)
    # two-layer network, data.population=exact: the members' teachers and input law; the test loss is then the
    # closed-form population loss (theory/two_layer_population.py) instead of a test set's mean
    two_layer: TwoLayerPopulation | None = None

    @property
    def exact(self) -> bool:
        return self.sigma_scale is not None and self.theta_star is not None
