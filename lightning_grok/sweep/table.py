"""The sweep's table: one row per point (its latest attempt), from state.json and each run's phases.json."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import yaml

from lightning_grok.results import TIMES, ResultError, Times, format_value, load_run
from lightning_grok.sweep.state import SweepDir, kept_result, point_key
from lightning_grok.tables import text_table

VERDICTS = {"holds": "ok", "violated": "VIOLATED", "hypothesis not met": "hyp", "undetermined": "?"}
LEGEND = (
    "bound verdicts: ok = holds, VIOLATED = measured time on the wrong side, "
    "hyp = a required hypothesis fails (reported, not judged), ? = run ended before it could be judged"
)


def short_bound(name: str) -> str:
    """eq8_t_overfit_upper -> eq8/t1: column headers that stay narrow but distinct."""
    m = re.match(r"(.+?)_t_(overfit|generalize)", name)
    return f"{m[1]}/{'t1' if m[2] == 'overfit' else 't2'}" if m else name


def _swept_names(root: Path, records: list[dict]) -> list[str]:
    """Parameters that vary in the sweep file (constants would repeat in every row)."""
    try:
        params = yaml.safe_load((root / "sweep.yaml").read_text())["parameters"]
        return [k for k, v in params.items() if not (isinstance(v, dict) and set(v) == {"value"})]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        names: dict[str, None] = {}
        for rec in records:
            names.update(dict.fromkeys(rec["params"]))
        return list(names)


def rows(sweep_dir: str | os.PathLike, all_attempts: bool = False) -> tuple[list[str], list[dict]]:
    """(parameter columns, rows). Results come from each run's phases.json when it is readable."""
    sd = SweepDir(sweep_dir)
    state = sd.read()
    records = list(state["runs"].values())
    if not all_attempts:
        latest: dict[str, dict] = {}
        for rec in records:
            latest[point_key(rec["params"])] = rec  # dict keeps first-claim order, value is the last attempt
        records = list(latest.values())
    # attempts at a point share its run directory: its phases.json belongs to the latest one only
    owner = {rec["output_dir"]: rec["name"] for rec in state["runs"].values()}
    out = []
    for rec in records:
        run, damaged = None, None
        if owner[rec["output_dir"]] == rec["name"]:
            try:
                run = load_run(sd.run_dir(rec))
            except FileNotFoundError:
                pass
            except (OSError, ResultError) as exc:  # listed as damaged; the rest of the table stands
                damaged = str(exc)
        run = run or kept_result(rec.get("result"))
        label = rec["state"]
        if rec["state"] == "failed" and rec.get("exit_code") is not None:
            label += f"({rec['exit_code']})"
        if damaged:
            label += " damaged"
        elif run is not None and run.status != "completed":
            label += f" {run.status}"
        single = run.single if run is not None else None
        out.append(
            {
                "run": rec["name"],
                "state": rec["state"],
                "label": label,
                "params": rec["params"],
                **{k: run.times[k] if run is not None else None for k in TIMES},
                "exact": _times(single.exact) if single else None,
                "accuracy": _times(single.accuracy) if single else None,
                "bounds": {k: b.verdict for k, b in single.bounds.items()} if single else {},
                "members": [_times(m.judged_times("accuracy")) for m in run.members] if run is not None else [],
                "reason": damaged or rec.get("reason"),
                "damaged": damaged,
                "output_dir": str(sd.run_dir(rec)),
            }
        )
    if not all_attempts:
        claimed = {point_key(rec["params"]) for rec in records}
        out += [_pending_row(params) for params in _grid_points(Path(sweep_dir)) if point_key(params) not in claimed]
    return _swept_names(Path(sweep_dir), records), out


def _grid_points(root: Path) -> list[dict]:
    """Every point of a grid sweep (from the sweep directory's copy of its file, by W&B's engine); [] for
    random and bayes sweeps, whose points are drawn as agents ask."""
    from lightning_grok.sweep.spec import SweepSpecError, load_spec

    try:
        spec = load_spec(root / "sweep.yaml", check_config=False)
    except (SweepSpecError, OSError, ValueError):
        return []
    return spec.points() if spec.method == "grid" else []


def _pending_row(params: dict) -> dict:
    return {
        "run": "-",
        "state": "pending",
        "label": "pending",
        "params": params,
        "t_overfit": None,
        "t_generalize": None,
        "grokking_time": None,
        "exact": None,
        "accuracy": None,
        "bounds": {},
        "members": [],
        "reason": None,
        "damaged": None,
        "output_dir": None,
    }


