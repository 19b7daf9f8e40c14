"""Concurrent fits on shared cores: threads chosen by the CPU ledger against the inherited count.

    .venv/bin/python benchmarks/bench_threads.py [--runs 3] [--steps 6000] [--reps 2] [--json out.json]

Times, as real processes, one two-layer fit alone (configs/two_layer.yaml, Sec. 5.3 defaults, ``--steps`` GD
steps, no early stop) and ``--runs`` identical fits started together, each with ``trainer.threads=0`` (the
ledger's share: usable CPUs / live runs) and with ``trainer.threads=<usable CPUs>`` (what every process inherited
before: torch's default of one thread per core). Interleaved, median of ``--reps``. Prints each wall time and the
slow-down of the concurrent group against one fit alone; the ideal with R runs on C cores is R / C.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def fits(count: int, threads: int, steps: int, tmp: Path) -> float:
    """Wall seconds of ``count`` fits started together (startup included)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), WANDB_MODE="disabled")
    env.pop("OMP_NUM_THREADS", None)
    cmd = [sys.executable, "-m", "lightning_grok", "fit", str(REPO / "configs" / "two_layer.yaml")]
    args = [f"trainer.max_steps={steps}", "phases.stop_margin=null", "trainer.progress_bar=false",
            "wandb.mode=disabled", f"trainer.threads={threads}"]  # fmt: skip
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [*cmd, *args, f"output_dir={tmp / f'{time.time_ns()}-{i}'}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for i in range(count)
    ]
    if any(p.wait() != 0 for p in procs):
        raise SystemExit("a fit failed")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    alone, shared, inherited, loads = [], [], [], []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for _ in range(args.reps):
            loads.append(os.getloadavg()[0])
            alone.append(fits(1, 0, args.steps, tmp))
            shared.append(fits(args.runs, 0, args.steps, tmp))
            inherited.append(fits(args.runs, cores, args.steps, tmp))
    out = {
        "cores": cores,
        "runs": args.runs,
        "steps": args.steps,
        "alone_s": statistics.median(alone),
        "ledger_s": statistics.median(shared),
        "inherited_s": statistics.median(inherited),
        "ledger_slowdown": statistics.median(shared) / statistics.median(alone),
        "inherited_slowdown": statistics.median(inherited) / statistics.median(alone),
        "ideal_slowdown": max(1.0, args.runs / cores),
        "load_average_before_each_rep": loads,
        "walls": {"alone": alone, "ledger": shared, "inherited": inherited},
    }
    print(f"{args.runs} concurrent two-layer fits x {args.steps} steps on {cores} cores, median of {args.reps}:")
    print(f"  one fit alone                          {out['alone_s']:7.1f} s")
    ledger = f"{out['ledger_s']:7.1f} s  ({out['ledger_slowdown']:.2f}x)"
    print(f"  {args.runs} together, threads from the ledger   {ledger}")
    print(f"  {args.runs} together, {cores} threads each (inherited) {out['inherited_s']:7.1f} s  "
          f"({out['inherited_slowdown']:.2f}x)")  # fmt: skip
    print(f"  ideal {out['ideal_slowdown']:.2f}x; load average before each repetition {loads}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
