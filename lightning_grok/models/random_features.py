"""Random-feature networks (Sec. 5.2, App. B Fig. 7): a frozen hidden layer, only the output layer trained.

ReLU:    N(x) = sum_j a_j relu(<w_j, x>),  w_j ~ N(0, nu^2/(d m) I_d) frozen,  a^(0) ~ N(0, 1).
Fourier: N(x) = <a, sqrt(2/m) cos(W x + b)>,  W ~ N(0, sigma^2 I), b ~ U[0, 2 pi] frozen,  a^(0) ~ N(0, nu^2).

Both are linear in the trained parameters a, so the ridge theory applies in feature space.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class RandomFeatureModel(nn.Module):
    linear_in_parameters = True

    def __init__(
        self,
        input_dim: int,
        width: int,
        init_scale: float,
        out_dim: int = 1,
        features: str = "relu",
        fourier_variance: float = 1.0,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if features not in ("relu", "fourier"):
            raise ValueError(f"model.features must be 'relu' or 'fourier', got {features!r}")
        self.kind = features
        f64 = torch.float64
        if features == "relu":
            w = torch.randn(width, input_dim, generator=generator, dtype=f64) * math.sqrt(
                init_scale / (input_dim * width)
            )
            bias = torch.zeros(width, dtype=f64)
            a_var = 1.0
        else:
            w = torch.randn(width, input_dim, generator=generator, dtype=f64) * math.sqrt(fourier_variance)
            bias = torch.rand(width, generator=generator, dtype=f64) * 2 * math.pi
            a_var = init_scale
        self.register_buffer("weight", w)
        self.register_buffer("bias", bias)
        a0 = torch.randn(width, out_dim, generator=generator, dtype=f64) * math.sqrt(a_var)
        self.a = nn.Parameter(a0.clone())
        self.register_buffer("theta_init", a0.clone())
        self.theta0_variance = a_var

    @property
    def trainable(self) -> nn.Parameter:
        return self.a

    def features(self, x: torch.Tensor) -> torch.Tensor:
        pre = x @ self.weight.T
        if self.kind == "relu":
            return torch.relu(pre)
        return math.sqrt(2.0 / self.weight.shape[0]) * torch.cos(pre + self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x) @ self.a