def _times(t: Times | None) -> dict | None:
    return {k: t[k] for k in TIMES} if t is not None else None


def seed_aggregates(params: list[str], table: list[dict]) -> tuple[list[str], list[dict]]:
    """Rows grouped by every swept parameter but ``seed``: seeds finished, and mean and std of t1 and t2 over
    them (every seed of every finished run at the point, the members of runs of several seeds included). GD steps."""
    keys = [p for p in params if p != "seed"]
    groups: dict[str, dict] = {}
    for row in table:
        point = {k: row["params"].get(k) for k in keys}
        g = groups.setdefault(point_key(point), {"params": point, "t1": [], "t2": [], "pending": 0})
        g["pending"] += row["state"] != "finished"
        for m in row.get("members") or []:
            g["t1"].append(m["t_overfit"])
            g["t2"].append(m["t_generalize"])
    out = []
    for g in groups.values():
        stats = {}
        for key in ("t1", "t2"):
            vals = [v for v in g[key] if v is not None]
            a = np.asarray(vals, dtype=np.float64)
            stats[key] = (float(a.mean()), float(a.std())) if len(a) else (None, None)
            stats[f"{key}_missing"] = len(g[key]) - len(vals)
        out.append(g | {"stats": stats, "seeds": len(g["t1"])})
    return keys, out


def format_aggregates(keys: list[str], groups: list[dict]) -> str:
    """The per-point block of the table: seeds, t1 and t2 as mean +- std over seeds."""
    header = [*keys, "seeds", "t1 mean", "t1 std", "t2 mean", "t2 std", "not reached", "not finished"]
    lines = []
    for g in groups:
        st = g["stats"]
        cells = [format_value(g["params"][k]) for k in keys] + [str(g["seeds"])]
        cells += [format_value(v) for v in (*st["t1"], *st["t2"])]
        cells += [str(st["t2_missing"]), str(g["pending"])]
        lines.append(cells)
    return "\n".join(text_table([header, *lines]))


def format_table(params: list[str], table: list[dict], unit: str = "point") -> str:
    """Aligned text: run, state, parameters, t1, t2, t2-t1 (exact and accuracy ones when known), bound verdicts."""
    bounds: dict[str, None] = {}
    for row in table:
        bounds.update(dict.fromkeys(row["bounds"]))
    has_exact = any(row["exact"] for row in table)
    has_acc = any(row.get("accuracy") for row in table)  # classification: the accuracy transitions too
    header = ["run", "state", *params, "t1", "t2", "t2-t1"]
    if has_exact:
        header += ["exact t1", "exact t2"]
    if has_acc:
        header += ["acc t1", "acc t2"]
    header += [short_bound(b) for b in bounds]
    lines = []
    for row in table:
        ex = row["exact"] or {}
        cells = [row["run"], row["label"], *(format_value(row["params"].get(p)) for p in params)]
        cells += [format_value(row["t_overfit"]), format_value(row["t_generalize"]), format_value(row["grokking_time"])]
        if has_exact:
            cells += [format_value(ex.get("t_overfit")), format_value(ex.get("t_generalize"))]
        if has_acc:
            acc = row.get("accuracy") or {}
            cells += [format_value(acc.get("t_overfit")), format_value(acc.get("t_generalize"))]
        cells += [VERDICTS.get(row["bounds"].get(b), format_value(row["bounds"].get(b))) for b in bounds]
        lines.append(cells)
    text = text_table([header, *lines])
    counts: dict[str, int] = {}
    for row in table:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    text.append(f"{len(table)} {unit}(s): " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    if bounds:
        text.append(LEGEND)
    text += [f"damaged: {row['run']}: {row['damaged']}" for row in table if row.get("damaged")]
    return "\n".join(text)


def render(sweep_dir: str | os.PathLike, all_attempts: bool = False, as_json: bool = False) -> str:
    """The point table; below it, when a point has several seeds (a ``seed`` parameter, or runs of
    ``seeds`` = K), the same points aggregated over seeds."""
    params, table = rows(sweep_dir, all_attempts)
    if as_json:
        return json.dumps(table, indent=2, default=str)
    text = format_table(params, table, "attempt" if all_attempts else "point")
    keys, groups = seed_aggregates(params, table)
    if not all_attempts and any(g["seeds"] > 1 for g in groups):
        text += "\n\nper point, over seeds (GD steps):\n" + format_aggregates(keys, groups)
    return text
