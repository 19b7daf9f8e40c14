"""The sweep's table: one row per point (its latest attempt), from state.json and each run's phases.json."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import yaml

from lightning_grok.sweep.state import SweepDir, point_key, read_phases, result_of

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
        phases = read_phases(sd.run_dir(rec) / "phases.json") if owner[rec["output_dir"]] == rec["name"] else None
        result = result_of(phases) if phases else (rec.get("result") or {})
        label = rec["state"]
        if rec["state"] == "failed" and rec.get("exit_code") is not None:
            label += f"({rec['exit_code']})"
        status = result.get("status")
        if status and status != "completed":
            label += f" {status}"
        out.append(
            {
                "run": rec["name"],
                "state": rec["state"],
                "label": label,
                "params": rec["params"],
                "t_overfit": result.get("t_overfit"),
                "t_generalize": result.get("t_generalize"),
                "grokking_time": result.get("grokking_time"),
                "exact": result.get("exact"),
                "accuracy": result.get("accuracy"),
                "bounds": {k: b.get("verdict") for k, b in (result.get("bounds") or {}).items()},
                "reason": rec.get("reason"),
                "output_dir": str(sd.run_dir(rec)),
            }
        )
    return _swept_names(Path(sweep_dir), records), out


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


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
        cells = [row["run"], row["label"], *(_fmt(row["params"].get(p)) for p in params)]
        cells += [_fmt(row["t_overfit"]), _fmt(row["t_generalize"]), _fmt(row["grokking_time"])]
        if has_exact:
            cells += [_fmt(ex.get("t_overfit")), _fmt(ex.get("t_generalize"))]
        if has_acc:
            acc = row.get("accuracy") or {}
            cells += [_fmt(acc.get("t_overfit")), _fmt(acc.get("t_generalize"))]
        cells += [VERDICTS.get(row["bounds"].get(b), _fmt(row["bounds"].get(b))) for b in bounds]
        lines.append(cells)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines, strict=True)]
    text = ["  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip() for cells in [header, *lines]]
    counts: dict[str, int] = {}
    for row in table:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    text.append(f"{len(table)} {unit}(s): " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    if bounds:
        text.append(LEGEND)
    return "\n".join(text)


def render(sweep_dir: str | os.PathLike, all_attempts: bool = False, as_json: bool = False) -> str:
    params, table = rows(sweep_dir, all_attempts)
    if as_json:
        return json.dumps(table, indent=2, default=str)
    return format_table(params, table, "attempt" if all_attempts else "point")
