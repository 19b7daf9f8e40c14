"""Vectorized seeds against sequential runs, on the ridge defaults (n = 100, m = 1000, lambda = 1e-4).

    .venv/bin/python benchmarks/bench_seeds.py [--seeds 16] [--steps 25000] [--reps 1] [--json out.json]

Times ``experiment.fit`` end to end (build, theory, training, checkpoint) for one run with ``seeds=K``
(the K members batched in one row-space GD loop) and for K sequential runs with ``seed=0..K-1`` (the
default kernel), interleaved, in one process, after one untimed short fit (so that neither side pays the
process's first-fit costs: lazy imports, Lightning's first Trainer). Prints both wall times (and CPU times)
and their ratio (sequential / vectorized: > 1 means the ensemble is faster), and checks that every member's
t1 and t2 equal those of the sequential run with its seed. /proc/loadavg is recorded before and after: the
machine may be shared, and the ratio is only meaningful at a similar load on both sides.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import median, quiet, ridge_cfg

from lightning_grok.experiment import fit


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "unknown"


def run_ensemble(k: int, steps: int, tmp: Path) -> tuple[float, float, list[tuple]]:
    cfg = ridge_cfg(f"seeds={k}", f"trainer.max_steps={steps}", f"output_dir={tmp / f'ens-{time.time_ns()}'}")
    start, cpu = time.perf_counter(), time.process_time()
    _, res = fit(cfg, "bench")
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return wall, cpu, [(m["t_overfit"], m["t_generalize"]) for m in res["members"]]


def run_sequential(k: int, steps: int, tmp: Path) -> tuple[float, float, list[tuple]]:
    times = []
    start, cpu = time.perf_counter(), time.process_time()
    for seed in range(k):
        cfg = ridge_cfg(f"seed={seed}", f"trainer.max_steps={steps}", f"output_dir={tmp / f'seq-{time.time_ns()}'}")
        _, res = fit(cfg, "bench")
        times.append((res["t_overfit"], res["t_generalize"]))
    return time.perf_counter() - start, time.process_time() - cpu, times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--steps", type=int, default=25000, help="GD steps per run (t2 is about 2.3e4 here)")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    quiet()
    ens_t, seq_t, ens_cpu, seq_cpu = [], [], [], []
    load = {"start": loadavg()}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        run_sequential(1, 64, tmp)  # untimed: the process's first fit
        for _ in range(args.reps):
            te, ce, members = run_ensemble(args.seeds, args.steps, tmp)
            ts, cs, singles = run_sequential(args.seeds, args.steps, tmp)
            if members != singles:
                raise SystemExit(f"member phase times differ from the sequential runs:\n{members}\n{singles}")
            ens_t.append(te)
            seq_t.append(ts)
            ens_cpu.append(ce)
            seq_cpu.append(cs)
    load["end"] = loadavg()
    out = {
        "seeds": args.seeds,
        "steps": args.steps,
        "reps": args.reps,
        "vectorized_s": median(ens_t),
        "sequential_s": median(seq_t),
        "speedup": median(seq_t) / median(ens_t),
        "vectorized_cpu_s": median(ens_cpu),
        "sequential_cpu_s": median(seq_cpu),
        "speedup_cpu": median(seq_cpu) / median(ens_cpu),
        "vectorized_s_each": ens_t,
        "sequential_s_each": seq_t,
        "members_equal_sequential": True,
        "loadavg": load,
    }
    print(f"{args.seeds} seeds x {args.steps} steps, median of {args.reps} (load {load['start']} -> {load['end']}):")
    k = args.seeds
    print(f"  vectorized (seeds={k}, one process) {out['vectorized_s']:8.2f} s   CPU {out['vectorized_cpu_s']:6.2f} s")
    print(f"  sequential ({k} runs)               {out['sequential_s']:8.2f} s   CPU {out['sequential_cpu_s']:6.2f} s")
    print(f"  speed-up sequential / vectorized {out['speedup']:8.2f}x   (CPU {out['speedup_cpu']:.2f}x)")
    print("  every member's t1 and t2 equal its sequential run's")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
