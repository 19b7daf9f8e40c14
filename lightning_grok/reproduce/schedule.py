"""Longest first: the order in which ``reproduce``'s agents take sweeps and points, so that the cores stay busy to
the end (a long run started last would run alone while the other agents idle).

A point's cost is estimated from its config and grid values without building anything:

    steps   = min(trainer.max_steps, (1 + phases.stop_margin) * t2),   t2 ~ T2_ETA_LAMBDA[family] / (eta lambda)
    seconds = seeds * steps / ESTIMATED_STEPS_PER_S[family]

t2 grows like 1 / (eta lambda) (Sec. 4: the initialization's null-space part decays as (1 - eta lambda)^t), with
a logarithmic factor in the loss scales that the constant absorbs. The constants are t2 * eta * lambda at the
families' default configs (ridge: t2 = 23320 at eta = 1, lambda = 1e-4; two-layer Fig. 1 right: t2 = 74332 at
eta = 1e-4, lambda = 0.1). Only the order uses them: each run still stops at its own t2 + margin.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

# GD steps per second of one run on one CPU core, by family (docs/speed.md: ridge 10.4k-31k, two-layer 2.0k-4.7k
# at the Sec. 5.3 defaults; random features 11.2k at m = 10^4): for an order-of-magnitude estimate
ESTIMATED_STEPS_PER_S = {"ridge": 10_000, "random_features": 5_000, "two_layer": 2_000}
OTHER_STEPS_PER_S = 500  # autograd families (modular arithmetic with AdamW, transformers)
# t2 * eta * lambda at the defaults (module docstring); families without one run to max_steps in the estimate
T2_ETA_LAMBDA = {"ridge": 2.3, "random_features": 2.3, "two_layer": 0.75}


def _get(config: Mapping[str, Any], point: Mapping[str, Any], key: str, default: Any) -> Any:
    """``key`` (dotted) from the grid point if set there, else from the nested run config, else ``default``."""
    if key in point:
        return point[key]
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return default if node is None else node


def point_steps(config: Mapping[str, Any], point: Mapping[str, Any]) -> int:
    """Estimated GD steps of one point: t2 + its stop margin, at most ``trainer.max_steps``."""
    max_steps = int(_get(config, point, "trainer.max_steps", 50_000))
    family = str(_get(config, point, "model.family", "ridge"))
    eta, lam = float(_get(config, point, "optim.lr", 0.0)), float(_get(config, point, "optim.weight_decay", 0.0))
    margin = _get(config, point, "phases.stop_margin", None)
    if family not in T2_ETA_LAMBDA or eta * lam <= 0 or margin is None:
        return max_steps
    return int(min(max_steps, math.ceil((1 + float(margin)) * T2_ETA_LAMBDA[family] / (eta * lam))))


def point_seconds(config: Mapping[str, Any], point: Mapping[str, Any]) -> float:
    """Estimated wall seconds of one point on one core (``seeds`` members, or one run per seed)."""
    family = str(_get(config, point, "model.family", "ridge"))
    seeds = int(_get(config, point, "seeds", 1) or 1)
    return seeds * point_steps(config, point) / ESTIMATED_STEPS_PER_S.get(family, OTHER_STEPS_PER_S)


def run_config(raw_sweep: Mapping[str, Any]) -> dict:
    """The run config (nested dict) that a sweep file's ``fit`` command names; {} if unreadable."""
    command = [str(t) for t in raw_sweep.get("command", [])]
    try:
        return yaml.safe_load(Path(command[command.index("fit") + 1]).read_text()) or {}
    except (ValueError, IndexError, OSError, yaml.YAMLError):
        return {}


def priority(raw_sweep: Mapping[str, Any]):
    """A key for ``SweepDir.claim``: the estimated seconds of a grid point of this sweep (larger first)."""
    config = run_config(raw_sweep)
    return lambda point: point_seconds(config, point)


def longest_point(raw_sweep: Mapping[str, Any], points: list[Mapping[str, Any]]) -> float:
    """The estimated seconds of the sweep's longest point (0 for none)."""
    config = run_config(raw_sweep)
    return max((point_seconds(config, p) for p in points), default=0.0)
