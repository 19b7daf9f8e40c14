"""One result schema for every run, its reader, and a sweep's results as a pandas DataFrame.

Every run is an ensemble of B >= 1 members (``seeds`` = B; member i is the run of seed ``seed + i``), and its
``phases.json`` has one shape whatever B:

    status, diverged_at, steps_run            how the run ended ("completed", "diverged", "interrupted")
    t_overfit, t_generalize, grokking_time    t1, t2, t2 - t1 in GD steps: the member's for B = 1, the mean
                                              over members for B > 1 (None if any member lacks it)
    final                                     losses at the last recorded step (mean over members)
    members                                   B per-member results: times, statuses, exact times, bounds,
                                              envelopes, quantities, population, accuracy, missing
    aggregate                                 mean, std, min, max and values of each time over members
    config                                    the resolved config
    schema                                    SCHEMA_VERSION

For B = 1 the member's own fields (``exact``, ``bounds``, ``envelopes``, ``quantities``, ``accuracy``, ...)
are repeated at the top level, so analysis scripts written for single runs keep working. ``load_run`` also
reads the files of earlier versions (a single run without ``members``).

Lightning-free: the sweep agent, the figures and ``sweep-table`` read results without importing it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 2
TIMES = ("t_overfit", "t_generalize", "grokking_time")
# a member's fields that describe the run, not the member: never repeated inside members
RUN_FIELDS = ("status", "diverged_at", "config", "members", "aggregate", "schema")


def _stats(vals: list) -> dict:
    if not vals or any(v is None for v in vals):
        return {"mean": None, "std": None, "min": None, "max": None}
    a = np.asarray(vals, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()), "max": float(a.max())}


def aggregate(members: list[dict]) -> dict:
    """Mean, std, min and max over members of each phase time (and of the exact ones); None if any is missing."""
    out = {}
    for key in TIMES:
        vals = [m[key] for m in members]
        exact = [(m.get("exact") or {}).get(key) for m in members]
        out[key] = _stats(vals) | {"values": vals}
        out[f"exact_{key}"] = _stats(exact)
        out[f"{key}_matches_exact"] = (
            all(v == e for v, e in zip(vals, exact, strict=True)) if None not in exact else None
        )
    return out


def run_result(status: str, diverged_at: int | None, members: list[dict], config: dict | None) -> dict:
    """The phases.json of a run whose members' results are ``members`` (B >= 1)."""
    agg = aggregate(members)
    times = {k: members[0][k] if len(members) == 1 else agg[k]["mean"] for k in TIMES}
    res = {"status": status, "diverged_at": diverged_at, "steps_run": members[0]["steps_run"]} | times
    res["final"] = {k: float(np.mean([m["final"][k] for m in members])) for k in members[0].get("final", {})}
    if len(members) == 1:  # the single run's fields where single-run scripts read them
        res |= {k: v for k, v in members[0].items() if k not in res}
    return res | {"members": members, "aggregate": agg, "config": config, "schema": SCHEMA_VERSION}


def normalize(raw: dict) -> dict:
    """A phases.json of any version in the current shape (a single run of version 1 had no ``members``)."""
    if "members" in raw:
        return raw
    member = {k: v for k, v in raw.items() if k not in RUN_FIELDS}
    return run_result(raw.get("status", ""), raw.get("diverged_at"), [member], raw.get("config")) | {
        "schema": raw.get("schema", 1)
    }


@dataclass(frozen=True)
class RunResult:
    """A finished (or interrupted) run read back from its directory: ``phases.json`` in the current shape."""

    path: Path
    data: dict

    @property
    def status(self) -> str:
        return self.data["status"]

    @property
    def steps_run(self) -> int:
        return self.data["steps_run"]

    @property
    def members(self) -> list[dict]:
        return self.data["members"]

    @property
    def config(self) -> dict:
        return self.data.get("config") or {}

    @property
    def seeds(self) -> list[int]:
        """Member i's seed: ``seed + i``."""
        base = int(self.config.get("seed", 0))
        return [base + i for i in range(len(self.members))]

    @property
    def t_overfit(self) -> float | None:
        return self.data["t_overfit"]

    @property
    def t_generalize(self) -> float | None:
        return self.data["t_generalize"]

    @property
    def grokking_time(self) -> float | None:
        return self.data["grokking_time"]

    def member_rows(self) -> list[dict[str, Any]]:
        """One flat row per member: seed, times (GD steps), exact times, accuracy times, verdicts, final losses."""
        rows = []
        for seed, m in zip(self.seeds, self.members, strict=True):
            row: dict[str, Any] = {"run": self.path.name, "seed": seed, "status": self.status}
            row |= {k: m.get(k) for k in ("steps_run", *TIMES)}
            row |= {f"exact_{k}": (m.get("exact") or {}).get(k) for k in TIMES}
            if m.get("accuracy"):
                row |= {f"acc_{k}": m["accuracy"].get(k) for k in TIMES}
            row |= {f"bound/{name}": b.get("verdict") for name, b in (m.get("bounds") or {}).items()}
            row |= {f"final/{k}": v for k, v in (m.get("final") or {}).items()}
            rows.append(row)
        return rows


def load_run(run_dir: str | os.PathLike) -> RunResult:
    """The result of the run in ``run_dir`` (its phases.json, any version). Raises FileNotFoundError when the
    run wrote none and ValueError when the file is not JSON."""
    path = Path(run_dir)
    return RunResult(path, normalize(json.loads((path / "phases.json").read_text())))


