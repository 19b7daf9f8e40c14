"""The streaming detector finds known crossings in synthetic curves, fed in chunks of any size."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_grok.detection import PhaseDetector


def _feed(det: PhaseDetector, train, test, chunk: int, train_acc=None, test_acc=None):
    for s in range(0, len(train), chunk):
        sl = slice(s, s + chunk)
        det.update(
            s,
            train[sl],
            test[sl],
            None if train_acc is None else train_acc[sl],
            None if test_acc is None else test_acc[sl],
        )


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_known_crossings(chunk):
    t = np.arange(5000)
    train = np.exp(-t / 100.0)  # >= 0.01 until t = 460 (ln 100 * 100 = 460.5)
    test = 2 * np.exp(-t / 1000.0)  # <= 0.01 from t = 5299 (never in 5000 steps)
    det = PhaseDetector(eps=0.01, c=0.01)
    _feed(det, train, test, chunk)
    assert det.t_overfit == 460
    assert det.t_generalize is None and det.generalize.status == "not reached"
    assert det.grokking_time is None
    test2 = 0.5 * np.exp(-t / 1000.0)  # <= 0.01 from t = ceil(1000 ln 50) = 3913
    det2 = PhaseDetector(eps=0.01, c=0.01)
    _feed(det2, train, test2, chunk)
    assert det2.t_generalize == 3913
    assert det2.grokking_time == 3913 - 460
    assert det2.phase() == "generalized"


def test_last_crossing_of_a_non_monotone_curve():
    train = np.array([1.0, 0.005, 0.002, 0.02, 0.003, 0.001])  # dips below eps, rises back, falls again
    det = PhaseDetector(eps=0.01, c=0.01)
    _feed(det, train, np.ones(6), chunk=2)
    assert det.t_overfit == 3


def test_overfit_not_reached_while_still_above():
    det = PhaseDetector(eps=0.01, c=0.01)
    _feed(det, np.linspace(1, 0.5, 100), np.ones(100), chunk=10)
    assert det.t_overfit is None and det.overfit.status == "not reached" and det.phase() == "fitting"


def test_accuracy_times():
    train_acc = np.minimum(1.0, np.arange(100) / 50)  # < 0.99 until step 49
    test_acc = np.minimum(1.0, np.arange(100) / 90)  # >= 0.99 from step 90 (89.1 -> 90)
    det = PhaseDetector(eps=0.01, c=0.01, tau=0.99)
    _feed(det, np.ones(100), np.ones(100), 16, train_acc, test_acc)
    assert det.overfit_acc.time == 49
    assert det.generalize_acc.time == 90


def test_state_round_trip_resumes_identically():
    t = np.arange(2000)
    train, test = np.exp(-t / 50.0), np.exp(-t / 300.0)
    full = PhaseDetector(0.01, 0.01)
    _feed(full, train, test, 100)
    first = PhaseDetector(0.01, 0.01)
    _feed(first, train[:700], test[:700], 100)
    resumed = PhaseDetector(0.01, 0.01)
    resumed.load_state_dict(first.state_dict())
    for s in range(700, 2000, 100):
        resumed.update(s, train[s : s + 100], test[s : s + 100])
    assert (resumed.t_overfit, resumed.t_generalize) == (full.t_overfit, full.t_generalize)
