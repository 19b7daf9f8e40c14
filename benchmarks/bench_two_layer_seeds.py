"""Two-layer ensembles against sequential runs at the same thread count (CPU), and the fraction of fp32 peak.

Command (from the repository root; about 10 minutes on 2 idle cores, longer under load):

    .venv/bin/python benchmarks/bench_two_layer_seeds.py --json seeds.json
    .venv/bin/python benchmarks/bench_two_layer_seeds.py --skip-fit     # the GD loops only (about 3 minutes)

Problem: configs/two_layer.yaml, the paper's Sec. 5.3 defaults (d = n = 50, m = 1000, k = 1, eta = 1e-4, lambda =
0.05, 500 test points, float32), member i with ``seed=i`` (its own data, test set and initialization).

1. GD loops (no Lightning), for each thread count in ``--threads`` (torch.set_num_threads, default 1 and 2):
   * ``sequential``: K single-run ``TwoLayerGDLoop``s one after another, each ``--steps`` steps in calls of the
     single run's automatic size, test loss sparse (automatic s) and at the configured run's logging schedule;
   * ``ensemble``: one K-member ``TwoLayerGDLoop`` (calls of the ensemble's automatic size), members stepped one
     at a time, shared among the torch threads (one intra-op thread each);
   * ``sequential, before`` and ``ensemble, before``: the same with ``TwoLayerGDLoop`` as it was at ``--before``
     (a git revision: four (n, m) buffers, members one after another on all intra-op threads), loaded from git.
   Interleaved (the contenders rotate each repetition), median of ``--reps``. Every member's final W and a must
   equal its sequential run's bit for bit (the script fails otherwise).
2. Lightning (unless ``--skip-fit``): ``experiment.fit`` with ``seeds=K`` against K sequential fits with ``seed=0..K-1``
   (Trainer.fit time only), eta = ``--fit-lr`` (2e-3: t2 about 7,900 steps) for ``--fit-steps`` steps, both at each
   thread count, interleaved, median of ``--fit-reps``; every member's t1 and t2 must equal its sequential run's.

Member-steps/s: K x steps / seconds. Ratios (ensemble / sequential, same thread count) are medians of the
per-repetition ratios. FLOP rate: a step is n m (2d + 3k) multiply-adds (2 flops each); with evaluation, each
evaluated step adds N m (d + k). The peak is ``--peak-per-core`` GFLOP/s (default: AMD EPYC family 25 model 17,
Zen 4: two 256-bit FMA pipes, 32 fp32 flops a cycle, at the 2.6 GHz TSC clock = 83.2) times the threads; the
script also measures a 2048^3 sgemm on one thread as the attainable rate. /proc/loadavg is recorded throughout.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from _common import median, quiet, timed
from omegaconf import DictConfig

from lightning_grok.config import load_config
from lightning_grok.experiment import build
from lightning_grok.experiment import fit as experiment_fit
from lightning_grok.gd_loops import EvalSpec, TwoLayerGDLoop
from lightning_grok.member_phases import log_schedule
from lightning_grok.resources import auto_two_layer_steps_per_call

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "two_layer.yaml"
BEFORE = "73c4a58"  # main before the threaded member groups and the two-buffer step


def two_layer_cfg(*overrides: str) -> DictConfig:
    base = ["trainer.accelerator=cpu", "trainer.devices=1", "trainer.progress_bar=false", "wandb.mode=disabled"]
    return load_config(CONFIG, [*base, *overrides])


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "unknown"


def old_loop_class(rev: str) -> type:
    """``TwoLayerGDLoop`` of git revision ``rev``, imported as its own module: lightning_grok/gd_loops.py before the
    split into a package, else lightning_grok/gd_loops/two_layer.py (whose imports of its sibling modules then load
    the working tree's ``records`` and ``sparse_eval``)."""
    one_module = subprocess.run(
        ["git", "cat-file", "-e", f"{rev}:lightning_grok/gd_loops.py"], cwd=REPO, capture_output=True, check=False
    )
    old = "lightning_grok/gd_loops.py" if one_module.returncode == 0 else "lightning_grok/gd_loops/two_layer.py"
    source = subprocess.run(
        ["git", "show", f"{rev}:{old}"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "gd_loops_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("gd_loops_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.TwoLayerGDLoop


class Members:
    """The K members' tensors at the defaults, stacked (B, ...), as ``experiment.build`` makes them."""

    def __init__(self, k: int):
        parts = []
        for seed in range(k):
            cfg = two_layer_cfg(f"seed={seed}")
            built = build(cfg)
            t, model = built.datamodule.tensors, built.model
            dt = model.weight.dtype
            parts.append((t.x_train.to(dt), t.y_train.to(dt), t.x_test.to(dt), t.y_test.to(dt), model.weight, model.a))
        self.x, self.y, self.x_test, self.y_test, self.w0, self.a0 = (
            torch.stack([p[i].detach() for p in parts]).contiguous() for i in range(6)
        )
        self.lr, self.wd = float(cfg.optim.lr), float(cfg.optim.weight_decay)
        self.c, self.eps = float(cfg.phases.c), float(cfg.phases.eps)
        self.wanted = log_schedule(int(cfg.trainer.max_steps), int(cfg.phases.log_points))
        self.k = k

    def loop(self, cls: type, rows: slice) -> tuple[TwoLayerGDLoop, int]:
        b = len(range(self.k)[rows])
        _, n, d = self.x.shape
        m = self.w0.shape[1]
        per_call = auto_two_layer_steps_per_call(b, n, m, d, 1)
        ev = EvalSpec(x_test=self.x_test[rows], y_test=self.y_test[rows], c=self.c, surrogate_eps=self.eps)
        return cls(self.x[rows], self.y[rows], m, self.lr, self.wd, n, ev, per_call), per_call

    def run(self, loop: TwoLayerGDLoop, per_call: int, rows: slice, steps: int) -> tuple[torch.Tensor, ...]:
        w, a = self.w0[rows].clone(), self.a0[rows].clone()
        evaluated = 0
        done = 0
        while done < steps:
            size = min(per_call, steps - done)
            chunk = loop.run(w, a, done, size, self.wanted)
            evaluated += int(torch.isfinite(chunk.test_loss).sum())
            done += size
        return w, a, evaluated


def bench_loops(k: int, steps: int, reps: int, threads: list[int], before: str | None) -> dict:
    mem = Members(k)
    _, n, d = mem.x.shape
    m, n_test = mem.w0.shape[1], mem.x_test.shape[1]
    classes = {"": TwoLayerGDLoop}
    if before:
        classes[", before"] = old_loop_class(before)
    loops = {}
    for tag, cls in classes.items():
        loops[f"sequential{tag}"] = [mem.loop(cls, slice(i, i + 1)) for i in range(k)]
        loops[f"ensemble{tag}"] = [mem.loop(cls, slice(0, k))]

    def contender(name: str, steps: int) -> tuple[float, torch.Tensor, torch.Tensor, int]:
        start = time.perf_counter()
        if name.startswith("ensemble"):
            loop, per_call = loops[name][0]
            w, a, ev = mem.run(loop, per_call, slice(0, k), steps)
        else:
            outs = [mem.run(loop, per_call, slice(i, i + 1), steps) for i, (loop, per_call) in enumerate(loops[name])]
            w, a = torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])
            ev = sum(o[2] for o in outs)
        return time.perf_counter() - start, w, a, ev

    names = list(loops)
    out: dict = {"steps": steps, "members": k, "contenders": names, "by_threads": {}}
    flops_step = 2 * n * m * (2 * d + 3 * 1)
    flops_eval = 2 * n_test * m * (d + 1)
    for t in threads:
        torch.set_num_threads(t)
        for name in names:  # warm-up
            contender(name, 64)
        seconds: dict[str, list[float]] = {name: [] for name in names}
        evals: dict[str, int] = {}
        finals: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        load = [loadavg()]
        for r in range(reps):
            for i in range(len(names)):
                name = names[(i + r) % len(names)]
                sec, w, a, ev = contender(name, steps)
                seconds[name].append(sec)
                evals[name], finals[name] = ev, (w, a)
        load.append(loadavg())
        ref_w, ref_a = finals["sequential"]
        for name, (w, a) in finals.items():
            if not (torch.equal(w, ref_w) and torch.equal(a, ref_a)):
                raise AssertionError(f"{name}: final W, a differ from the sequential runs' ({t} threads)")
        rows = {}
        peak = PEAK_PER_CORE * t
        for name in names:
            rates = [k * steps / s for s in seconds[name]]
            rate = median(rates)
            gflops = rate * flops_step / 1e9
            gflops_eval = (rate * flops_step + evals[name] / median(seconds[name]) * flops_eval) / 1e9
            rows[name] = {
                "member_steps_per_s": rate,
                "member_steps_per_s_each": rates,
                "seconds": seconds[name],
                "gflops_steps": gflops,
                "gflops_with_eval": gflops_eval,
                "peak_fraction_steps": gflops / peak,
                "peak_fraction_with_eval": gflops_eval / peak,
                "evaluated_share": evals[name] / (k * steps),
            }
        ratios = {}
        for tag in classes:
            per_rep = [s / e for s, e in zip(seconds[f"sequential{tag}"], seconds[f"ensemble{tag}"], strict=True)]
            ratios[f"ensemble{tag} / sequential{tag}"] = {"median": median(per_rep), "each": per_rep}
        if before:
            for what in ("sequential", "ensemble"):
                per_rep = [b / s for s, b in zip(seconds[what], seconds[f"{what}, before"], strict=True)]
                ratios[f"{what} / {what}, before"] = {"median": median(per_rep), "each": per_rep}
        out["by_threads"][str(t)] = {"rows": rows, "ratios": ratios, "loadavg": load, "peak_gflops": peak}
    return out


def fit_timed(cfg: DictConfig) -> tuple[float, dict]:
    fit_s: list[float] = []
    with timed(L.Trainer, "fit", fit_s), contextlib.redirect_stdout(io.StringIO()):
        status, res = experiment_fit(cfg, "bench", built=build(cfg))
    assert status == 0, status
    return fit_s[0], res


def bench_fit(k: int, lr: float, steps: int, reps: int, threads: list[int]) -> dict:
    common = (f"optim.lr={lr}", f"trainer.max_steps={steps}")
    out: dict = {"members": k, "lr": lr, "steps": steps, "by_threads": {}}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for t in threads:
            torch.set_num_threads(t)
            vec_s, seq_s, load = [], [], [loadavg()]
            members, singles = [], []
            for r in range(reps):
                for which in ("vec", "seq") if r % 2 == 0 else ("seq", "vec"):
                    if which == "vec":
                        sec, res = fit_timed(two_layer_cfg(f"seeds={k}", *common, f"output_dir={tmp / f'v{t}-{r}'}"))
                        vec_s.append(sec)
                        members = [(mb["t_overfit"], mb["t_generalize"]) for mb in res["members"]]
                    else:
                        total, singles = 0.0, []
                        for seed in range(k):
                            cfg = two_layer_cfg(*common, f"seed={seed}", f"output_dir={tmp / f's{t}-{r}-{seed}'}")
                            sec, res = fit_timed(cfg)
                            total += sec
                            singles.append((res["t_overfit"], res["t_generalize"]))
                        seq_s.append(total)
            load.append(loadavg())
            if members != singles:
                raise AssertionError(f"member phase times differ from the sequential runs:\n{members}\n{singles}")
            ratios = [s / v for v, s in zip(vec_s, seq_s, strict=True)]
            out["by_threads"][str(t)] = {
                "ensemble_s": vec_s,
                "sequential_s": seq_s,
                "ensemble_member_steps_per_s": k * steps / median(vec_s),
                "sequential_member_steps_per_s": k * steps / median(seq_s),
                "ratio_ensemble_vs_sequential": median(ratios),
                "ratios": ratios,
                "members_equal_sequential": True,
                "members_reaching_t2": sum(t2 is not None for _, t2 in members),
                "member_times": members,
                "loadavg": load,
            }
    return out


def sgemm_rate() -> float:
    """GFLOP/s of a 2048^3 float32 matrix product on one thread (median of 5)."""
    torch.set_num_threads(1)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    c = torch.empty(2048, 2048)
    torch.mm(a, b, out=c)
    rates = []
    for _ in range(5):
        start = time.perf_counter()
        torch.mm(a, b, out=c)
        rates.append(2 * 2048**3 / (time.perf_counter() - start) / 1e9)
    return median(rates)


def report_loops(out: dict) -> str:
    lines = []
    loops = out["loops"]
    lines.append(
        f"== GD loops: {loops['members']} members x {loops['steps']} steps, defaults (float32), median of "
        f"{out['setup']['reps']} interleaved repetitions; peak {PEAK_PER_CORE:.1f} GFLOP/s a core =="
    )
    for t, part in loops["by_threads"].items():
        lines.append(f"-- {t} thread(s), load {part['loadavg'][0]} .. {part['loadavg'][1]}")
        lines.append(f"{'contender':22}{'member-steps/s':>16}{'GFLOP/s':>9}{'of peak':>9}{'with eval':>11}")
        for name, row in part["rows"].items():
            lines.append(
                f"{name:22}{row['member_steps_per_s']:>16.0f}{row['gflops_steps']:>9.1f}"
                f"{row['peak_fraction_steps']:>9.1%}{row['peak_fraction_with_eval']:>11.1%}"
            )
        for name, ratio in part["ratios"].items():
            each = " ".join(f"{x:.2f}" for x in ratio["each"])
            lines.append(f"  {name}: {ratio['median']:.2f}  ({each})")
    return "\n".join(lines)


def report_fit(fit: dict) -> str:
    lines = [
        f"== experiment.fit: seeds={fit['members']} vs {fit['members']} sequential fits, eta={fit['lr']:g}, "
        f"{fit['steps']} steps (Trainer.fit time) =="
    ]
    for t, part in fit["by_threads"].items():
        each = " ".join(f"{x:.2f}" for x in part["ratios"])
        lines.append(
            f"-- {t} thread(s): ensemble {part['ensemble_member_steps_per_s']:.0f}, sequential "
            f"{part['sequential_member_steps_per_s']:.0f} member-steps/s, ratio "
            f"{part['ratio_ensemble_vs_sequential']:.2f} ({each}); every member's t1, t2 equal its run's; "
            f"{part['members_reaching_t2']}/{fit['members']} reach t2; "
            f"load {part['loadavg'][0]} .. {part['loadavg'][1]}"
        )
    return "\n".join(lines)


PEAK_PER_CORE = 83.2


def main(argv: list[str] | None = None) -> int:
    global PEAK_PER_CORE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=16, help="members K")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=1000, help="GD steps per member of a GD-loop contender")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--before", default=BEFORE, help="git revision of the 'before' loop ('' to skip)")
    ap.add_argument("--skip-fit", action="store_true")
    ap.add_argument("--fit-lr", type=float, default=2e-3)
    ap.add_argument("--fit-steps", type=int, default=9000)
    ap.add_argument("--fit-reps", type=int, default=2)
    ap.add_argument("--peak-per-core", type=float, default=PEAK_PER_CORE, help="fp32 GFLOP/s of one core")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    PEAK_PER_CORE = args.peak_per_core
    quiet()
    started = time.perf_counter()
    out: dict = {
        "setup": {
            "torch": torch.__version__,
            "threads": args.threads,
            "reps": args.reps,
            "peak_per_core_gflops": PEAK_PER_CORE,
            "before": args.before,
        },
        "loadavg": {"start": loadavg()},
    }
    out["sgemm_2048_one_thread_gflops"] = sgemm_rate()
    print(f"2048^3 sgemm, one thread: {out['sgemm_2048_one_thread_gflops']:.1f} GFLOP/s", flush=True)
    out["loops"] = bench_loops(args.seeds, args.steps, args.reps, args.threads, args.before or None)
    out["loadavg"]["after loops"] = loadavg()
    print(report_loops(out), flush=True)
    if not args.skip_fit:
        out["fit"] = bench_fit(args.seeds, args.fit_lr, args.fit_steps, args.fit_reps, args.threads)
        out["loadavg"]["end"] = loadavg()
        print(report_fit(out["fit"]), flush=True)
    out["seconds"] = time.perf_counter() - started
    print(
        "load average (1, 5, 15 min; running/total; last pid): "
        + "; ".join(f"{k}: {v}" for k, v in out["loadavg"].items())
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
