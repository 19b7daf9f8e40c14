"""Steps per second of the Lightning training path against a hand-written PyTorch GD loop (ridge, float64, CPU).

Command (from the repository root; about 1.5-2 minutes on 2 cores):

    .venv/bin/python benchmarks/bench_loop.py                 # table on stdout
    .venv/bin/python benchmarks/bench_loop.py --json out.json # the same numbers, plus every repetition, as JSON

What is compared, on the ridge defaults (configs/ridge.yaml: n=100, m=1000, lambda=1e-4, eta=1) and on m=10000,
all on the same Phi, Y, theta^(0) and theta* (taken from ``experiment.build(cfg)``), every GD step's training
loss and population loss recorded by each contender:

* ``hand-written loop``: what a researcher writes by hand, one step at a time
      r = Phi @ theta - y;  train[t] = ||r||^2 / (2n);  pop[t] = ||theta - theta*||^2 / m
      theta = theta - eta * (Phi^T r / n + lambda * theta)
* ``fused GD loop``: lightning_grok's own ``LinearGDLoop.run`` (two BLAS calls per step, the losses of a
  block of K iterates at once) called in a plain Python loop: the arithmetic of the Lightning path, no Lightning.
* ``Lightning K=...``: the real training path, ``experiment.fit(cfg)`` (phase callback, checkpoint callback,
  W&B disabled, no progress bar), at several ``trainer.steps_per_call`` values K. Only ``Trainer.fit`` is timed:
  building the data, the model, the theory and the Trainer happens before the clock starts.

Every contender runs the same number T of GD steps (chosen so a fused-kernel run takes about ``--seconds``);
the repetitions interleave the contenders (A B C A B C ..., order rotated each repetition) so machine noise
hits all of them alike. Afterwards the final losses and theta_T of every fused and Lightning run are checked
against the hand-written loop's to 1e-9 relative (the script fails otherwise): they did the same work.

How to read the table: ``steps/s`` is the median over repetitions. ``/hand`` is the median of the per-repetition
ratios (steps/s of this row) / (steps/s of the hand-written loop in the same repetition): above 1 the row is
faster than the hand-written loop. The project's target is Lightning/hand >= 0.9 on the ridge defaults.
``/fused`` is the same against the fused GD loop without Lightning: 1 - (/fused) is the framework's overhead.
The ``where the time goes`` table splits ``Trainer.fit`` (median shares): the kernel's GD steps with the training
loss and ||theta||^2 of the block, the population loss of the block, the phase callback, and the rest
(Lightning's loops and hooks, setup, the end-of-fit checkpoint and phases.json).

Threads: by default torch uses its own thread count (2 here). When another process keeps a core busy, every
torch op big enough to run multithreaded (the block losses of a call, not the per-step matrix-vector products)
waits for a scheduler time slice (~8 ms each on the shared 2-core machine), which penalizes small K heavily;
``--threads 1`` measures without that effect. Run both when choosing ``steps_per_call``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from _common import FusedGD, Problem, load_problem, median, quiet, rel, ridge_cfg, timed
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_grok import kernels
from lightning_grok.callbacks.phases import PhaseTransitionCallback
from lightning_grok.experiment import fit as experiment_fit
from lightning_grok.gd_loops import LinearGDLoop

RTOL = 1e-9
TARGET = 0.9
HAND, FUSED = "hand-written loop", "fused GD loop, no Lightning"


@dataclass
class Outcome:
    """One timed run: seconds, the last recorded losses (of theta_{T-1}) and theta_T."""

    seconds: float
    train_last: float
    pop_last: float
    theta: torch.Tensor
    parts: dict[str, float] = field(default_factory=dict)  # Lightning only: where the time went


# ---- contender 1: the hand-written loop -----------------------------------------------------------------------------
@torch.no_grad()
def run_hand(p: Problem, steps: int) -> Outcome:
    phi, y, theta_star, n, m = p.phi, p.y, p.theta_star, p.n, p.m
    eta, lam = p.lr, p.weight_decay
    theta = p.theta0.clone()
    train = torch.empty(steps, dtype=torch.float64)
    pop = torch.empty(steps, dtype=torch.float64)
    start = time.perf_counter()
    for t in range(steps):
        r = phi @ theta - y
        train[t] = r.square().sum() / (2 * n)
        pop[t] = (theta - theta_star).square().sum() / m
        theta = theta - eta * (phi.T @ r / n + lam * theta)
    seconds = time.perf_counter() - start
    return Outcome(seconds, float(train[-1]), float(pop[-1]), theta)


# ---- contender 2: lightning_grok's fused GD loop, no Lightning ------------------------------------------------------
def run_fused(gd: FusedGD, p: Problem, steps: int) -> Outcome:
    theta = gd.start(p.theta0)
    start = time.perf_counter()
    train_last, pop_last = gd.iterate(theta, steps)
    seconds = time.perf_counter() - start
    return Outcome(seconds, float(train_last), float(pop_last), theta)


# ---- contender 3: the Lightning path -------------------------------------------------------------------------------
PARTS = {  # where the time goes inside Trainer.fit: (owner, attribute)
    "kernel": (LinearGDLoop, "run"),
    "population loss": (kernels, "_linear_population"),
    "phase callback": (PhaseTransitionCallback, "on_train_batch_end"),
    "phase callback (end)": (PhaseTransitionCallback, "on_fit_end"),
    "checkpoint (end)": (ModelCheckpoint, "on_train_end"),
}


def run_lightning(width: int, steps: int, per_call: int) -> Outcome:
    """``experiment.fit`` as the CLI runs it; only ``Trainer.fit`` is on the clock."""
    fit_s: list[float] = []
    parts: dict[str, list[float]] = {key: [] for key in PARTS}
    module: list[L.LightningModule] = []
    with tempfile.TemporaryDirectory() as out, contextlib.ExitStack() as stack:
        cfg = ridge_cfg(
            f"model.width={width}",
            f"trainer.max_steps={steps}",
            f"trainer.steps_per_call={per_call}",
            f"output_dir={out}",
        )
        stack.enter_context(timed(L.Trainer, "fit", fit_s, keep=lambda args: module.append(args[1])))
        for key, (owner, name) in PARTS.items():
            stack.enter_context(timed(owner, name, parts[key]))
        with contextlib.redirect_stdout(io.StringIO()):  # the phase table printed at the end of fit
            status, res = experiment_fit(cfg, "bench")
    assert status == 0 and res["steps_run"] == steps, (status, res.get("steps_run"))
    total = fit_s[0]
    sums = {key: sum(v) for key, v in parts.items()}
    split = {
        "GD steps + train loss + ||theta||^2": sums["kernel"] - sums["population loss"],
        "population loss of the block": sums["population loss"],
        "phase callback": sums["phase callback"] + sums["phase callback (end)"],
        "Lightning loop, hooks, setup, end checkpoint": total
        - sums["kernel"]
        - sums["phase callback"]
        - sums["phase callback (end)"],
    }
    split["  of which: end-of-fit checkpoint"] = sums["checkpoint (end)"]
    final = res["final"]
    theta = module[0].model.trainable.detach().clone()
    return Outcome(total, final["train/loss"], final["test/loss"], theta, {k: v / total for k, v in split.items()})


# ---- the benchmark ---------------------------------------------------------------------------------------------------
@dataclass
class Contender:
    name: str
    run: Callable[[int], Outcome]
    per_call: int | None = None  # Lightning and fused only
    outcomes: list[Outcome] = field(default_factory=list)


def contenders(p: Problem, gd: FusedGD, per_calls: list[int]) -> list[Contender]:
    out = [
        Contender(HAND, lambda s: run_hand(p, s)),
        Contender(FUSED + f" (K={p.auto_k})", lambda s: run_fused(gd, p, s), p.auto_k),
    ]
    for k in per_calls:
        label = f"Lightning K=auto ({p.auto_k})" if k == 0 else f"Lightning K={k}"
        out.append(Contender(label, lambda s, k=k: run_lightning(p.m, s, k), k or p.auto_k))
    return out


def choose_steps(p: Problem, gd: FusedGD, seconds: float) -> int:
    """T such that a fused-kernel run takes about ``seconds`` here and now (a multiple of 1024)."""
    probe = 2048
    rate = probe / min(run_fused(gd, p, probe).seconds for _ in range(2))
    return max(1024, int(round(seconds * rate / 1024)) * 1024)


def check_same_work(hand: Outcome, other: Outcome, label: str) -> float:
    """Largest relative difference of the last losses and theta_T; raises beyond RTOL."""
    theta_rel = float((other.theta.reshape(-1) - hand.theta.reshape(-1)).norm() / hand.theta.norm())
    worst = max(rel(other.train_last, hand.train_last), rel(other.pop_last, hand.pop_last), theta_rel)
    if worst > RTOL:
        raise AssertionError(f"{label}: final losses/theta differ from the hand-written loop by {worst:.3g} relative")
    return worst


def bench_case(label: str, width: int, per_calls: list[int], reps: int, seconds: float) -> dict:
    p, _ = load_problem(f"model.width={width}")
    gd = FusedGD(p, p.auto_k)
    pool = contenders(p, gd, per_calls)
    for c in pool:  # warm-up: first-call costs (imports, allocator, page faults) stay off the clock
        c.run(1024)
    steps = choose_steps(p, gd, seconds)
    print(f"[{label}] m={width}: T={steps} steps per run, {len(pool)} contenders x {reps} repetitions", flush=True)
    for r in range(reps):
        for i in range(len(pool)):
            c = pool[(i + r) % len(pool)]
            c.outcomes.append(c.run(steps))
    hand = pool[0]
    worst = max(check_same_work(hand.outcomes[0], o, c.name) for c in pool[1:] for o in c.outcomes)
    rows = []
    for c in pool:
        rates = [steps / o.seconds for o in c.outcomes]
        vs_hand = [steps / o.seconds / (steps / h.seconds) for o, h in zip(c.outcomes, hand.outcomes, strict=True)]
        vs_fused = [f.seconds / o.seconds for o, f in zip(c.outcomes, pool[1].outcomes, strict=True)]
        parts = {}
        if c.outcomes[0].parts:
            parts = {k: median(o.parts[k] for o in c.outcomes) for k in c.outcomes[0].parts}
        rows.append(
            {
                "path": c.name,
                "steps_per_call": c.per_call,
                "steps_per_s": median(rates),
                "ratio_vs_hand": median(vs_hand),
                "ratio_vs_fused": median(vs_fused),
                "seconds": [o.seconds for o in c.outcomes],
                "time_shares": parts,
            }
        )
    return {
        "case": label,
        "n": p.n,
        "m": width,
        "lambda": p.weight_decay,
        "eta": p.lr,
        "steps": steps,
        "kernel_layout": gd.layout,
        "auto_steps_per_call": p.auto_k,
        "repetitions": reps,
        "max_rel_diff_vs_hand": worst,
        "final_train_loss": hand.outcomes[0].train_last,
        "final_pop_loss": hand.outcomes[0].pop_last,
        "rows": rows,
    }


# ---- output ----------------------------------------------------------------------------------------------------------
def format_case(case: dict) -> str:
    lines = [
        f"== {case['case']}: n={case['n']}, m={case['m']}, lambda={case['lambda']:g}, eta={case['eta']:g}, "
        f"T={case['steps']} steps, median of {case['repetitions']} interleaved repetitions ==",
        f"{'path':38}{'steps/s':>10}{'/hand':>8}{'/fused':>8}   seconds per repetition",
    ]
    for row in case["rows"]:
        secs = " ".join(f"{s:.2f}" for s in row["seconds"])
        lines.append(
            f"{row['path']:38}{row['steps_per_s']:>10.0f}{row['ratio_vs_hand']:>8.2f}{row['ratio_vs_fused']:>8.2f}"
            f"   {secs}"
        )
    lines.append(
        f"same work: final train loss {case['final_train_loss']:.10g}, population loss {case['final_pop_loss']:.10g};"
        f" largest relative difference to the hand-written loop {case['max_rel_diff_vs_hand']:.2g} (<= {RTOL:g})"
    )
    return "\n".join(lines)


def format_shares(case: dict) -> str:
    rows = [r for r in case["rows"] if r["time_shares"]]
    keys = list(rows[0]["time_shares"])
    head = f"{'where the time goes (share of Trainer.fit)':48}" + "".join(f"{r['path'][10:]:>16}" for r in rows)
    lines = [f"-- {case['case']} --", head]
    for key in keys:
        lines.append(f"{key:48}" + "".join(f"{r['time_shares'][key]:>16.1%}" for r in rows))
    return "\n".join(lines)


def verdict(cases: list[dict]) -> str:
    base = cases[0]
    lightning = [r for r in base["rows"] if r["path"].startswith("Lightning")]
    auto = next((r for r in lightning if r["path"].startswith("Lightning K=auto")), lightning[0])
    best = max(lightning, key=lambda r: r["ratio_vs_hand"])
    met = "MET" if auto["ratio_vs_hand"] >= TARGET else "NOT MET"
    return (
        f"target Lightning/hand >= {TARGET} on the ridge defaults ({auto['path']}): {met} "
        f"({auto['ratio_vs_hand']:.2f}); best K here: {best['path']} ({best['ratio_vs_hand']:.2f})"
    )


def parse_per_call(text: str) -> list[int]:
    return [0 if v.strip() == "auto" else int(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5, help="interleaved repetitions (median reported)")
    ap.add_argument("--seconds", type=float, default=1.5, help="target seconds of one fused-kernel run")
    ap.add_argument("--per-call", default="auto,256,1024,8192", help="steps_per_call values on the ridge defaults")
    ap.add_argument("--large-per-call", default="auto", help="steps_per_call values at m=10000")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own choice)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    quiet()
    if args.threads:
        torch.set_num_threads(args.threads)
    setup = {"torch": torch.__version__, "threads": torch.get_num_threads(), "dtype": "float64", "device": "cpu"}
    print(f"bench_loop: torch {setup['torch']}, {setup['threads']} threads, float64, CPU", flush=True)
    start = time.perf_counter()
    cases = [
        bench_case("ridge defaults", 1000, parse_per_call(args.per_call), args.reps, args.seconds),
        bench_case("wide", 10000, parse_per_call(args.large_per_call), args.reps, args.seconds),
    ]
    print()
    for case in cases:
        print(format_case(case) + "\n")
    for case in cases:
        print(format_shares(case) + "\n")
    print(verdict(cases))
    print(f"(total {time.perf_counter() - start:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"setup": setup, "cases": cases, "verdict": verdict(cases)}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
