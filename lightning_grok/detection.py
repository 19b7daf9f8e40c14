"""Streaming detectors for the phase times of Sec. 2, fed one block of per-step values at a time.

t1(eps) = max{t : L_n(theta_t) >= eps}  (last step still above: "overfit" after it)
t2(c)   = min{t : L(theta_t) <= c}      (first step below: "generalized")
The accuracy versions (classification) use the same two detectors on the predicates
train_acc < tau (last) and test_acc >= tau (first).

Test-side values may be NaN on steps a GD loop did not evaluate (sparse evaluation, gd_loops/): a NaN
compares false, so it never counts as reached. The GD loops evaluate every step of a block in which a
threshold is crossed, so the first reached step is still exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class LastTrue:
    """Tracks the last step at which a predicate held; 'reached' once a later step has it false."""

    last: int | None = None
    last_value_true: bool | None = None  # predicate at the most recent step seen
    steps_seen: int = 0

    def update(self, start: int, mask: np.ndarray) -> None:
        if len(mask) == 0:
            return
        idx = np.nonzero(mask)[0]
        if len(idx):
            self.last = start + int(idx[-1])
        self.last_value_true = bool(mask[-1])
        self.steps_seen = start + len(mask)

    @property
    def time(self) -> int | None:
        """The measured time, or None while the predicate still holds at the latest step (or never held)."""
        if self.last_value_true is None or self.last_value_true:
            return None
        return self.last

    @property
    def status(self) -> str:
        if self.last_value_true is None:
            return "no data"
        if self.last_value_true:
            return "not reached"
        return "reached" if self.last is not None else "never above"

    def state_dict(self) -> dict:
        return {"last": self.last, "last_value_true": self.last_value_true, "steps_seen": self.steps_seen}

    def load_state_dict(self, state: dict) -> None:
        self.last, self.last_value_true, self.steps_seen = state["last"], state["last_value_true"], state["steps_seen"]


@dataclass
class FirstTrue:
    """Tracks the first step at which a predicate held."""

    first: int | None = None
    steps_seen: int = 0

    def update(self, start: int, mask: np.ndarray) -> None:
        if self.first is None and len(mask):
            idx = np.nonzero(mask)[0]
            if len(idx):
                self.first = start + int(idx[0])
        self.steps_seen = start + len(mask)

    @property
    def time(self) -> int | None:
        return self.first

    @property
    def status(self) -> str:
        return "reached" if self.first is not None else "not reached"

    def state_dict(self) -> dict:
        return {"first": self.first, "steps_seen": self.steps_seen}

    def load_state_dict(self, state: dict) -> None:
        self.first, self.steps_seen = state["first"], state["steps_seen"]


class PhaseDetector:
    """t1 and t2 by loss (thresholds eps, c) and, when accuracies are fed, by accuracy (threshold tau)."""

    def __init__(self, eps: float, c: float, tau: float = 0.99):
        self.eps, self.c, self.tau = eps, c, tau
        self.overfit, self.generalize = LastTrue(), FirstTrue()
        self.overfit_acc, self.generalize_acc = LastTrue(), FirstTrue()
        self.has_accuracy = False

    def update(
        self,
        start: int,
        train_loss: np.ndarray,
        test_loss: np.ndarray,
        train_acc: np.ndarray | None = None,
        test_acc: np.ndarray | None = None,
    ) -> None:
        self.overfit.update(start, np.asarray(train_loss) >= self.eps)
        self.generalize.update(start, np.asarray(test_loss) <= self.c)
        if train_acc is not None and test_acc is not None:
            self.has_accuracy = True
            self.overfit_acc.update(start, np.asarray(train_acc) < self.tau)
            self.generalize_acc.update(start, np.asarray(test_acc) >= self.tau)

    @property
    def t_overfit(self) -> int | None:
        return self.overfit.time

    @property
    def t_generalize(self) -> int | None:
        return self.generalize.time

    @property
    def grokking_time(self) -> int | None:
        t1, t2 = self.t_overfit, self.t_generalize
        return None if t1 is None or t2 is None else t2 - t1

    def phase(self) -> str:
        """fitting (train loss >= eps now), memorized (fit, not yet generalized) or generalized."""
        if self.t_generalize is not None:
            return "generalized"
        if self.overfit.last_value_true is False:
            return "memorized"
        return "fitting"

    def state_dict(self) -> dict:
        return {
            name: getattr(self, name).state_dict()
            for name in ("overfit", "generalize", "overfit_acc", "generalize_acc")
        } | {"has_accuracy": self.has_accuracy}

    def load_state_dict(self, state: dict) -> None:
        for name in ("overfit", "generalize", "overfit_acc", "generalize_acc"):
            getattr(self, name).load_state_dict(state[name])
        self.has_accuracy = state["has_accuracy"]
