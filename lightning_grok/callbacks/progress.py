"""A progress bar counted in GD steps (not epochs), showing both losses and the current phase.

One tqdm bar for the whole run, made here rather than by Lightning's ``TQDMProgressBar`` hooks (which
draw a "Training 0/?" bar per epoch, and an epoch here is one call of K steps). Its rate counts the
steps of this process only, so a resumed run shows real steps/s; when a run stops before
``trainer.max_steps`` on purpose, the bar says why instead of freezing part-way.
"""

from __future__ import annotations

import sys

import lightning as L
from lightning.pytorch.callbacks import ProgressBar
from tqdm.auto import tqdm


class StepProgressBar(ProgressBar):
    """position = GD step; postfix = train/test loss and the phase (fitting | memorized | generalized)."""

    def __init__(self, phases):
        super().__init__()
        self.phases = phases  # PhaseTransitionCallback, read-only here
        self.bar: tqdm | None = None
        self._enabled = True

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not (self._enabled and trainer.is_global_zero):
            return
        self.bar = tqdm(
            total=pl_module.max_steps,
            initial=pl_module.gd_step,
            desc="GD steps",
            unit="step",
            dynamic_ncols=True,
            smoothing=0.1,
            file=sys.stderr,
        )

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if self.bar is None:
            return
        final = self.phases.final
        self.bar.set_postfix(
            {
                "train": f"{final.get('train/loss', float('nan')):.3g}",
                "test": f"{final.get('test/loss', float('nan')):.3g}",
                "phase": self.phases.phase(),
            },
            refresh=False,
        )
        self.bar.update(pl_module.gd_step - self.bar.n)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.bar is None:
            return
        if pl_module.gd_step < pl_module.max_steps:
            if pl_module.diverged_at is not None:
                why = f"diverged at step {pl_module.diverged_at}"
            elif self.phases.transitions_done():
                why = "t1 and t2 found, stop margin run"
            else:
                why = "stopped"
            self.bar.set_description(f"GD steps ({why})")
            self.bar.total = pl_module.gd_step  # the run ended here by design: a full bar, not a frozen one
        self.bar.refresh()
        self.bar.close()
        self.bar = None
