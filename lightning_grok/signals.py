"""Signals that only set flags: the training loop acts on them at the next chunk boundary.

A Python signal handler runs in the main thread between two bytecodes, wherever the kernel delivered the
signal (a BLAS or tqdm thread included), so a handler that saved a checkpoint could capture a half-committed
chunk. These handlers therefore only record what arrived; ``callbacks.control.RunControl`` acts on it once
the chunk, the step counter and the phase measurements agree.

* SIGINT, SIGTERM: stop at the boundary, checkpoint, write ``phases.json`` with ``status: interrupted`` and
  exit 128 + signal (130, 143). The same signal a second time means "now": the default action runs.
* SIGUSR1 (SLURM's warning before a time limit or preemption): checkpoint at the boundary; inside a SLURM
  batch job also ``scontrol requeue`` the job, which then stops the run by SIGTERM.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
CHECKPOINT_SIGNAL = signal.SIGUSR1


class SignalFlags:
    """Flag-only handlers for SIGINT, SIGTERM and SIGUSR1, installed while the object is entered.

    ``stop``: the first stop signal received (None if none); ``checkpoint_requested``: a SIGUSR1 arrived
    since the last :meth:`take_checkpoint_request`.
    """

    def __init__(self) -> None:
        self.stop: int | None = None
        self.checkpoint_requested = False
        self._previous: dict[int, object] = {}

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == CHECKPOINT_SIGNAL:
            self.checkpoint_requested = True
            return
        if self.stop == signum:
            # asked twice: no more waiting for the chunk to end
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.stop = self.stop or signum

    def install(self) -> None:
        """(Re)install the handlers; only the main thread may set them (elsewhere the caller owns signals)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (*STOP_SIGNALS, CHECKPOINT_SIGNAL):
            previous = signal.signal(sig, self.handle)
            self._previous.setdefault(sig, previous)

    def restore(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def take_checkpoint_request(self) -> bool:
        requested, self.checkpoint_requested = self.checkpoint_requested, False
        return requested

    @property
    def exit_status(self) -> int | None:
        """128 + the stop signal's number (the shell's convention), or None when no stop signal arrived."""
        return None if self.stop is None else 128 + int(self.stop)

    def __enter__(self) -> SignalFlags:
        self.install()
        return self

    def __exit__(self, *exc) -> None:
        self.restore()


def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` takes for this job: ARRAYJOB_TASK for an array task, else the job id."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID") or None
