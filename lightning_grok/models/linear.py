"""Ridge regression: N(x; theta) = <theta, phi(x)> with the identity feature map phi(x) = x (Sec. 5.1)."""

from __future__ import annotations

import math

import torch
from torch import nn


class LinearModel(nn.Module):
    """theta in R^{m x k}, theta^(0) ~ N(0, nu^2 I_m) per output column; k = 1 for scalar regression.

    ``theta_init`` keeps theta^(0) so the theory (which needs ||theta^(0)|| and its null-space part)
    can be evaluated after a resume, when ``theta`` has moved on.
    """

    linear_in_parameters = True

    def __init__(self, width: int, init_scale: float, out_dim: int = 1, generator: torch.Generator | None = None):
        super().__init__()
        theta0 = torch.randn(width, out_dim, generator=generator, dtype=torch.float64) * math.sqrt(init_scale)
        self.theta = nn.Parameter(theta0.clone())
        self.register_buffer("theta_init", theta0.clone())
        self.theta0_variance = init_scale

    @property
    def trainable(self) -> nn.Parameter:
        return self.theta

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x) @ self.theta
