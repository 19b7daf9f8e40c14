"""RunControl: what happens between two chunks of GD steps (signals, periodic checkpoints).

It acts in ``on_train_epoch_end``: one Lightning epoch is one call of K GD steps, so by then the chunk, the
step counter (``GrokkingModule.gd_step``) and every callback's measurements of the chunk are committed, and
a checkpoint taken there is at a chunk boundary whatever the order of the callbacks.

* A stop signal (SIGINT, SIGTERM) sets ``trainer.should_stop``; ``experiment.fit`` then saves the last
  checkpoint, writes ``phases.json`` with ``status: interrupted`` and exits 128 + signal.
* SIGUSR1 saves a checkpoint; in a SLURM batch job it then requeues the job (``scontrol requeue``), as
  Lightning's ``SLURMEnvironment(auto_requeue=True)`` does, and SLURM stops this run by SIGTERM.
* The run's share of the CPUs (``threads.CpuShare``) is re-read, so torch's threads follow the runs that
  start and end beside it.
* ``trainer.checkpoint_every`` > 0 saves a checkpoint each time the GD step passes a multiple of it, and
  ``trainer.checkpoint_minutes`` > 0 each time that much wall-clock time has passed since the last one:
  all that a kill -9 can cost.

Under DDP each rank holds its own flags; the decision to stop or save is any rank's (one all-reduce per
chunk), so every rank stops at the same boundary.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

from lightning_grok.signals import SignalFlags, slurm_job_id
from lightning_grok.threads import CpuShare


class RunControl(Callback):
    def __init__(
        self,
        flags: SignalFlags,
        checkpoint_path: Path,
        checkpoint_every: int = 0,
        checkpoint_minutes: float = 0.0,
        cpu_share: CpuShare | None = None,
    ):
        self.flags = flags
        self.cpu_share = cpu_share
        self.checkpoint_path = Path(checkpoint_path)
        self.checkpoint_every = int(checkpoint_every)
        self.checkpoint_seconds = 60.0 * float(checkpoint_minutes)
        self._last_save = time.monotonic()
        self.stopped_by: int | None = None  # the stop signal acted on
        self.checkpoints_on_signal = 0
        self._next_periodic = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning registers its own SIGTERM handler just before the fit loop; it ends fit with
        # SystemExit(None) (exit 0, nothing saved). Ours only sets a flag, acted on below.
        self.flags.install()
        if self.checkpoint_every:
            self._next_periodic = (pl_module.gd_step // self.checkpoint_every + 1) * self.checkpoint_every
        self._act(trainer, pl_module)  # a signal during set-up stops before the first chunk

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.cpu_share is not None:
            self.cpu_share.refresh()
        self._act(trainer, pl_module)

    def _act(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        decide = trainer.strategy.reduce_boolean_decision
        stop = decide(self.flags.stop is not None, all=False)
        snapshot = decide(self.flags.take_checkpoint_request(), all=False)
        periodic = bool(self.checkpoint_every) and pl_module.gd_step >= self._next_periodic
        if periodic:
            self._next_periodic = (pl_module.gd_step // self.checkpoint_every + 1) * self.checkpoint_every
        elapsed = self.checkpoint_seconds > 0 and time.monotonic() - self._last_save >= self.checkpoint_seconds
        periodic |= decide(elapsed, all=False)  # clocks differ between ranks: any rank's decides for all
        if (snapshot or periodic) and not stop:  # on stop, fit saves the last checkpoint itself
            trainer.save_checkpoint(self.checkpoint_path, weights_only=False)
            self._last_save = time.monotonic()
        if snapshot:
            self.checkpoints_on_signal += 1
            _say(f"SIGUSR1: checkpoint at GD step {pl_module.gd_step} in {self.checkpoint_path}")
            if SLURMEnvironment.detect() and trainer.is_global_zero:
                self._requeue()
        if stop:
            self.stopped_by = self.flags.stop or signal.SIGTERM  # another rank's signal: SLURM sends SIGTERM
            trainer.should_stop = True

    @staticmethod
    def _requeue() -> None:
        job = slurm_job_id()
        if job is None:
            return
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        if result.returncode == 0:
            _say(f"requeued SLURM job {job}; it resumes from the checkpoint")
        else:
            _say(f"warning: scontrol requeue {job} failed ({result.returncode}): {result.stderr.strip()}")


@rank_zero_only
def _say(message: str) -> None:
    print(f"lightning-grok: {message}", file=sys.stderr, flush=True)
