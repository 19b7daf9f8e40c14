"""Reading runs back: the run directories of a panel (from a sweep directory, a SLURM array's or an earlier
``--out``), each seed's times, exact times and bound verdicts, the per-point statistics, the seeds' mean curves
and the exact dynamics to overlay. No Lightning: the exact overlay imports numpy and the theory lazily."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lightning_grok.reproduce.figures import Figure, Panel
from lightning_grok.results import EXACT_PREFIX, Member, ResultError, load_run, read_curves


@dataclass
class Run:
    """One run directory: its resolved config, the x value of its panel and its members (one per seed: the
    times the panel shows, exact times, bounds)."""

    path: Path
    config: dict
    x: Any
    members: list[dict]
    status: str

    def curves(self) -> dict | None:
        """The run's curves.json (``results.read_curves``); None when it has none or it is damaged (said once)."""
        try:
            return read_curves(self.path)
        except FileNotFoundError:
            return None
        except (OSError, ResultError) as exc:
            print(f"lightning-grok reproduce: warning: {exc}; its curves are left out", file=sys.stderr)
            return None


NOT_APPLICABLE = ("hypothesis not met",)  # bound verdicts whose value the paper does not claim


def _select(tree: Mapping, dotted: str | None) -> Any:
    if dotted is None:
        return None
    for part in dotted.split("."):
        if not isinstance(tree, Mapping) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _member(m: Member, seed: int, times: str) -> dict:
    """A seed's times (GD steps; by accuracy when the panel says so), exact times, bounds and n/lambda+_min."""
    use = m.accuracy if times == "accuracy" else m.times
    return {
        "seed": seed,
        "t1": use.t_overfit if use else None,
        "t2": use.t_generalize if use else None,
        "exact_t1": m.exact.t_overfit if m.exact else None,
        "exact_t2": m.exact.t_generalize if m.exact else None,
        "bounds": {
            k: {"value": b.value, "verdict": b.verdict, "side": b.side, "target": b.target, "source": b.source}
            for k, b in m.bounds.items()
        },
        "n_over_lambda_min": m.n_over_lambda_min,
        "steps_run": m.steps_run,
    }


def read_runs(folder: Path, panel: Panel) -> tuple[list[Run], list[Path]]:
    """Every run under ``folder`` (any depth: a sweep directory, a SLURM array's, or plain run directories),
    and the run directories left out: not ended (``status: interrupted``) or damaged (said on stderr, naming
    the file and what is wrong)."""
    runs, left_out = [], []
    for path in sorted(folder.rglob("phases.json")):
        try:
            result = load_run(path.parent)
        except (OSError, ResultError) as exc:
            print(f"lightning-grok reproduce: warning: left out a damaged run: {exc}", file=sys.stderr)
            left_out.append(path.parent)
            continue
        if result.status == "interrupted" or not result.config:
            left_out.append(path.parent)
            continue
        members = [_member(m, seed, panel.times) for m, seed in zip(result.members, result.seeds, strict=True)]
        runs.append(Run(path.parent, result.config, _select(result.config, panel.x_key), members, result.status))
    return runs, left_out


def find_panel_dir(from_dir: Path, figure: Figure, panel: Panel, dirname: str) -> Path | None:
    """Where ``--from DIR`` holds a panel's runs: DIR/<figure>/<dirname> (an earlier --out), DIR/<figure>/<sweep
    stem>*, DIR/<sweep stem> (``lightning-grok sweep SWEEP --sweep-dir DIR/<stem>``, the SLURM array), or DIR
    itself for a one-panel figure."""
    stem = Path(panel.sweep).stem
    candidates = [from_dir / figure.name / dirname, from_dir / figure.name / stem]
    candidates += sorted((from_dir / figure.name).glob(f"{stem}*")) if (from_dir / figure.name).is_dir() else []
    candidates += [from_dir / stem, from_dir / panel.key]
    if len({p.sweep for p in figure.panels}) == 1:
        candidates.append(from_dir)
    for c in candidates:
        if c.is_dir() and next(c.rglob("phases.json"), None) is not None:
            return c
    return None


def _stats(values: Sequence[float | None]) -> dict:
    have = [float(v) for v in values if v is not None]
    if not have:
        return {"mean": None, "std": None, "min": None, "max": None, "missing": len(values), "values": list(values)}
    a = have
    mean = sum(a) / len(a)
    std = math.sqrt(sum((v - mean) ** 2 for v in a) / len(a))
    return {
        "mean": mean,
        "std": std,
        "min": min(a),
        "max": max(a),
        "missing": len(values) - len(a),
        "values": list(values),
    }


def _sort_key(x: Any) -> tuple:
    return (0, float(x)) if isinstance(x, int | float) else (1, str(x))


