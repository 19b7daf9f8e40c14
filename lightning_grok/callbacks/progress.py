"""A progress bar counted in GD steps (not epochs), showing both losses and the current phase."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


class StepProgressBar(TQDMProgressBar):
    """One bar for the whole run: position = GD step, postfix = train/test loss and fitting|memorized|generalized."""

    def __init__(self, phases, refresh_rate: int = 1):
        super().__init__(refresh_rate=refresh_rate)
        self.phases = phases  # PhaseTransitionCallback, read-only here

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.train_progress_bar = self.init_train_tqdm()
        self.train_progress_bar.reset(total=pl_module.max_steps)
        self.train_progress_bar.initial = 0
        self.train_progress_bar.n = pl_module.gd_step
        self.train_progress_bar.set_description("GD steps")
        self.train_progress_bar.unit = "step"

    def on_train_epoch_start(self, trainer: L.Trainer, *_) -> None:
        pass  # one bar for the run: an epoch is just one call of K steps

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        bar = self.train_progress_bar
        if bar is None or bar.disable:
            return
        bar.n = pl_module.gd_step
        final = self.phases.final
        bar.set_postfix(
            {
                "train": f"{final.get('train/loss', float('nan')):.3g}",
                "test": f"{final.get('test/loss', float('nan')):.3g}",
                "phase": self.phases.phase(),
            },
            refresh=True,
        )

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        return {}
