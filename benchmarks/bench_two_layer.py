"""The fused two-layer GD kernel against hand-written PyTorch loops, and vectorized two-layer seeds (CPU).

Command (from the repository root; about 9 minutes on 2 cores, half of it in the two full runs to t2):

    .venv/bin/python benchmarks/bench_two_layer.py                  # tables on stdout
    .venv/bin/python benchmarks/bench_two_layer.py --json out.json  # the same numbers, every repetition, as JSON
    .venv/bin/python benchmarks/bench_two_layer.py --skip-full      # speed and seeds only (about 3 minutes)

Problem: configs/two_layer.yaml, the paper's Sec. 5.3 defaults (d = 50, n = 50, m = 1000, eta = 1e-4,
lambda = 0.05, zero teacher, 500 test points, float32), all contenders on the tensors of ``experiment.build``.

1. Speed. Contenders, interleaved in one process (A B C ... then rotated each repetition, so machine noise hits
   all alike), each run for about ``--seconds``:
   * ``hand-written, autograd``: the loop a researcher writes, ``torch.optim.SGD(lr, weight_decay)`` on
     ``0.5 ||relu(X W^T) a - Y||^2 / n``, training loss and test loss (1/N) sum ||N(x) - y||^2 recorded every step;
   * ``hand-written, manual gradients``: the same with the gradients written out (no autograd), both losses
     every step;
   * ``fused GD loop, sparse eval``: lightning_grok's ``TwoLayerGDLoop`` called in a Python loop (no Lightning),
     training loss every step, test loss every s-th step (automatic s) and at the steps the configured
     1,000,000-step run logs (400 points, geometric), with the replays that keep t1 and t2 exact;
   * ``fused GD loop, every step``: the same kernel evaluating the test loss at every step (``eval_every=1``);
   * ``Lightning (experiment.fit)``: the real training path (phase callback, checkpoint, W&B disabled) with
     ``trainer.max_steps`` = the timed steps, so its 400 logged steps (each evaluated) are denser than in the
     fused contender; only ``Trainer.fit`` is on the clock.
   Before timing, a float64 check runs each contender 300 steps from the same start: parameters and both loss
   records must agree with the autograd loop to 1e-9 relative (the script fails otherwise).
   Reading the table: ``steps/s`` is the median over repetitions; ``/hand`` is the median of the per-repetition
   ratios against the faster hand-written loop (the baseline; the one with the higher median). The target is
   fused (sparse eval) / hand >= 3.
2. Phase times exact to the step (unless ``--skip-full``): ``experiment.fit`` at the defaults until t2 (about
   158,000 steps) plus a 1% margin, once with automatic sparse evaluation and once evaluating every step; t1 and t2
   must be equal (the script fails otherwise).
3. Vectorized seeds: ``experiment.fit`` with ``seeds=K`` (K members batched in one fused GD loop) against K
   sequential runs with ``seed=0..K-1``, interleaved, at the defaults with eta = ``--seeds-lr`` (2e-3: t2 about
   7,900 steps, so every member reaches it in ``--seeds-steps``). Member-steps per second of each (Trainer.fit
   only), their ratio (vectorized / sequential: above 1 the batched run is faster), and every member's t1, t2
   compared with its sequential run's (the script fails if any differs).

What else ran: /proc/loadavg is recorded before and after each part. Threads: torch's default (2 here) unless
``--threads``; with another busy process on a 2-core machine, two-thread ops wait for time slices, which slows
every contender, most of all the ones with many small ops (single timed runs then swing by 10-50x): on a
shared machine measure with ``--threads 1``.

Measured (``--threads 1``, load average 3.2-6.0 from other agents' processes on the 2 cores): fused (sparse
eval) 2,042 steps/s against 512 for the faster hand-written loop, ratio 3.99 (per repetition 3.15-4.43); the
Lightning path 4.06; t1 = 2,187 and t2 = 157,563 with sparse and with every-step evaluation (3,671 against 801
steps/s); 16 vectorized seeds 1.15x the member-steps/s of 16 sequential runs, every member's t1, t2 equal.
Ensembles against sequential runs at the same thread count: benchmarks/bench_two_layer_seeds.py.
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
import numpy as np
import torch
from _common import median, quiet, rel, timed
from omegaconf import DictConfig

from lightning_grok.config import ConfigError, load_config
from lightning_grok.experiment import build
from lightning_grok.experiment import fit as experiment_fit
from lightning_grok.gd_loops import EvalSpec, TwoLayerGDLoop
from lightning_grok.lightning_module import auto_two_layer_steps_per_call
from lightning_grok.member_phases import log_schedule

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "two_layer.yaml"
RTOL = 1e-9
TARGET = 3.0
CHECK_STEPS = 300


def two_layer_cfg(*overrides: str) -> DictConfig:
    base = ["trainer.accelerator=cpu", "trainer.devices=1", "trainer.progress_bar=false", "wandb.mode=disabled"]
    return load_config(CONFIG, [*base, *overrides])


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "unknown"


@dataclass
class Problem:
    """One run's tensors in the run's dtype, as every contender sees them."""

    x: torch.Tensor  # (n, d)
    y: torch.Tensor  # (n, 1)
    x_test: torch.Tensor  # (N, d)
    y_test: torch.Tensor  # (N, 1)
    w0: torch.Tensor  # (m, d)
    a0: torch.Tensor  # (m, 1)
    lr: float
    weight_decay: float
    c: float
    eps: float
    log_steps: np.ndarray  # the phase callback's logging schedule of the configured run (1,000,000 steps)

    @property
    def n(self) -> int:
        return self.x.shape[0]


def load_problem(*overrides: str) -> Problem:
    cfg = two_layer_cfg(*overrides)
    built = build(cfg)
    t, model = built.datamodule.tensors, built.model
    dtype = model.weight.dtype
    return Problem(
        x=t.x_train.to(dtype),
        y=t.y_train.to(dtype),
        x_test=t.x_test.to(dtype),
        y_test=t.y_test.to(dtype),
        w0=model.weight.detach().clone(),
        a0=model.a.detach().clone(),
        lr=float(cfg.optim.lr),
        weight_decay=float(cfg.optim.weight_decay),
        c=float(cfg.phases.c),
        eps=float(cfg.phases.eps),
        log_steps=log_schedule(int(cfg.trainer.max_steps), int(cfg.phases.log_points)),
    )


@dataclass
class Outcome:
    """One timed run: seconds, steps, the final parameters and the loss records."""

    seconds: float
    steps: int
    w: torch.Tensor
    a: torch.Tensor
    train: torch.Tensor
    test: torch.Tensor  # NaN where not evaluated (fused, sparse)


# ---- contender 1: hand-written, autograd ----------------------------------------------------------------------
def run_autograd(p: Problem, steps: int) -> Outcome:
    w, a = p.w0.clone().requires_grad_(True), p.a0.clone().requires_grad_(True)
    opt = torch.optim.SGD([w, a], lr=p.lr, weight_decay=p.weight_decay)
    train = torch.empty(steps, dtype=p.x.dtype)
    test = torch.empty(steps, dtype=p.x.dtype)
    start = time.perf_counter()
    for t in range(steps):
        loss = 0.5 * (torch.relu(p.x @ w.T) @ a - p.y).square().sum() / p.n
        train[t] = loss.detach()
        with torch.no_grad():
            test[t] = (torch.relu(p.x_test @ w.T) @ a - p.y_test).square().sum(dim=1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - start
    return Outcome(seconds, steps, w.detach(), a.detach(), train, test)


# ---- contender 2: hand-written, manual gradients ------------------------------------------------------------------
@torch.no_grad()
def run_manual(p: Problem, steps: int) -> Outcome:
    w, a = p.w0.clone(), p.a0.clone()
    x, y, n, lr, lam = p.x, p.y, p.n, p.lr, p.weight_decay
    train = torch.empty(steps, dtype=x.dtype)
    test = torch.empty(steps, dtype=x.dtype)
    start = time.perf_counter()
    for t in range(steps):
        z = x @ w.T
        h = torch.relu(z)
        r = h @ a - y
        train[t] = r.square().sum() / (2 * n)
        test[t] = (torch.relu(p.x_test @ w.T) @ a - p.y_test).square().sum(dim=1).mean()
        grad_a = h.T @ r / n + lam * a
        grad_w = ((r @ a.T) * (z > 0)).T @ x / n + lam * w
        a = a - lr * grad_a
        w = w - lr * grad_w
    seconds = time.perf_counter() - start
    return Outcome(seconds, steps, w, a, train, test)


# ---- contenders 3, 4: the fused GD loop, no Lightning ---------------------------------------------------------------
class Fused:
    """``TwoLayerGDLoop`` for one run, driven in calls of K steps (K as the Lightning path picks it)."""

    def __init__(self, p: Problem, eval_every: int):
        m, d = p.w0.shape
        self.per_call = auto_two_layer_steps_per_call(1, p.n, m, d, 1)
        ev = EvalSpec(x_test=p.x_test[None], y_test=p.y_test[None], c=p.c, surrogate_eps=p.eps)
        self.kernel = TwoLayerGDLoop(
            p.x[None].contiguous(), p.y[None], m, p.lr, p.weight_decay, p.n, ev, self.per_call, eval_every=eval_every
        )
        self.p = p

    def run(self, steps: int) -> Outcome:
        w, a = self.p.w0.clone()[None], self.p.a0.clone()[None]
        wanted = self.p.log_steps  # what the phase callback of the configured run logs: evaluated too
        trains, tests = [], []
        start = time.perf_counter()
        done = 0
        while done < steps:
            k = min(self.per_call, steps - done)
            chunk = self.kernel.run(w, a, done, k, wanted)
            trains.append(chunk.train_loss[:, 0])
            tests.append(chunk.test_loss[:, 0])
            done += k
        seconds = time.perf_counter() - start
        return Outcome(seconds, steps, w[0], a[0], torch.cat(trains), torch.cat(tests))


# ---- contender 5: the Lightning path --------------------------------------------------------------------------------
def run_lightning(steps: int, dtype_overrides: tuple[str, ...] = ()) -> Outcome:
    fit_s: list[float] = []
    module: list[L.LightningModule] = []
    with tempfile.TemporaryDirectory() as out:
        cfg = two_layer_cfg(f"trainer.max_steps={steps}", f"output_dir={out}", *dtype_overrides)
        with (
            timed(L.Trainer, "fit", fit_s, keep=lambda args: module.append(args[1])),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            status, res = experiment_fit(cfg, "bench")
    assert status == 0 and res["steps_run"] == steps, (status, res.get("steps_run"))
    model = module[0].model
    last = torch.tensor([res["final"]["train/loss"]], dtype=torch.float64)
    last_test = torch.tensor([res["final"]["test/loss"]], dtype=torch.float64)
    return Outcome(fit_s[0], steps, model.weight.detach().clone(), model.a.detach().clone(), last, last_test)


# ---- 1. speed -------------------------------------------------------------------------------------------------------
@dataclass
class Contender:
    name: str
    run: Callable[[int], Outcome]
    steps: int = 0
    outcomes: list[Outcome] = field(default_factory=list)


HAND_AUTOGRAD, HAND_MANUAL = "hand-written, autograd", "hand-written, manual gradients"
FUSED_SPARSE, FUSED_DENSE, LIGHTNING = (
    "fused GD loop, sparse eval",
    "fused GD loop, every step",
    "Lightning (experiment.fit)",
)


def check_same_work(p64: Problem) -> float:
    """Every contender on the float64 problem for CHECK_STEPS steps against the autograd loop: largest relative
    difference of W, a and of the loss records (where evaluated)."""
    ref = run_autograd(p64, CHECK_STEPS)
    others = {
        HAND_MANUAL: run_manual(p64, CHECK_STEPS),
        FUSED_SPARSE: Fused(p64, 0).run(CHECK_STEPS),
        FUSED_DENSE: Fused(p64, 1).run(CHECK_STEPS),
        LIGHTNING: run_lightning(CHECK_STEPS, ("trainer.precision=64-true",)),
    }
    worst = 0.0
    for name, o in others.items():
        diffs = [float((o.w - ref.w).norm() / ref.w.norm()), float((o.a - ref.a).norm() / ref.a.norm())]
        if name == LIGHTNING:  # the phase callback's final values: records of theta_{T-1}
            diffs += [rel(float(o.train[0]), float(ref.train[-1])), rel(float(o.test[0]), float(ref.test[-1]))]
        else:
            seen = torch.isfinite(o.test)
            diffs.append(float(((o.train - ref.train).abs() / ref.train.abs()).max()))
            diffs.append(float(((o.test[seen] - ref.test[seen]).abs() / ref.test[seen].abs()).max()))
        if max(diffs) > RTOL:
            raise AssertionError(f"{name}: differs from the autograd loop by {max(diffs):.3g} relative (float64)")
        worst = max(worst, *diffs)
    return worst


def bench_speed(p: Problem, reps: int, seconds: float) -> dict:
    sparse, dense = Fused(p, 0), Fused(p, 1)
    pool = [
        Contender(HAND_AUTOGRAD, lambda s: run_autograd(p, s)),
        Contender(HAND_MANUAL, lambda s: run_manual(p, s)),
        Contender(FUSED_SPARSE, sparse.run),
        Contender(FUSED_DENSE, dense.run),
        Contender(LIGHTNING, run_lightning),
    ]
    for c in pool:  # warm-up, and each contender's step count for about ``seconds``
        c.run(64)
        probe = 256 if c.name.startswith("hand") else 2048
        rate = probe / c.run(probe).seconds
        c.steps = max(256, int(round(seconds * rate / 256)) * 256)
    print("  steps per run: " + ", ".join(f"{c.name} {c.steps}" for c in pool), flush=True)
    for r in range(reps):
        for i in range(len(pool)):
            c = pool[(i + r) % len(pool)]
            c.outcomes.append(c.run(c.steps))
    rates = {c.name: [o.steps / o.seconds for o in c.outcomes] for c in pool}
    base = max((HAND_AUTOGRAD, HAND_MANUAL), key=lambda name: median(rates[name]))
    rows = []
    for c in pool:
        ratios = [x / b for x, b in zip(rates[c.name], rates[base], strict=True)]
        rows.append(
            {
                "path": c.name,
                "steps": c.steps,
                "steps_per_s": median(rates[c.name]),
                "ratio_vs_hand": median(ratios),
                "ratios": ratios,
                "steps_per_s_each": rates[c.name],
            }
        )
    evaluated = pool[2].outcomes[-1].test
    return {
        "baseline": base,
        "eval_every": sparse.kernel.every,
        "steps_per_call": sparse.per_call,
        "evaluated_share": float(torch.isfinite(evaluated).double().mean()),
        "rows": rows,
    }


# ---- 2. phase times at the defaults ---------------------------------------------------------------------------------
def full_run(eval_every: int, max_steps: int, tmp: Path) -> dict:
    cfg = two_layer_cfg(f"trainer.max_steps={max_steps}", "phases.stop_margin=0.01", f"output_dir={tmp}")
    built = build(cfg)
    built.module.eval_every = eval_every
    fit_s: list[float] = []
    with timed(L.Trainer, "fit", fit_s), contextlib.redirect_stdout(io.StringIO()):
        status, res = experiment_fit(cfg, "bench", built=built)
    assert status == 0, status
    return {
        "eval_every": built.module._loop.every,
        "t_overfit": res["t_overfit"],
        "t_generalize": res["t_generalize"],
        "steps_run": res["steps_run"],
        "seconds": fit_s[0],
        "steps_per_s": res["steps_run"] / fit_s[0],
    }


def bench_full(max_steps: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        sparse = full_run(0, max_steps, Path(d) / "sparse")
        dense = full_run(1, max_steps, Path(d) / "dense")
    same = (sparse["t_overfit"], sparse["t_generalize"]) == (dense["t_overfit"], dense["t_generalize"])
    if not same or sparse["t_generalize"] is None:
        raise AssertionError(f"phase times differ or t2 not reached: sparse {sparse}, every step {dense}")
    return {"sparse": sparse, "every_step": dense, "equal": same}


# ---- 3. vectorized seeds --------------------------------------------------------------------------------------------
def seeds_cfg(k: int, *overrides: str) -> DictConfig:
    """seeds=k, also before config.validate accepts several seeds for two_layer (then set after validation)."""
    try:
        return two_layer_cfg(f"seeds={k}", *overrides)
    except ConfigError:
        cfg = two_layer_cfg(*overrides)
        cfg.seeds = k
        return cfg


def fit_timed(cfg: DictConfig) -> tuple[float, dict]:
    fit_s: list[float] = []
    with timed(L.Trainer, "fit", fit_s), contextlib.redirect_stdout(io.StringIO()):
        status, res = experiment_fit(cfg, "bench", built=build(cfg))
    assert status == 0, status
    return fit_s[0], res


def bench_seeds(k: int, lr: float, steps: int, reps: int) -> dict:
    common = (f"optim.lr={lr}", f"trainer.max_steps={steps}")
    vec_s, seq_s = [], []
    members: list[tuple] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for r in range(reps):
            order = ("vec", "seq") if r % 2 == 0 else ("seq", "vec")
            for which in order:
                if which == "vec":
                    sec, res = fit_timed(seeds_cfg(k, *common, f"output_dir={tmp / f'vec{r}'}"))
                    vec_s.append(sec)
                    members = [(m["t_overfit"], m["t_generalize"]) for m in res["members"]]
                else:
                    total, singles = 0.0, []
                    for seed in range(k):
                        cfg = two_layer_cfg(*common, f"seed={seed}", f"output_dir={tmp / f'seq{r}-{seed}'}")
                        sec, res = fit_timed(cfg)
                        total += sec
                        singles.append((res["t_overfit"], res["t_generalize"]))
                    seq_s.append(total)
    if members != singles:
        raise AssertionError(f"member phase times differ from the sequential runs:\n{members}\n{singles}")
    reached = sum(t2 is not None for _, t2 in members)
    member_steps = k * steps
    ratios = [s / v for v, s in zip(vec_s, seq_s, strict=True)]
    return {
        "seeds": k,
        "lr": lr,
        "steps": steps,
        "steps_per_call_vectorized": auto_two_layer_steps_per_call(k, 50, 1000, 50, 1),
        "vectorized_s": vec_s,
        "sequential_s": seq_s,
        "vectorized_member_steps_per_s": member_steps / median(vec_s),
        "sequential_member_steps_per_s": member_steps / median(seq_s),
        "ratio_vectorized_vs_sequential": median(ratios),
        "ratios": ratios,
        "members_equal_sequential": True,
        "members_reaching_t2": reached,
        "member_times": members,
    }


# ---- output ---------------------------------------------------------------------------------------------------------
def format_speed(speed: dict, reps: int) -> str:
    lines = [
        f"== two-layer defaults (d=50, n=50, m=1000, eta=1e-4, lambda=0.05, N=500, float32), median of {reps} "
        f"interleaved repetitions; baseline: {speed['baseline']} ==",
        f"{'path':32}{'steps/s':>10}{'/hand':>8}   per-repetition ratios",
    ]
    for row in speed["rows"]:
        ratios = " ".join(f"{x:.2f}" for x in row["ratios"])
        lines.append(f"{row['path']:32}{row['steps_per_s']:>10.0f}{row['ratio_vs_hand']:>8.2f}   {ratios}")
    lines.append(
        f"fused GD loop: K = {speed['steps_per_call']} steps per call, test loss every s = {speed['eval_every']} steps "
        f"(automatic) and at the logging schedule: {speed['evaluated_share']:.1%} of steps evaluated"
    )
    return "\n".join(lines)


def format_full(full: dict) -> str:
    s, e = full["sparse"], full["every_step"]
    return "\n".join(
        [
            "== phase times at the defaults, experiment.fit until t2 + 1% ==",
            f"{'':28}{'t1':>8}{'t2':>10}{'steps':>10}{'steps/s':>10}",
            f"{'sparse eval (s=' + str(s['eval_every']) + ')':28}{s['t_overfit']:>8}{s['t_generalize']:>10}"
            f"{s['steps_run']:>10}{s['steps_per_s']:>10.0f}",
            f"{'every step':28}{e['t_overfit']:>8}{e['t_generalize']:>10}{e['steps_run']:>10}{e['steps_per_s']:>10.0f}",
            f"t1, t2 equal: {'yes' if full['equal'] else 'NO'}",
        ]
    )


def format_seeds(sd: dict) -> str:
    return "\n".join(
        [
            f"== {sd['seeds']} vectorized seeds vs {sd['seeds']} sequential runs (defaults, eta={sd['lr']:g}, "
            f"{sd['steps']} steps each; Trainer.fit time, median of {len(sd['ratios'])}) ==",
            f"vectorized (seeds={sd['seeds']}, K={sd['steps_per_call_vectorized']})  "
            f"{sd['vectorized_member_steps_per_s']:10.0f} member-steps/s   ({median(sd['vectorized_s']):.1f} s)",
            f"sequential ({sd['seeds']} runs)             {sd['sequential_member_steps_per_s']:10.0f} member-steps/s   "
            f"({median(sd['sequential_s']):.1f} s)",
            f"ratio vectorized / sequential: {sd['ratio_vectorized_vs_sequential']:.2f} "
            f"(per repetition: {' '.join(f'{x:.2f}' for x in sd['ratios'])})",
            f"per-member t1, t2 equal to the sequential runs: yes "
            f"({sd['members_reaching_t2']}/{sd['seeds']} reach t2); t2 of the members: "
            f"{[t2 for _, t2 in sd['member_times']]}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5, help="interleaved repetitions of the speed part (median reported)")
    ap.add_argument("--seconds", type=float, default=2.0, help="target seconds of one timed run per contender")
    ap.add_argument("--full-steps", type=int, default=250_000, help="max steps of the full runs (t2 + 1% ends them)")
    ap.add_argument("--skip-full", action="store_true", help="skip the full runs to t2 at the defaults")
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--seeds-lr", type=float, default=2e-3)
    ap.add_argument("--seeds-steps", type=int, default=9000)
    ap.add_argument("--seeds-reps", type=int, default=2, help="interleaved repetitions of the seeds part")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own choice)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    quiet()
    if args.threads:
        torch.set_num_threads(args.threads)
    setup = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": "cpu"}
    print(f"bench_two_layer: torch {setup['torch']}, {setup['threads']} threads, CPU", flush=True)
    started = time.perf_counter()
    load: dict[str, str] = {"start": loadavg()}
    p = load_problem()
    worst = check_same_work(load_problem("trainer.precision=64-true"))
    print(f"same work (float64, {CHECK_STEPS} steps): largest relative difference to autograd {worst:.2g}", flush=True)
    speed = bench_speed(p, args.reps, args.seconds)
    load["after speed"] = loadavg()
    print(format_speed(speed, args.reps) + "\n", flush=True)
    out = {"setup": setup, "same_work_max_rel": worst, "speed": speed}
    if not args.skip_full:
        out["full"] = bench_full(args.full_steps)
        load["after full runs"] = loadavg()
        print(format_full(out["full"]) + "\n", flush=True)
    out["seeds"] = bench_seeds(args.seeds, args.seeds_lr, args.seeds_steps, args.seeds_reps)
    load["end"] = loadavg()
    print(format_seeds(out["seeds"]) + "\n")
    fused = next(r for r in speed["rows"] if r["path"] == FUSED_SPARSE)
    met = "MET" if fused["ratio_vs_hand"] >= TARGET else "NOT MET"
    seeds_ratio = out["seeds"]["ratio_vectorized_vs_sequential"]
    seeds_met = "MET" if seeds_ratio >= 1 else "NOT MET"
    out["verdict"] = (
        f"fused (sparse eval) / hand-written >= {TARGET:g}: {met} ({fused['ratio_vs_hand']:.2f}); "
        f"vectorized / sequential member-steps/s >= 1: {seeds_met} ({seeds_ratio:.2f})"
    )
    out["loadavg"] = load
    print(out["verdict"])
    print("load average (1, 5, 15 min; running/total; last pid): " + "; ".join(f"{k}: {v}" for k, v in load.items()))
    print(f"(total {time.perf_counter() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
