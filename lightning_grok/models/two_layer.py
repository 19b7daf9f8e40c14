"""Fully trained two-layer ReLU network (Sec. 5.3): N(x) = sum_j a_j relu(<w_j, x>), both layers trained.

Initialization: a^(0) ~ N(0, 1/m), w_j^(0) ~ N(0, nu^2/d I_d). Weight decay acts on both layers.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class TwoLayerModel(nn.Module):
    linear_in_parameters = False

    def __init__(
        self, input_dim: int, width: int, init_scale: float, out_dim: int = 1, generator: torch.Generator | None = None
    ):
        super().__init__()
        f64 = torch.float64
        self.weight = nn.Parameter(
            torch.randn(width, input_dim, generator=generator, dtype=f64) * math.sqrt(init_scale / input_dim)
        )
        self.a = nn.Parameter(torch.randn(width, out_dim, generator=generator, dtype=f64) / math.sqrt(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.weight.T) @ self.a
