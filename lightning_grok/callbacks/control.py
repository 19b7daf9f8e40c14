"""RunControl: what happens between two chunks of GD steps (the end of the run, signals, periodic checkpoints).

It acts in ``on_train_epoch_end``: one Lightning epoch is one call of K GD steps, so by then the chunk, the
step counter (``GrokkingModule.gd_step``) and every callback's measurements of the chunk are committed, and
a checkpoint taken there is at a chunk boundary whatever the order of the callbacks.

* It is the one place that ends a ``GrokkingModule`` run (``trainer.should_stop``), by the rule of ``run_end``:
  a stop signal (SIGINT, SIGTERM), divergence (``GrokkingModule.diverged_at``), the transitions done (the phase
  callback's ``transitions_done``) or ``trainer.max_steps``; ``end`` holds why (``run_end.RunEnd``). After a
  signal ``experiment.fit`` saves the last checkpoint, writes ``phases.json`` with ``status: interrupted`` and
  exits 128 + signal.
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
from typing import Protocol

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

from lightning_grok.run_end import EndReason, RunEnd, run_end
from lightning_grok.signals import SignalFlags, slurm_job_id
from lightning_grok.threads import CpuShare


class TransitionsDone(Protocol):
    def transitions_done(self) -> bool: ...


class RunControl(Callback):
    def __init__(
        self,
        flags: SignalFlags | None = None,
        checkpoint_path: Path | None = None,
        checkpoint_every: int = 0,
        checkpoint_minutes: float = 0.0,
        cpu_share: CpuShare | None = None,
        phases: TransitionsDone | None = None,
    ):
        """``flags``: the process's signal flags (None: no signals handled, and no checkpoint path needed);
        ``phases``: what says the transitions are done (the run's ``PhaseTransitionCallback``; None: never)."""
        if checkpoint_path is None and (flags is not None or checkpoint_every or checkpoint_minutes):
            raise ValueError("RunControl: signals and periodic checkpoints need a checkpoint_path")
        self.flags = flags
        self.cpu_share = cpu_share
        self.phases = phases
        self.end: RunEnd | None = None  # why and where the run ended (None while it runs)
        self.checkpoint_path = None if checkpoint_path is None else Path(checkpoint_path)
        self.checkpoint_every = int(checkpoint_every)
        self.checkpoint_seconds = 60.0 * float(checkpoint_minutes)
        self._last_save = time.monotonic()
        self.checkpoints_on_signal = 0
        self._next_periodic = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning registers its own SIGTERM handler just before the fit loop; it ends fit with
        # SystemExit(None) (exit 0, nothing saved). Ours only sets a flag, acted on below.
        if self.flags is not None:
            self.flags.install()
        if self.checkpoint_every:
            self._next_periodic = (pl_module.gd_step // self.checkpoint_every + 1) * self.checkpoint_every
        # a signal during set-up, or a run resumed at max_steps, stops before the first chunk
        self._act(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.cpu_share is not None:
            self.cpu_share.refresh()
        self._act(trainer, pl_module)

    @property
    def stopped_by(self) -> int | None:
        """The stop signal that ended the run (None: it was not stopped by a signal)."""
        return self.end.signal if self.end is not None and self.end.reason is EndReason.SIGNAL else None

    def stop_by_signal(self, signum: int, gd_step: int) -> None:
        """Record that ``signum`` ended the run at ``gd_step`` outside the chunks (Lightning's own handler)."""
        self.end = RunEnd(EndReason.SIGNAL, gd_step, int(signum))

    def _act(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        decide = trainer.strategy.reduce_boolean_decision
        flags = self.flags
        stop = decide(flags is not None and flags.stop is not None, all=False)
        snapshot = decide(flags is not None and flags.take_checkpoint_request(), all=False)
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
        # ``stop`` needs flags (every rank's RunControl is built alike); a stop decided by another rank's signal is
        # SIGTERM (SLURM's). The other conditions are equal on every rank (the loss is all-reduced), so every rank
        # ends at the same boundary
        signum = (flags.stop or signal.SIGTERM) if stop else None
        self.end = run_end(
            pl_module.gd_step,
            pl_module.max_steps,
            pl_module.diverged_at,
            self.phases is not None and self.phases.transitions_done(),
            signum,
        )
        if self.end is not None:
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
