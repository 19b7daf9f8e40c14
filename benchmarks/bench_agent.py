"""Per-point overhead of the offline sweep agent: forked workers against a fresh interpreter per point.

Command (from the repository root; about 3-4 minutes on 2 cores):

    .venv/bin/python benchmarks/bench_agent.py [--points 12] [--reps 2] [--json out.json]

A 12-point grid of small ridge runs (m = 200, 2000 GD steps, W&B offline, as a sweep's runs are) goes
through one ``lightning-grok sweep`` agent, three ways, in a fresh sweep directory each time:

* ``in-process``: the same 12 ``experiment.fit`` calls in this one process, which imported everything once:
  the training itself (data, Trainer, W&B offline run, GD, phases.json), with no agent and no start-up.
* ``agent fork``: the agent as shipped, each point in a fork of the agent, which imported the stack once.
* ``agent spawn`` (``--spawn``): each point in a fresh interpreter, which imports torch and Lightning again.

Overhead per point = (agent wall time - in-process wall time of the same points) / points, in seconds,
per repetition; repetitions rotate the order so machine noise hits all three alike. The target is under
3 s per point for ``agent fork``. The load average before and after is printed: other processes on the two
cores slow every contender (say what else was running when you quote the numbers).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OVERRIDES = {"model.width": 200, "trainer.max_steps": 2000, "trainer.progress_bar": False, "wandb.mode": "offline"}


def sweep_file(folder: Path, points: int) -> Path:
    params = {k: {"value": v} for k, v in OVERRIDES.items()}
    params["seed"] = {"values": list(range(points))}
    text = json.dumps(
        {
            "name": "bench_agent",
            "method": "grid",
            "metric": {"name": "grok/t_generalize", "goal": "minimize"},
            "command": [
                "${env}",
                "${interpreter}",
                "-m",
                "lightning_grok",
                "fit",
                "configs/ridge.yaml",
                "${args_no_hyphens}",
            ],
            "parameters": params,
        }
    )
    path = folder / "bench_agent.yaml"
    path.write_text(text)  # JSON is YAML
    return path


def agent(folder: Path, points: int, spawn: bool) -> float:
    sweep = sweep_file(folder, points)
    cmd = [sys.executable, "-m", "lightning_grok", "sweep", str(sweep), "--sweep-dir", str(folder / "sweep")]
    t0 = time.perf_counter()
    res = subprocess.run([*cmd, *(["--spawn"] if spawn else [])], cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"agent failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    state = json.loads((folder / "sweep" / "state.json").read_text())
    done = [r for r in state["runs"].values() if r["state"] == "finished"]
    if len(done) != points:
        raise SystemExit(f"{len(done)} of {points} points finished")
    return wall


def in_process(folder: Path, points: int) -> float:
    from lightning_grok.config import load_config
    from lightning_grok.experiment import fit

    t0 = time.perf_counter()
    for seed in range(points):
        overrides = [f"{k}={v}" for k, v in OVERRIDES.items()] + [f"seed={seed}", f"output_dir={folder / str(seed)}"]
        cfg = load_config(REPO / "configs" / "ridge.yaml", overrides)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            status, _ = fit(cfg, "bench")
        if status != 0:
            raise SystemExit(f"in-process run {seed} ended with {status}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=12)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    os.environ.pop("WANDB_API_KEY", None)
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    contenders = {
        "in-process": lambda d: in_process(d, args.points),
        "agent fork": lambda d: agent(d, args.points, spawn=False),
        "agent spawn": lambda d: agent(d, args.points, spawn=True),
    }
    walls: dict[str, list[float]] = {k: [] for k in contenders}
    names = list(contenders)
    for rep in range(args.reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            with tempfile.TemporaryDirectory() as tmp:
                walls[name].append(contenders[name](Path(tmp)))
            print(f"rep {rep} {name}: {walls[name][-1]:.1f} s", flush=True)
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    base = walls["in-process"]
    rows = {}
    for name in ("agent fork", "agent spawn"):
        per_point = [(w - b) / args.points for w, b in zip(walls[name], base, strict=True)]
        rows[name] = {"wall_s": walls[name], "overhead_per_point_s": per_point, "median": statistics.median(per_point)}
    print(f"\n{args.points} points, {args.reps} repetitions; load average before {load_before}, after {load_after}")
    print(f"{'contender':14}{'median wall s':>15}{'overhead s/point':>18}")
    print(f"{'in-process':14}{statistics.median(base):>15.1f}{'-':>18}")
    for name, row in rows.items():
        print(f"{name:14}{statistics.median(row['wall_s']):>15.1f}{row['median']:>18.2f}")
    if args.json:
        args.json.write_text(json.dumps({"in-process": base, **rows, "load": [load_before, load_after]}, indent=2))


if __name__ == "__main__":
    main()
