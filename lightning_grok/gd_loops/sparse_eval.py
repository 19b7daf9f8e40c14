"""Sparse evaluation of the test side (the package docstring explains it): which steps a GD loop evaluates
(``eval_points``, with s from ``auto_eval_every`` / ``_every``), where a t2 threshold is crossed between two
evaluated steps (``_crossed``, ``_blocks_to_fill``), and the (K, B) test-side records of a call whose iterates
are all stored (``_sparse_records``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from lightning_grok.gd_loops.records import EvalSpec

# Evaluating the test side may take about this share of the steps' multiply-adds; in time it takes less, since it
# runs as one large matrix product while a step is several small ones.
EVAL_SHARE = 0.25
MAX_EVAL_EVERY = 256


def auto_eval_every(step_cost: float, eval_cost: float, share: float = EVAL_SHARE, cap: int = MAX_EVAL_EVERY) -> int:
    """s, the steps between test-side evaluations, from the multiply-adds of one step and of one evaluation:
    1 when evaluating costs at most ``share`` of a step, else the smallest s with eval_cost / s <= share * step_cost
    (at most ``cap``). Two-layer defaults (n = d = 50, m = 1000, N = 500): ratio 4.95, s = 20."""
    if eval_cost <= share * step_cost:
        return 1
    return int(min(cap, math.ceil(eval_cost / (share * step_cost))))


def eval_points(start: int, steps: int, every: int, wanted: Sequence[int] | np.ndarray | None = None) -> torch.Tensor:
    """Indices i in [0, steps) of the iterates theta_{start+i} whose test side a call evaluates (sorted, int64):
    the absolute steps that are multiples of ``every``, the call's first and last steps, and ``wanted`` steps."""
    if every <= 1 or steps <= 2:
        return torch.arange(steps)
    parts = [np.arange((-start) % every, steps, every), np.array([0, steps - 1])]
    if wanted is not None:
        w = np.asarray(wanted, dtype=np.int64)
        parts.append(w[(w >= start) & (w < start + steps)] - start)
    return torch.from_numpy(np.unique(np.concatenate(parts)).astype(np.int64))


def _crossed(prev: dict[str, torch.Tensor], now: dict[str, torch.Tensor], ev: EvalSpec) -> torch.Tensor:
    """Where a t2 threshold is crossed into its reached side between two evaluated iterates: test loss > c then
    <= c (Sec. 2's t2), or test accuracy < tau then >= tau (the accuracy t2). NaN (a diverged run) never crosses."""
    loss0, loss1 = prev["loss"], now["loss"]
    out = (loss0 > ev.c) & (loss1 <= ev.c)
    if ev.tau is not None and "test_acc" in now:
        out |= (prev["test_acc"] < ev.tau) & (now["test_acc"] >= ev.tau)
    return out


def _blocks_to_fill(points: torch.Tensor, values: dict[str, torch.Tensor], ev: EvalSpec) -> torch.Tensor | None:
    """The un-evaluated indices strictly between consecutive ``points`` (E,) whose values (E, B) cross a threshold
    for any member; None when no block does."""
    if len(points) < 2:
        return None
    prev = {key: v[:-1] for key, v in values.items()}
    now = {key: v[1:] for key, v in values.items()}
    blocks = torch.nonzero(_crossed(prev, now, ev).any(dim=1)).flatten().tolist()  # one host sync per call
    pts = points.tolist()
    fill = [torch.arange(pts[j] + 1, pts[j + 1]) for j in blocks if pts[j + 1] > pts[j] + 1]
    return torch.cat(fill) if fill else None


def _sparse_records(
    evaluate: Callable[[torch.Tensor], dict[str, torch.Tensor]], steps: int, points: torch.Tensor, ev: EvalSpec
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None]:
    """Test-side records of a call of ``steps`` stored iterates, evaluated at ``points`` and inside every block
    where a threshold is crossed. ``evaluate(idx)`` gives {"loss": (E, B), extra name: (E, B)} for the iterates
    ``idx``. Returns (test loss (K, B), extras (K, B) each, evaluated mask (K, B) or None when every row was)."""
    values = evaluate(points)
    if len(points) == steps:
        return values.pop("loss"), values, None
    fill = _blocks_to_fill(points, values, ev)
    if fill is not None:
        more = evaluate(fill)
        points = torch.cat([points, fill])
        values = {key: torch.cat([v, more[key]]) for key, v in values.items()}
    loss = values["loss"]
    rows = points.to(loss.device)

    def scatter(v: torch.Tensor) -> torch.Tensor:
        return torch.full((steps, v.shape[1]), math.nan, dtype=v.dtype, device=v.device).index_copy_(0, rows, v)

    evaluated = torch.zeros(steps, loss.shape[1], dtype=torch.bool, device=loss.device).index_fill_(0, rows, True)
    return scatter(values.pop("loss")), {key: scatter(v) for key, v in values.items()}, evaluated


def _every(eval_every: int, ev: EvalSpec, step_cost: float, eval_cost: float) -> int:
    """s of a GD loop: 1 for the closed-form population loss, for no threshold to watch, or when asked;
    ``eval_every`` if set; else ``auto_eval_every``."""
    if ev.exact or ev.c is None or eval_cost == 0:
        return 1
    return int(eval_every) if eval_every > 0 else auto_eval_every(step_cost, eval_cost)