def _flatten(prefix: str, value: Any, out: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def runs_frame(root: str | os.PathLike, config_keys: list[str] | None = None):
    """Every run under ``root`` (any depth: a sweep directory, a figure's, a SLURM array's) as a pandas DataFrame,
    one row per member: the columns of ``RunResult.member_rows`` plus the config keys that differ between runs
    (or ``config_keys``, dotted, e.g. ``optim.weight_decay``). Runs whose phases.json is missing or unreadable are
    left out."""
    import pandas as pd

    results = []
    for path in sorted(Path(root).rglob("phases.json")):
        try:
            results.append(load_run(path.parent))
        except (OSError, ValueError):
            continue
    configs = []
    for r in results:
        flat: dict = {}
        _flatten("", r.config, flat)
        configs.append(flat)
    if config_keys is None:
        keys = sorted({k for c in configs for k in c})
        varies = [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]
        config_keys = [k for k in varies if k not in ("seed", "output_dir")]
    rows = [
        {k: cfg.get(k) for k in config_keys} | row
        for r, cfg in zip(results, configs, strict=True)
        for row in r.member_rows()
    ]
    return pd.DataFrame(rows)


# ---- the W&B summary and the printed table ----------------------------------------------------------------------
def format_value(v: Any, digits: int = 4) -> str:
    """A cell of a results table: "-" for missing, ``digits`` significant digits for floats."""
    if v is None:
        return "-"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def flat_summary(res: dict) -> dict:
    """W&B summary keys (times in GD steps): grok/t_overfit, grok/t_generalize, grok/grokking_time, grok/acc/...
    (classification), grok/exact/..., grok/bound/..., final/...; for an ensemble the members' means with
    grok/*_std. Per-member values go to the ``theory/members`` table (wandb_theory), not to summary keys."""
    times = TIMES  # t1, t2, t2 - t1
    members = res.get("members") or [res]
    single = members[0] if len(members) == 1 else {}
    s = {f"grok/{k}": res.get(k) for k in (*times, "steps_run", "status")}
    for k, v in (res.get("final") or {}).items():
        s[f"final/{k}"] = v
    accuracy = res.get("accuracy") or single.get("accuracy")
    if accuracy:
        s |= {f"grok/acc/{k}": accuracy.get(k) for k in times}
    elif len(members) > 1 and all(m.get("accuracy") for m in members):  # the members' mean, None if one lacks it
        for k in times:
            vals = [m["accuracy"].get(k) for m in members]
            s[f"grok/acc/{k}"] = None if None in vals else float(np.mean(vals))
    exact = res.get("exact") or single.get("exact")
    if exact:
        s |= {f"grok/exact/{k}": exact.get(k) for k in times}
    elif len(members) > 1 and all(m.get("exact") for m in members):
        s |= {f"grok/exact/{k}": ((res.get("aggregate") or {}).get(f"exact_{k}") or {}).get("mean") for k in times}
    for name, b in (res.get("bounds") or single.get("bounds") or {}).items():
        s[f"grok/bound/{name}"] = b["value"]
        s[f"grok/bound/{name}/verdict"] = b["verdict"]
    for name, e in (res.get("envelopes") or single.get("envelopes") or {}).items():
        s[f"grok/envelope/{name}/verdict"] = e["verdict"]
    if len(members) > 1:
        for k, st in (res.get("aggregate") or {}).items():
            if isinstance(st, dict) and "std" in st:
                s[f"grok/{k}_std"] = st["std"]
    return s


def format_run_table(res: dict) -> str:
    """The table ``fit`` prints at the end: measured and exact t1, t2, t2 - t1 (GD steps), bounds and their
    verdicts, envelopes and notes; for an ensemble one line per member and the mean, std, min and max."""
    fmt = format_value
    if len(res["members"]) > 1:
        lines = [
            f"== phase transitions of {len(res['members'])} seeds ({res['status']}, {res['steps_run']} steps) ==",
            f"{'member':8}{'t1':>10}{'exact t1':>10}{'t2':>10}{'exact t2':>10}{'t2-t1':>10}",
        ]
        for i, m in enumerate(res["members"]):
            ex = m.get("exact") or {}
            lines.append(
                f"{i:<8}{fmt(m['t_overfit']):>10}{fmt(ex.get('t_overfit')):>10}{fmt(m['t_generalize']):>10}"
                f"{fmt(ex.get('t_generalize')):>10}{fmt(m['grokking_time']):>10}"
            )
        for key in ("t_overfit", "t_generalize", "grokking_time"):
            a = res["aggregate"][key]
            stats = "  ".join(f"{s} {fmt(a[s])}" for s in ("mean", "std", "min", "max"))
            lines.append(f"{key:16} {stats}")
        return "\n".join(lines)
    lines = [
        f"== phase transitions ({res['status']}, {res['steps_run']} steps) ==",
        f"{'':24}{'measured':>12}{'exact':>12}",
    ]
    ex = res.get("exact") or {}
    for key, label in (
        ("t_overfit", "t1 (overfit)"),
        ("t_generalize", "t2 (generalize)"),
        ("grokking_time", "grokking time t2-t1"),
    ):
        lines.append(f"{label:24}{fmt(res[key]):>12}{fmt(ex.get(key)):>12}")
    if res.get("accuracy"):
        a = res["accuracy"]
        lines.append(f"{'t1 by accuracy':24}{fmt(a['t_overfit']):>12}")
        lines.append(f"{'t2 by accuracy':24}{fmt(a['t_generalize']):>12}")
    if res.get("bounds"):
        lines.append(f"{'bound':28}{'value':>12}  verdict")
        for name, b in res["bounds"].items():
            lines.append(f"{name:28}{fmt(b['value']):>12}  {b['verdict']}")
    for name, e in res.get("envelopes", {}).items():
        lines.append(f"{name:28}{fmt(e['worst_ratio']):>12}  {e['verdict']}")
    for note in res.get("missing", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)
