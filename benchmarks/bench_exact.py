"""Exact dynamics against iterating GD: the time to know t1 (overfit) and t2 (generalize), ridge regression.

Command (from the repository root; about a minute on 2 cores):

    .venv/bin/python benchmarks/bench_exact.py                 # table on stdout
    .venv/bin/python benchmarks/bench_exact.py --json out.json # the same numbers, plus every repetition, as JSON

What is compared, at lambda in {1e-3, 1e-4, 1e-5, 1e-6, 1e-7} and otherwise the ridge defaults (configs/ridge.yaml:
n=100, m=1000, eta=1, eps=c=0.01, float64, CPU), on the tensors ``experiment.build(cfg)`` trains on:

* ``exact``: ``ExactDynamics(problem)`` (one SVD) + ``t_overfit(eps)`` + ``t_generalize(c)`` - closed form, no
  iteration. Required: under 1 s at every lambda.
* ``GD``: iterating GD until t2 with lightning_grok's fused GD loop (``LinearGDLoop.run`` in a plain Python loop,
  K=256 steps per call, no Lightning), every step's training and population loss recorded and fed to the
  streaming ``PhaseDetector``, stopping at the end of the call in which the population loss first reaches c.
  This is the fastest way to iterate in this repository (about twice a hand-written loop's steps/s, see
  bench_loop.py), so the ratios below are conservative.
  - lambda in {1e-3, 1e-4}: GD really iterates to t2, and the iterated t1 and t2 must equal the exact ones.
  - smaller lambda: t2 grows like 1/lambda (hours of GD at 1e-7), so GD runs 20k steps to measure its rate
    (steps/s) and the time to reach the exact t2 is extrapolated as t2 / rate (marked ``extrapolated``).
  In both cases the losses GD recorded at its last step are checked against the closed form (``loss rel. diff``:
  the larger relative difference of the two losses, taken against at least 1e-9 of the initial training loss,
  since float64 GD cannot resolve the training loss relatively once it is ~1e-13; must be <= 1e-8).

Exact and GD timings interleave (exact, GD, exact, GD, ...) over the repetitions; medians are reported.
numpy's BLAS runs single-threaded here (OPENBLAS_NUM_THREADS=1 unless set in the environment): its thread pool
keeps spinning for a while after the SVD and would starve torch's threads during the next GD run (GD measured
about 3x slower on 2 cores that way, which would inflate the ratios); one thread is also the faster setting
for the exact side at this size. ``--threads`` sets torch's thread count.

How to read the table: ``exact s`` is the time to get both t1 and t2 from the closed form; ``GD s to t2`` the time
GD needs to reach t2 (measured or extrapolated); ``GD / exact`` the median of the per-repetition ratios of the two:
how many times faster the closed form is. ``iterated t1, t2`` says whether GD found the same times.
"""

# numpy's BLAS thread count must be set before numpy is imported:
# ruff: noqa: E402
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from _common import FusedGD, load_problem, median, quiet

from lightning_grok.detection import PhaseDetector
from lightning_grok.theory.exact import ExactDynamics, LinearProblem

LAMBDAS = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
ITERATE = (1e-3, 1e-4)  # GD really runs to t2 here; below, its time is extrapolated from its rate
RATE_STEPS = 20_000
PER_CALL = 256  # GD steps per kernel call: stops at most 255 steps after t2
EXACT_LIMIT_S = 1.0
LOSS_RTOL = 1e-8
LOSS_FLOOR = 1e-9  # relative loss differences are taken against at least this fraction of L_n(theta^(0))


@dataclass
class GDRun:
    seconds: float
    steps: int
    t_overfit: int | None
    t_generalize: int | None
    train_last: float  # records of theta_{steps-1}
    pop_last: float


@dataclass
class Case:
    lam: float
    problem: LinearProblem
    gd: FusedGD
    theta0: torch.Tensor
    eps: float
    c: float
    exact_s: list[float] = field(default_factory=list)
    exact_times: tuple[int | None, int | None] = (None, None)
    runs: list[GDRun] = field(default_factory=list)

    @property
    def iterate(self) -> bool:
        return self.lam in ITERATE


def rel_floor(a: float, b: float, floor: float) -> float:
    return abs(a - b) / max(abs(b), floor)


def time_exact(case: Case) -> float:
    start = time.perf_counter()
    ex = ExactDynamics(case.problem)
    t1, t2 = ex.t_overfit(case.eps), ex.t_generalize(case.c)
    seconds = time.perf_counter() - start
    if case.exact_s and (t1, t2) != case.exact_times:
        raise AssertionError(f"lambda={case.lam:g}: exact t1, t2 changed between repetitions")
    case.exact_times = (t1, t2)
    case.exact_s.append(seconds)
    return seconds


def run_gd(case: Case, max_steps: int, stop_at_t2: bool) -> GDRun:
    """Fused GD from theta^(0), losses streamed into a PhaseDetector; stops after max_steps or at t2."""
    gd, detector = case.gd, PhaseDetector(case.eps, case.c)
    theta = gd.start(case.theta0)
    start, done = time.perf_counter(), 0
    train = pop = None
    while done < max_steps:
        k = min(gd.per_call, max_steps - done)
        train, pop = gd.run(theta, done, k)
        detector.update(done, train.numpy(), pop.numpy())
        done += k
        if stop_at_t2 and detector.t_generalize is not None:
            break
    seconds = time.perf_counter() - start
    return GDRun(seconds, done, detector.t_overfit, detector.t_generalize, float(train[-1]), float(pop[-1]))


def gd_once(case: Case) -> GDRun:
    if case.iterate:
        t2 = case.exact_times[1]
        run = run_gd(case, max_steps=4 * t2 + 10 * PER_CALL, stop_at_t2=True)
    else:
        run = run_gd(case, max_steps=RATE_STEPS, stop_at_t2=False)
    case.runs.append(run)
    return run


