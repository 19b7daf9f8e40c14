"""Model families as plain nn.Modules (no training logic), built from the ``model:`` config block."""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn

from lightning_grok.models.linear import LinearModel
from lightning_grok.models.random_features import RandomFeatureModel
from lightning_grok.models.transformer import ModularTransformer
from lightning_grok.models.two_layer import TwoLayerModel

__all__ = ["LinearModel", "ModularTransformer", "RandomFeatureModel", "TwoLayerModel", "build_model"]


def build_model(cfg: DictConfig, input_dim: int, out_dim: int, generator: torch.Generator) -> nn.Module:
    m = cfg.model
    if m.family == "ridge":
        return LinearModel(input_dim, m.init_scale, out_dim, generator)
    if m.family == "random_features":
        return RandomFeatureModel(input_dim, m.width, m.init_scale, out_dim, m.features, m.fourier_variance, generator)
    if m.family == "two_layer":
        return TwoLayerModel(input_dim, m.width, m.init_scale, out_dim, generator)
    if m.family == "transformer":  # modular arithmetic only (config.rules._validate_transformer): p classes
        return ModularTransformer(cfg.data.modulus, m.n_layers, m.d_model, m.n_heads, generator)
    raise ValueError(f"unknown model.family {m.family!r}")
