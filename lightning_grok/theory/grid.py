"""The grid of GD steps on which ``theory.exact`` searches the exact phase times, and its length.

numpy is imported only by ``step_grid``: ``config`` and ``resources`` (memory estimates) use the constants and
``grid_length`` without loading numpy, so validating a config stays fast.
"""

from __future__ import annotations

import math

# The exact times are searched on a grid of steps, then refined by bisection inside the bracketing interval:
# every step up to DENSE_GRID_STEPS (t1 is often a few hundred steps), then geometric steps GRID_LOG_SPACING
# apart in log t (0.4%) up to the horizon, where every transient has decayed by e^-HORIZON_EFOLDS (below
# float64 resolution). The bisection assumes one crossing per bracket, which a 0.4% bracket makes safe for
# the monotone-after-t1 losses of Eq. (3).
DENSE_GRID_STEPS = 2048
GRID_LOG_SPACING = 0.004
HORIZON_EFOLDS = 60.0
MAX_HORIZON_STEPS = 10**13  # a run that never converges (eta lambda = 0): far beyond any feasible run
# "t -> infinity" for the limits L_n(theta_inf) and L(theta_inf): past any horizon, still exact in float64
LIMIT_STEP = 10**15


def step_grid(end: int):
    """Steps 0..min(end, DENSE_GRID_STEPS), then geometric to ``end`` with log spacing GRID_LOG_SPACING
    (an int64 numpy array of ``grid_length(end)`` or slightly fewer steps: rounding merges a few)."""
    import numpy as np

    dense = np.arange(0, min(end, DENSE_GRID_STEPS) + 1)
    if end <= DENSE_GRID_STEPS:
        return dense
    count = int(np.log(end / DENSE_GRID_STEPS) / GRID_LOG_SPACING) + 2
    geo = np.unique(np.round(np.geomspace(DENSE_GRID_STEPS, end, num=count)).astype(np.int64))
    return np.unique(np.concatenate([dense, geo]))


def grid_length(end: int) -> int:
    """An upper bound on ``len(step_grid(end))``, without numpy (for memory estimates)."""
    if end <= DENSE_GRID_STEPS:
        return end + 1
    return DENSE_GRID_STEPS + 1 + int(math.log(end / DENSE_GRID_STEPS) / GRID_LOG_SPACING) + 2
