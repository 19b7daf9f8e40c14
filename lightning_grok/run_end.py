"""When a run ends: the one rule, checked between two chunks of GD steps. Torch- and Lightning-free.

A run ends at the first chunk boundary where one of these holds, in this order of precedence:

* a stop signal arrived (SIGINT, SIGTERM): status ``interrupted``, the checkpoint is kept and the same command
  resumes;
* it diverged (``GrokkingModule.diverged_at``: a non-finite or blown-up loss): status ``diverged``;
* every member has t1 and t2 and ran ``phases.stop_margin`` * t2 steps past t2 (the phase callback's
  ``transitions_done``): status ``completed``;
* it reached ``trainer.max_steps`` GD steps: status ``completed``.

``callbacks.control.RunControl`` applies it to a Lightning run (the only writer of ``trainer.should_stop`` for a
``GrokkingModule``), ``batch`` to each batched sweep point. Every time here is a count of GD steps.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class EndReason(str, enum.Enum):
    """Why a run ended."""

    SIGNAL = "signal"
    DIVERGED = "diverged"
    TRANSITIONS_DONE = "transitions_done"
    MAX_STEPS = "max_steps"

    @property
    def status(self) -> str:
        """phases.json's ``status`` of a run that ended for this reason."""
        return {EndReason.SIGNAL: "interrupted", EndReason.DIVERGED: "diverged"}.get(self, "completed")


@dataclass(frozen=True)
class RunEnd:
    """A run's end: the reason, the GD step it ended at and, for ``SIGNAL``, the signal's number."""

    reason: EndReason
    gd_step: int
    signal: int | None = None

    @property
    def status(self) -> str:
        return self.reason.status


def run_end(
    gd_step: int,
    max_steps: int,
    diverged_at: int | None = None,
    transitions_done: bool = False,
    stop_signal: int | None = None,
) -> RunEnd | None:
    """The end of a run at the chunk boundary ``gd_step`` (module docstring), or None if it goes on."""
    if stop_signal is not None:
        return RunEnd(EndReason.SIGNAL, gd_step, int(stop_signal))
    if diverged_at is not None:
        return RunEnd(EndReason.DIVERGED, gd_step)
    if transitions_done:
        return RunEnd(EndReason.TRANSITIONS_DONE, gd_step)
    if gd_step >= max_steps:
        return RunEnd(EndReason.MAX_STEPS, gd_step)
    return None