def point_stats(runs: Sequence[Run]) -> list[dict]:
    """One row per x value: the seeds' t1, t2 and exact times (mean, std, min, max over seeds, GD steps), and
    each bound's mean value and verdict counts."""
    groups: dict[Any, list[dict]] = {}
    for run in runs:
        groups.setdefault(run.x, []).extend(run.members)
    rows = []
    for x in sorted(groups, key=_sort_key):
        members = groups[x]
        bounds: dict[str, dict] = {}
        for name in dict.fromkeys(k for m in members for k in m["bounds"]):
            entries = [m["bounds"].get(name) or {} for m in members]
            # a bound stands only where its hypotheses hold: the mean is over those seeds
            values = [
                e["value"]
                for e in entries
                if isinstance(e.get("value"), int | float) and e.get("verdict") not in NOT_APPLICABLE
            ]
            verdicts: dict[str, int] = {}
            for e in entries:
                verdicts[str(e.get("verdict"))] = verdicts.get(str(e.get("verdict")), 0) + 1
            bounds[name] = {
                "mean": sum(values) / len(values) if values else None,
                "seeds_averaged": len(values),
                "verdicts": verdicts,
            }
        rows.append(
            {
                "x": x,
                "seeds": [m["seed"] for m in members],
                "t1": _stats([m["t1"] for m in members]),
                "t2": _stats([m["t2"] for m in members]),
                "exact_t1": _stats([m["exact_t1"] for m in members]),
                "exact_t2": _stats([m["exact_t2"] for m in members]),
                "steps_run": max(m["steps_run"] for m in members),
                "bounds": bounds,
            }
        )
    return rows


def combine_curves(runs: Sequence[Run]) -> dict | None:
    """The seeds' mean and std of every logged curve over ``runs`` (runs of several seeds weighted by their seed count),
    on the step grid of the longest run (runs of one config share the logging schedule)."""
    parts = []
    for run in runs:
        c = run.curves()
        if c and c.get("step"):
            parts.append((c, len(run.members)))
    if not parts:
        return None
    steps = max((c["step"] for c, _ in parts), key=len)
    index = {s: i for i, s in enumerate(steps)}
    # only curves every run has: a mean over the runs that happen to have one would pass for all of them
    keys = [k for k in parts[0][0] if k != "step" and not k.endswith("_std") and all(k in c for c, _ in parts)]
    out: dict[str, list] = {"step": list(steps)}
    for key in keys:
        total = [0.0] * len(steps)
        second = [0.0] * len(steps)
        weight = [0.0] * len(steps)
        for c, w in parts:
            std = c.get(f"{key}_std")
            for j, (s, v) in enumerate(zip(c["step"], c.get(key, []), strict=False)):
                if v is None or (isinstance(v, float) and math.isnan(v)):
                    continue
                i = index.get(s)
                if i is None:
                    continue
                sd = std[j] if std is not None else 0.0
                total[i] += w * v
                second[i] += w * (sd * sd + v * v)
                weight[i] += w
        mean = [t / w if w else math.nan for t, w in zip(total, weight, strict=True)]
        out[key] = mean
        if sum(w for _, w in parts) > 1:
            out[f"{key}_std"] = [
                math.sqrt(max(s / w - m * m, 0.0)) if w else math.nan
                for s, w, m in zip(second, weight, mean, strict=True)
            ]
    return out


def exact_overlay(curve: Mapping[str, Sequence[float]]) -> dict | None:
    """The seeds' mean exact GD dynamics (``exact/train/loss``, ``exact/test/loss``: the runs wrote them into
    curves.json beside the measured curves) from a ``combine_curves`` result; None when the runs have none
    (two-layer networks, or runs from before curves.json kept them)."""
    import numpy as np

    exact = {
        key: np.asarray(curve[EXACT_PREFIX + key], dtype=np.float64)
        for key in ("train/loss", "test/loss")
        if EXACT_PREFIX + key in curve
    }
    return exact or None


def bound_verdicts(panel_runs: Mapping[str, Sequence[Run]]) -> dict[str, dict[str, int]]:
    """{bound: {verdict: count}} over every seed of every panel (one count per seed, not per run)."""
    seen: set[tuple[Path, int]] = set()
    counts: dict[str, dict[str, int]] = {}
    for runs in panel_runs.values():
        for run in runs:
            for i, m in enumerate(run.members):
                if (run.path, i) in seen:
                    continue
                seen.add((run.path, i))
                for name, b in m["bounds"].items():
                    slot = counts.setdefault(name, {})
                    slot[str(b.get("verdict"))] = slot.get(str(b.get("verdict")), 0) + 1
    return counts


def _run_seconds(folder: Path | None, key: str = "wall") -> float | None:
    """Sum over the finished runs recorded in a sweep directory's state.json of their wall seconds (``key``
    "wall": ended_at - started_at) or CPU seconds ("cpu": the agent's measure of its child; runs recorded before
    it was kept count 0). The points of one batched GD loop (their records' ``batch``, ``lightning_grok.batch``)
    share its one duration (each counts its share); their ``cpu_s`` is already a share."""
    if folder is None:
        return None
    try:
        state = json.loads((folder / "state.json").read_text())
    except (OSError, ValueError):
        return None
    done = [r for r in state.get("runs", {}).values() if r.get("state") == "finished" and r.get("ended_at")]
    if key == "cpu":
        return sum(float(r.get("cpu_s") or 0.0) for r in done)
    return sum(
        ((r.get("ended_at") or 0) - (r.get("started_at") or 0)) / max(1, len(r.get("batch") or ())) for r in done
    )


def _settings(folder: Path | None) -> dict | None:
    try:
        return yaml.safe_load((folder / "sweep.yaml").read_text())["parameters"]
    except (OSError, TypeError, KeyError, yaml.YAMLError):
        return None
