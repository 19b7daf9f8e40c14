"""The Lightning face of a run's data: one batch, the whole training set, per epoch.

One Lightning epoch is one ``training_step``, which runs K GD steps on the full batch; the tensors
themselves are made without Lightning (``data.regression.regression_tensors``, ``data.modular.modular_tensors``)
so that ``lightning-grok theory`` never imports it.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from lightning_grok.data.base import RunData


class _FullBatch(Dataset):
    """One item: the whole training set. One Lightning epoch = one call of K GD steps on it."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x, self.y


class FullBatchDataModule(L.LightningDataModule):
    """Serves ``tensors`` (made seeded, so a rebuild gives the same bits) as one full batch per epoch."""

    def __init__(self, tensors: RunData):
        super().__init__()
        self.tensors = tensors

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_FullBatch(self.tensors.x_train, self.tensors.y_train), batch_size=None)
