"""Vectorized seeds against sequential runs, on the ridge defaults (n = 100, m = 1000, lambda = 1e-4).

    .venv/bin/python benchmarks/bench_seeds.py [--seeds 16] [--steps 25000] [--reps 1] [--json out.json]

Times ``experiment.fit`` end to end (build, theory, training, checkpoint) for one run with ``seeds=K``
(the K members batched in one row-space GD loop) and for K sequential runs with ``seed=0..K-1`` (the
default kernel), interleaved, in one process. Prints both wall times and their ratio (sequential /
vectorized: > 1 means the ensemble is faster), and checks that every member's t1 and t2 equal those of
the sequential run with its seed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import median, quiet, ridge_cfg

from lightning_grok.experiment import fit


def run_ensemble(k: int, steps: int, tmp: Path) -> tuple[float, list[tuple]]:
    cfg = ridge_cfg(f"seeds={k}", f"trainer.max_steps={steps}", f"output_dir={tmp / f'ens-{time.time_ns()}'}")
    start = time.perf_counter()
    _, res = fit(cfg, "bench")
    return time.perf_counter() - start, [(m["t_overfit"], m["t_generalize"]) for m in res["members"]]


def run_sequential(k: int, steps: int, tmp: Path) -> tuple[float, list[tuple]]:
    times = []
    start = time.perf_counter()
    for seed in range(k):
        cfg = ridge_cfg(f"seed={seed}", f"trainer.max_steps={steps}", f"output_dir={tmp / f'seq-{time.time_ns()}'}")
        _, res = fit(cfg, "bench")
        times.append((res["t_overfit"], res["t_generalize"]))
    return time.perf_counter() - start, times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--steps", type=int, default=25000, help="GD steps per run (t2 is about 2.3e4 here)")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    quiet()
    ens_t, seq_t = [], []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for _ in range(args.reps):
            te, members = run_ensemble(args.seeds, args.steps, tmp)
            ts, singles = run_sequential(args.seeds, args.steps, tmp)
            if members != singles:
                raise SystemExit(f"member phase times differ from the sequential runs:\n{members}\n{singles}")
            ens_t.append(te)
            seq_t.append(ts)
    out = {
        "seeds": args.seeds,
        "steps": args.steps,
        "vectorized_s": median(ens_t),
        "sequential_s": median(seq_t),
        "speedup": median(seq_t) / median(ens_t),
        "members_equal_sequential": True,
    }
    print(f"{args.seeds} seeds x {args.steps} steps, median of {args.reps}:")
    print(f"  vectorized (seeds={args.seeds}, one process) {out['vectorized_s']:8.2f} s")
    print(f"  sequential ({args.seeds} runs)               {out['sequential_s']:8.2f} s")
    print(f"  speed-up sequential / vectorized          {out['speedup']:8.2f}x   (per-member t1, t2 equal: yes)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
