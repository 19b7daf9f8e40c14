"""Batched sweep points against separate points: a panel of ridge weight-decay points (Fig. 2's lambda panel at
smaller lambda range), on the ridge defaults (n = 100, m = 1000, eta = 1).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_batch.py [--points 6] [--seeds 1] [--reps 3] [--json out.json]

Times, in one process and interleaved (batched, separate, batched, ...), ``batch.fit_batch`` on the panel (every
point a member of one row-space GD loop with its own lambda, leaving the loop at its t2 + 2%) against
``experiment.fit`` on each point in turn (what a sweep agent runs, less its fork). Both write every point's
phases.json and curves.json; W&B disabled. Prints the median wall time of each and the ratio separate / batched
(> 1: batching is faster), with the load average (``os.getloadavg``) before and after, and checks that every
point's t1, t2 and steps run are the same both ways.

Measured (2 shared CPU cores, one thread, load average 5.3-5.8 from other processes, 5 repetitions): 8 points,
1 seed each: 1.60 s batched vs 2.54 s separate (1.59x); 5 seeds each: 4.71 s vs 5.71 s (1.21x).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

from _common import median, quiet, ridge_cfg

from lightning_grok.batch import fit_batch
from lightning_grok.experiment import fit

LAMBDAS = (3e-3, 2e-3, 1.5e-3, 1e-3, 7e-4, 5e-4, 4e-4, 3e-4)  # exact t2 from about 800 to 8000 GD steps


def configs(points: int, seeds: int, tmp: Path, tag: str) -> list:
    stamp = time.time_ns()
    return [
        ridge_cfg(
            f"optim.weight_decay={wd}",
            f"seeds={seeds}",
            "trainer.max_steps=20000",
            "phases.stop_margin=0.02",
            f"output_dir={tmp / f'{tag}-{stamp}-{i}'}",
        )
        for i, wd in enumerate(LAMBDAS[:points])
    ]


def outcome(res: dict) -> list[tuple]:
    return [(m["t_overfit"], m["t_generalize"], m["steps_run"]) for m in res["members"]]


def run_batched(points: int, seeds: int, tmp: Path) -> tuple[float, list]:
    cfgs = configs(points, seeds, tmp, "batch")
    start = time.perf_counter()
    results = fit_batch(cfgs, "bench")
    took = time.perf_counter() - start
    assert all(code == 0 for code, _ in results)
    return took, [outcome(r) for _, r in results]


def run_separate(points: int, seeds: int, tmp: Path) -> tuple[float, list]:
    cfgs = configs(points, seeds, tmp, "alone")
    start = time.perf_counter()
    results = [fit(cfg, "bench") for cfg in cfgs]
    took = time.perf_counter() - start
    assert all(code == 0 for code, _ in results)
    return took, [outcome(r) for _, r in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    quiet()
    load_before = os.getloadavg()
    batched, separate = [], []
    with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        run_batched(2, args.seeds, Path(tmp))  # warm-up: first-call costs (imports, Lightning's set-up)
        run_separate(2, args.seeds, Path(tmp))
        for _ in range(args.reps):
            tb, ob = run_batched(args.points, args.seeds, Path(tmp))
            ts, os_ = run_separate(args.points, args.seeds, Path(tmp))
            if ob != os_:
                raise AssertionError(f"batched and separate points disagree: {ob} vs {os_}")
            batched.append(tb)
            separate.append(ts)
    out = {
        "points": args.points,
        "seeds_per_point": args.seeds,
        "lambdas": list(LAMBDAS[: args.points]),
        "steps_run": [o[0][2] for o in ob],
        "batched_s": batched,
        "separate_s": separate,
        "batched_median_s": median(batched),
        "separate_median_s": median(separate),
        "speedup_separate_over_batched": median(separate) / median(batched),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "torch_threads": __import__("torch").get_num_threads(),
    }
    print(json.dumps(out, indent=1))
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