def make_case(lam: float) -> Case:
    p, built = load_problem(f"optim.weight_decay={lam}")
    cfg = built.cfg
    return Case(lam, built.problem, FusedGD(p, PER_CALL), p.theta0, float(cfg.phases.eps), float(cfg.phases.c))


def summarize(case: Case) -> dict:
    ex = ExactDynamics(case.problem)
    t1, t2 = case.exact_times
    last = case.runs[-1]
    floor = LOSS_FLOOR * float(ex.train_loss(0)[0])  # float64 GD cannot resolve L_n much below this
    loss_diff = max(
        rel_floor(last.train_last, float(ex.train_loss(last.steps - 1)[0]), floor),
        rel_floor(last.pop_last, float(ex.population_loss(last.steps - 1)[0]), floor),
    )
    rates = [r.steps / r.seconds for r in case.runs]
    if case.iterate:
        gd_s = [r.seconds for r in case.runs]
        same = all(r.t_overfit == t1 and r.t_generalize == t2 for r in case.runs)
    else:
        gd_s = [t2 / rate for rate in rates]
        same = None
    ratios = [g / e for g, e in zip(gd_s, case.exact_s, strict=True)]
    return {
        "lambda": case.lam,
        "exact_t_overfit": t1,
        "exact_t_generalize": t2,
        "exact_seconds": median(case.exact_s),
        "exact_seconds_all": case.exact_s,
        "exact_under_limit": max(case.exact_s) < EXACT_LIMIT_S,
        "gd_steps_per_s": median(rates),
        "gd_seconds_to_t2": median(gd_s),
        "gd_seconds_all": gd_s,
        "gd_extrapolated": not case.iterate,
        "gd_steps_run": last.steps,
        "ratio_gd_over_exact": median(ratios),
        "iterated_t_overfit": last.t_overfit if case.iterate else None,
        "iterated_t_generalize": last.t_generalize if case.iterate else None,
        "iterated_equals_exact": same,
        "loss_rel_diff_at_last_step": loss_diff,
        "kernel_layout": case.gd.layout,
    }


def fmt_seconds(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:.2f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    return f"{s:.3f} s" if s < 10 else f"{s:.1f} s"


def format_table(rows: list[dict], reps: int) -> str:
    head = (
        f"{'lambda':>7}{'exact t1':>10}{'exact t2':>11}{'exact s':>10}{'GD steps/s':>12}{'GD s to t2':>13}"
        f"  {'':13}{'GD / exact':>12}  {'iterated t1, t2':<24}{'loss rel. diff':>15}"
    )
    lines = [f"== exact dynamics vs iterating GD (ridge defaults, median of {reps} interleaved repetitions) ==", head]
    for r in rows:
        how = "extrapolated" if r["gd_extrapolated"] else "measured"
        if r["iterated_equals_exact"] is None:
            check = "- (not iterated)"
        else:
            verdict = "== exact" if r["iterated_equals_exact"] else "DIFFERS"
            check = f"{r['iterated_t_overfit']}, {r['iterated_t_generalize']} {verdict}"
        lines.append(
            f"{r['lambda']:>7.0e}{r['exact_t_overfit']!s:>10}{r['exact_t_generalize']!s:>11}"
            f"{r['exact_seconds']:>10.3f}{r['gd_steps_per_s']:>12.0f}{fmt_seconds(r['gd_seconds_to_t2']):>13}"
            f"  {how:13}{r['ratio_gd_over_exact']:>12.4g}  {check:<24}{r['loss_rel_diff_at_last_step']:>15.1e}"
        )
    worst = max(max(r["exact_seconds_all"]) for r in rows)
    ok = all(r["exact_under_limit"] for r in rows)
    lines.append(
        f"exact dynamics under {EXACT_LIMIT_S:g} s at every lambda: {'PASS' if ok else 'FAIL'} "
        f"(slowest repetition {worst:.3f} s)"
    )
    return "\n".join(lines)


def check(rows: list[dict]) -> list[str]:
    problems = []
    for r in rows:
        if r["iterated_equals_exact"] is False:
            problems.append(f"lambda={r['lambda']:g}: iterated t1, t2 differ from the exact ones")
        if r["loss_rel_diff_at_last_step"] > LOSS_RTOL:
            problems.append(f"lambda={r['lambda']:g}: GD losses differ from the closed form")
        if not r["exact_under_limit"]:
            problems.append(f"lambda={r['lambda']:g}: exact dynamics took over {EXACT_LIMIT_S:g} s")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5, help="interleaved repetitions (median reported)")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own choice)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    quiet()
    if args.threads:
        torch.set_num_threads(args.threads)
    blas = os.environ.get("OPENBLAS_NUM_THREADS")
    print(
        f"bench_exact: torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}"
        f" (OPENBLAS_NUM_THREADS={blas})"
    )
    start = time.perf_counter()
    cases = [make_case(lam) for lam in LAMBDAS]
    for case in cases:  # warm-up, off the record; also fixes the exact t2 the iterated runs are bounded by
        time_exact(case)
        run_gd(case, 2 * PER_CALL, stop_at_t2=False)
        case.exact_s.clear()
    for _ in range(args.reps):
        for case in cases:
            time_exact(case)
            gd_once(case)
    rows = [summarize(case) for case in cases]
    print(format_table(rows, args.reps))
    problems = check(rows)
    for line in problems:
        print("CHECK FAILED:", line)
    print(f"(total {time.perf_counter() - start:.0f} s)")
    if args.json:
        out = {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "openblas_threads": blas,
            "rows": rows,
            "problems": problems,
        }
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
