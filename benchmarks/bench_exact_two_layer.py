"""The two-layer network's exact population loss (data.population=exact) against the 500-point test set (CPU).

Command (from the repository root; about a minute on 2 shared cores):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_exact_two_layer.py [--json out.json] [--reps 7]

Problem: configs/paper/fig4_two_layer.yaml, the paper's Sec. 5.3 defaults (d = n = 50, m = 1000, eta = 1e-4,
lambda = 0.05, zero teacher, float32), once with ``data.population=exact`` (the arc-cosine closed form,
theory/two_layer_population.py, float64) and once with ``data.population=sampled`` (its 500 test points), each
through ``experiment.build`` and the module's own ``TwoLayerGDLoop`` (no Lightning around it). Interleaved in one
process (exact, test set, then the other order), medians over ``--reps`` repetitions:

1. Cost per evaluation: the loop's ``_evaluate`` on the initial parameters, in ms and in steps (against a step's
   time, measured as the loop's time per step with evaluations only at the two ends of each call, those two
   subtracted); with the cost model's prediction (``_two_layer_eval_cost`` / the step's n m (2d + 3k)) and the
   ELEMENT_COST that would make the prediction match.
2. The whole loop's steps/s: ``run`` in calls of the automatic K steps, each kind with its automatic s and the
   steps the configured run's loggers want (``wanted``), over ``--steps`` steps starting at step ``--start`` (past
   the densely logged first steps; the parameters start from the initialization, no crossing of c occurs).
3. Precision: L at the initialization and after the timed steps, evaluated in float64 (what the loop does) and in
   float32 throughout; the relative difference is what a float32 evaluation would have cost.

The load average (/proc/loadavg) is recorded before and after: other processes share the cores.

Measured (``--reps 7``, one thread, load average 5.9-6.9 on 2 cores from other processes, so absolute times are
about 4x those of an idle core): an evaluation 40.7 ms exact against 3.3 ms on the 500-point test set (12x;
22x in a 3-repetition run at load 7.6), i.e. 42 steps against 3.4 (cost model: 33 and 5.0), s = 133 against 20;
the whole loop 715 against 873 steps/s, exact / test set 0.77 (per repetition 0.57-1.08); L in float32 within
1.8e-7 relative of float64. End to end (Fig. 1 right, seeds batched, to t2 + 5%, 20 seeds in runs of 5, 5 and
10): 2,850-2,990 member-steps per CPU second with the exact loss against 3,520-3,580 with the test set (0.80-0.85).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from _common import quiet

import lightning_grok.theory.two_layer_population as tlp
from lightning_grok.config import load_config
from lightning_grok.experiment import build
from lightning_grok.gd_loops import _two_layer_eval_cost

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "paper" / "fig4_two_layer.yaml"


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "unknown"


class Side:
    """One population mode: the built module's GD loop and the initial parameters (in the run's dtype)."""

    def __init__(self, population: str, overrides: list[str]):
        base = ["trainer.accelerator=cpu", "trainer.progress_bar=false", "wandb.mode=disabled"]
        cfg = load_config(CONFIG, [*base, f"data.population={population}", *overrides])
        built = build(cfg)
        self.module = built.module
        self.module._build_loop()
        self.loop = self.module._loop
        dtype = self.module.model.weight.dtype
        self.w0 = self.module.model.weight.detach().to(dtype)[None].clone()
        self.a0 = self.module.model.a.detach().to(dtype)[None].clone()
        self.name = population
        self.cfg = cfg

    def evaluate_ms(self, w: torch.Tensor, a: torch.Tensor, count: int) -> float:
        gr = self.loop.groups[0]
        start = time.perf_counter()
        for _ in range(count):
            self.loop._evaluate(gr, w, a)
        return (time.perf_counter() - start) / count * 1e3

    def run(self, start: int, steps: int, wanted) -> tuple[float, torch.Tensor, torch.Tensor]:
        """Seconds for ``steps`` GD steps from the initialization, in calls of the module's K steps."""
        w, a = self.w0.clone(), self.a0.clone()
        per_call = self.module.steps_per_call
        t0 = time.perf_counter()
        done = 0
        while done < steps:
            k = min(per_call, steps - done)
            self.loop.run(w, a, start + done, k, wanted)
            done += k
        return time.perf_counter() - t0, w, a


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--steps", type=int, default=6672, help="GD steps per timed loop run (2 calls of K = 3336)")
    ap.add_argument("--start", type=int, default=20_000, help="step index the timed runs start at")
    ap.add_argument("--evals", type=int, default=20, help="evaluations per timing of the evaluation")
    ap.add_argument("--json", type=Path)
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. model.width=500")
    args = ap.parse_args(argv)
    quiet()
    load = {"start": loadavg()}
    sides = [Side("exact", args.overrides), Side("sampled", args.overrides)]
    cfg = sides[0].cfg
    n, d, m = int(cfg.data.n_train), int(cfg.data.input_dim), int(cfg.model.width)
    step_macs = n * m * (2 * d + 3)
    print(
        f"bench_exact_two_layer: torch {torch.__version__}, {torch.get_num_threads()} threads; n={n} d={d} m={m} "
        f"N={cfg.data.n_test} {cfg.trainer.precision}; K={sides[0].module.steps_per_call}; load {load['start']}",
        flush=True,
    )
    wanted = sides[0].module.log_steps
    eval_ms: dict[str, list[float]] = {s.name: [] for s in sides}
    loop_s: dict[str, list[float]] = {s.name: [] for s in sides}
    bare_s: dict[str, list[float]] = {s.name: [] for s in sides}
    for s in sides:  # warm-up
        s.evaluate_ms(s.w0, s.a0, 2)
        s.run(args.start, 256, wanted)
    final = {}
    for r in range(args.reps):
        order = sides if r % 2 == 0 else sides[::-1]
        for s in order:
            eval_ms[s.name].append(s.evaluate_ms(s.w0, s.a0, args.evals))
            sec, w, a = s.run(args.start, args.steps, wanted)
            loop_s[s.name].append(sec)
            final[s.name] = (w, a)
            every = s.loop.every
            s.loop.every = 10**9  # evaluations only at each call's first and last step (and none wanted)
            bare_s[s.name].append(s.run(args.start, args.steps, None)[0])
            s.loop.every = every
    load["end"] = loadavg()
    med = statistics.median
    calls = -(-args.steps // sides[0].module.steps_per_call)
    rows = {}
    for s in sides:
        e_ms = med(eval_ms[s.name])
        step_ms = (med(bare_s[s.name]) * 1e3 - 2 * calls * e_ms) / args.steps
        predicted = _two_layer_eval_cost(s.loop.ev, m, d, 1) / step_macs
        rows[s.name] = {
            "eval_ms": e_ms,
            "eval_ms_each": eval_ms[s.name],
            "step_ms": step_ms,
            "eval_in_steps": e_ms / step_ms,
            "eval_in_steps_predicted": predicted,
            "eval_every": s.loop.every,
            "loop_steps_per_s": args.steps / med(loop_s[s.name]),
            "loop_steps_per_s_each": [args.steps / x for x in loop_s[s.name]],
        }
    ex, ts = rows["exact"], rows["sampled"]
    entries = m * (m + min(m, tlp.ROW_BLOCK)) / 2
    element_fit = (ex["eval_in_steps"] * step_macs - entries * d - m * m) / entries
    ratio_each = [x / y for x, y in zip(ex["loop_steps_per_s_each"], ts["loop_steps_per_s_each"], strict=True)]
    # precision: float64 evaluation (the loop's) against float32 throughout
    exact_pop = sides[0].loop.ev.two_layer
    prec = {}
    for label, (w, a) in (("init", (sides[0].w0, sides[0].a0)), ("after", final["exact"])):
        l64 = float(exact_pop.loss(w.double(), a.double()))
        tlp.ACCUMULATE = torch.float32
        try:
            l32 = float(exact_pop.loss(w.float(), a.float()))
        finally:
            tlp.ACCUMULATE = torch.float64
        prec[label] = {"float64": l64, "float32": l32, "rel_diff": abs(l32 - l64) / l64}
    out = {
        "config": str(CONFIG.relative_to(REPO)),
        "overrides": args.overrides,
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "start": args.start,
        "reps": args.reps,
        "rows": rows,
        "loop_ratio_exact_vs_sampled": med(ratio_each),
        "loop_ratio_each": ratio_each,
        "element_cost_fit": element_fit,
        "element_cost_model": tlp.ELEMENT_COST,
        "precision": prec,
        "loadavg": load,
    }
    print(f"{'population':12}{'eval ms':>9}{'= steps':>9}{'model':>8}{'s':>6}{'step ms':>9}{'loop steps/s':>14}")
    for name, r in rows.items():
        print(
            f"{name:12}{r['eval_ms']:>9.2f}{r['eval_in_steps']:>9.1f}{r['eval_in_steps_predicted']:>8.1f}"
            f"{r['eval_every']:>6}{r['step_ms']:>9.4f}{r['loop_steps_per_s']:>14.0f}"
        )
    print(
        f"exact / test-set evaluation: {ex['eval_ms'] / ts['eval_ms']:.1f}x the time; whole loop exact / sampled "
        f"steps/s {out['loop_ratio_exact_vs_sampled']:.3f} (per repetition "
        + " ".join(f"{x:.2f}" for x in ratio_each)
        + ")"
    )
    print(f"ELEMENT_COST fitted to this machine: {element_fit:.0f} (model: {tlp.ELEMENT_COST})")
    for label, p in prec.items():
        print(f"L at {label}: float64 {p['float64']:.10g}, float32 {p['float32']:.10g}, rel diff {p['rel_diff']:.2g}")
    print(f"load average: start {load['start']}; end {load['end']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
