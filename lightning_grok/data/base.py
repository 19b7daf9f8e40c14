"""What the data of a run is: full-batch tensors plus population facts (Lightning-free; see data/datamodule.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from lightning_grok.data.regression import TeacherSpec


@dataclass
class RunData:
    """Full-batch data for one run (float64 on the CPU; the system casts and moves it).

    ``y_train`` carries label noise if any; ``y_test`` is always the noise-free teacher N*(x), so the
    population loss L(theta) = E[(N(x; theta) - N*(x))^2] is what the test set estimates.
    """

    x_train: torch.Tensor  # (n, d)
    y_train: torch.Tensor  # (n, k)
    x_test: torch.Tensor | None = None  # (N, d); None when the population loss is exact
    y_test: torch.Tensor | None = None  # (N, k)
    theta_star: torch.Tensor | None = None  # (m, k) teacher in the student's feature space, if realizable
    sigma_scale: float | None = None  # Sigma = sigma_scale * I exactly (Gaussian identity features)
    gaussian_identity: bool = False  # phi(x) = x ~ N(0, I/m): Eq. (8) applies
    noise_free: bool = True  # training labels equal N*(x)
    x_sigma: torch.Tensor | None = None  # fresh inputs for estimating lambda_min(Sigma)
    sigma_is_exact: bool = False  # x_sigma is the whole (finite) input population
    train_labels: torch.Tensor | None = None  # (n,) class indices, classification only
    test_labels: torch.Tensor | None = None  # (N,) class indices, classification only
    cross_entropy: bool = False  # index targets trained with cross-entropy instead of squared loss
    finite_population: bool = False  # x_train + x_test is the whole input population (a finite table)
    # the teacher's parameters (regression): the two-layer network's closed-form population loss needs them
    teacher: TeacherSpec | None = None

    @property
    def n_train(self) -> int:
        return self.x_train.shape[0]

    @property
    def out_dim(self) -> int:
        return self.y_train.shape[1]

    @property
    def is_classification(self) -> bool:
        return self.train_labels is not None
