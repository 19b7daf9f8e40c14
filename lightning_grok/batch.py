"""Batched sweep points: several runs that differ only in per-member scalars train as members of one GD loop.

Points of a sweep panel often differ only in numbers that enter each member's own data or its GD update:
the weight decay lambda (``optim.weight_decay``) and the step size eta (``optim.lr``), which enter Eq. (2)
as theta_{t+1} = (1 - eta lambda) theta_t - (eta/n) grad L_n(theta_t) per member, and the scalars that
only shape a member's sampled pieces (``seed``, nu^2 = ``model.init_scale``, ``data.label_noise_std``,
``data.teacher_norm``). ``fit_batch`` trains such points as the members of fused linear GD loops
(``gd_loops.LinearGDLoop`` / ``RowSpaceGDLoop`` with per-member eta and lambda), each member built from its
own point's config (``experiment.build``), so each member follows the iterates of its point run alone (the
row-space loop computes the same numbers; the parameter-space loop's update may round differently in the last
bit). On a CPU the points go into loops of at most ``gd_loops.CPU_GROUP_BYTES`` of per-step matrices (the
L2 cache; ``_groups``), all stepped through the same calls: what batching saves is each point's Lightning,
Trainer and per-call costs, not GEMM speed. Sweep agents use it with ``lightning-grok sweep --batch N`` and in
``reproduce`` (``--no-batch`` turns it off).

Per point it writes what ``experiment.fit`` writes, from the same code: ``config.yaml``, ``phases.json``
and ``curves.json`` (``PhaseTransitionCallback`` of the point, fed the point's columns of every chunk), the
table on stdout, and its own W&B run (unless disabled), whose curve rows are those a lone run logs, sent
when the point ends (one W&B run open at a time). A point's chunks of GD steps are those of its lone run
(same ``steps_per_call`` and ramp-up), so it stops after the same step: when both its t1 and t2 are found
and it ran ``phases.stop_margin`` * t2 steps past t2, when it diverges, or at ``trainer.max_steps``. A point
that stops leaves the batch; the loop is rebuilt over the remaining members (a QR of their features).

Not written: ``checkpoints/last.ckpt`` (a batch keeps its state in memory only). Fault behaviour: a stop
signal (SIGINT, SIGTERM) ends the batch at the next chunk boundary; the points already finished keep their
results, the unfinished ones get no ``phases.json`` (their directories hold only ``config.yaml``) and report
128 + N. Rerunning the same command (the sweep agent does with ``--retry-failed``) skips finished points and
trains the others from step 0. A crash (SIGKILL) leaves the same: finished points' files are written
atomically, unfinished ones have none.

Batchable (``batch_key``): full-batch ``gd`` on the squared loss of a linear model (ridge, random features)
in a ``*-true`` precision, one process on the CPU, no checkpoint in the run directory.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig

from lightning_grok.callbacks.phases import PhaseTransitionCallback
from lightning_grok.checkpoints import last_checkpoint
from lightning_grok.config import ConfigError, to_container
from lightning_grok.experiment import (
    EXIT_CONFIG,
    EXIT_DIVERGED,
    EXIT_IO,
    EXIT_OK,
    Built,
    _close_wandb,
    build,
    check_stability,
    phase_callback,
)
from lightning_grok.gd_loops import CPU_GROUP_BYTES, Chunk, _blocks_to_fill, eval_points
from lightning_grok.lightning_module import GrokkingModule
from lightning_grok.members import describe_population
from lightning_grok.plan import RunPlan
from lightning_grok.run_end import RunEnd, run_end
from lightning_grok.rundir import RunLock, check_identity, check_writable, resolve_output_dir, store_config
from lightning_grok.signals import SignalFlags
from lightning_grok.threads import CpuShare
from lightning_grok.trainer_checks import check_trainer
from lightning_grok.wandb_logger import make_logger

# keys whose values may differ between the points of one batch: they enter only a member's own pieces
PER_MEMBER_KEYS = (
    "seed",
    "optim.lr",
    "optim.weight_decay",
    "model.init_scale",
    "data.label_noise_std",
    "data.teacher_norm",
)
# keys that say only where a point's results go and how they are shown
PER_POINT_KEYS = ("output_dir", "wandb", "trainer.progress_bar")


def batch_key(cfg: DictConfig) -> str | None:
    """The config without its per-member and per-point keys (JSON): points with equal keys can share one GD loop.
    None when the point cannot join a batch (not fused linear GD on one CPU process, or a checkpoint to resume)."""
    t = cfg.trainer
    if (
        not RunPlan.from_config(cfg).loop.linear  # a fused linear GD loop: the plan's choice, not restated here
        or cfg.data.kind != "regression"
        or str(t.strategy) != "auto"
        or int(t.num_nodes) != 1
        or str(t.devices).strip() not in ("auto", "1")
        or not _on_cpu(str(t.accelerator))
        or not cfg.output_dir
    ):
        return None
    if last_checkpoint(Path(cfg.output_dir)).exists():
        return None  # an earlier lone attempt: ``fit`` resumes it
    container = to_container(cfg)
    for key in (*PER_MEMBER_KEYS, *PER_POINT_KEYS):
        *parents, leaf = key.split(".")
        node = container
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    return json.dumps(container, sort_keys=True, default=str)


def _on_cpu(accelerator: str) -> bool:
    """Whether a lone run with this ``trainer.accelerator`` trains on the CPU. Fork-safe: a sweep agent asks before
    forking, so CUDA is not initialised (``torch.cuda.is_available()`` would be); ``auto`` counts as a GPU where
    this torch has CUDA and the machine shows an NVIDIA device, or MPS is available."""
    if accelerator == "cpu":
        return True
    if accelerator != "auto" or torch.backends.mps.is_available():
        return False
    return not torch.backends.cuda.is_built() or not any(Path("/dev").glob("nvidia[0-9]*"))


class _Recorder:
    """Stands in for a point's loggers while the batch trains: keeps the rows ``PhaseTransitionCallback`` logs."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.rows.append(dict(metrics))


@dataclass
class _PointTrainer:
    """What ``PhaseTransitionCallback`` and ``wandb_theory`` read from a Trainer, for one point of a batch."""

    loggers: list = field(default_factory=list)
    is_global_zero: bool = True


@dataclass(eq=False)  # compared by identity
class _Point:
    cfg: DictConfig
    output_dir: Path
    config: dict
    built: Built
    phases: PhaseTransitionCallback
    logger: object | None
    trainer: _PointTrainer
    end: RunEnd | None = None  # why and where it ended (``run_end``)
    status: int | None = None  # exit status once ended
    result: dict = field(default_factory=dict)

    @property
    def module(self) -> GrokkingModule:
        return self.built.module


def _columns(chunk: Chunk, lo: int, hi: int, loop: GrokkingModule) -> Chunk:
    """The records of members lo..hi-1 of a chunk, with the test side evaluated where their lone run evaluates it.

    Under sparse evaluation (the gd_loops package docstring) a loop evaluates every step of a block where any of its
    members crosses a threshold; a lone run fills only its own members' blocks. The other filled rows are set back
    to NaN / not evaluated, so that what the point measures (its envelope checks included) is its lone run's."""
    evaluated = None if chunk.evaluated is None else chunk.evaluated[:, lo:hi]
    extras = {k: v[:, lo:hi] for k, v in chunk.extras.items()}
    test = chunk.test_loss[:, lo:hi]
    if evaluated is not None:
        gd = loop._loop
        steps = len(chunk)
        points = eval_points(chunk.start, steps, gd.every, loop.log_steps).to(test.device)
        values = {"loss": test[points]} | {k: v[points] for k, v in extras.items() if k.startswith("test_")}
        keep = torch.zeros(steps, dtype=torch.bool, device=test.device)
        keep[points] = True
        fill = _blocks_to_fill(points.cpu(), values, gd.ev)
        if fill is not None:
            keep[fill.to(test.device)] = True
        evaluated = evaluated & keep[:, None]
        nan = torch.tensor(math.nan, dtype=test.dtype, device=test.device)
        test = torch.where(evaluated, test, nan)
        extras = {k: torch.where(evaluated, v, nan) if k.startswith("test_") else v for k, v in extras.items()}
    return Chunk(chunk.start, chunk.train_loss[:, lo:hi], test, extras, evaluated)


def _loop_of(points: list[_Point]) -> GrokkingModule:
    """A module over every member of ``points`` whose linear GD loop steps each with its own point's eta, lambda."""
    first = points[0].module
    models, tensors, problems, lrs, wds = [], [], [], [], []
    for p in points:
        members = p.module.members
        models += members
        tensors += p.module.tensors
        problems += p.module.problems
        lrs += [float(p.cfg.optim.lr)] * len(members)
        wds += [float(p.cfg.optim.weight_decay)] * len(members)
    # every point keeps its lone run's K and logged steps (equal batch keys: equal plans but for the members)
    plan = first.plan.with_members(len(models))
    module = GrokkingModule(first.cfg, models, tensors, problems=problems, member_optim=(lrs, wds), plan=plan)
    module._build_loop()
    return module


def _prepare(cfg: DictConfig, config_name: str, stack: contextlib.ExitStack) -> _Point:
    """What ``experiment.fit`` does before training, for one point: checks, lock, data, theory, config.yaml."""
    output_dir = resolve_output_dir(cfg, config_name)
    check_trainer(cfg, output_dir)
    config = to_container(cfg)
    config["output_dir"] = str(output_dir)
    created = not output_dir.exists()
    check_writable(output_dir)
    print(f"lightning-grok: run directory {output_dir} (batched)")
    try:
        stack.enter_context(RunLock(output_dir))
        check_identity(output_dir, config)
        if last_checkpoint(output_dir).exists():
            raise ConfigError(f"{output_dir} holds a checkpoint: resume it with `fit`, not in a batch")
        built = build(cfg)
        check_stability(built)
        logger = make_logger(cfg, output_dir, config)
    except ConfigError:
        if created:
            shutil.rmtree(output_dir, ignore_errors=True)
        raise
    store_config(output_dir, config)
    phases = phase_callback(cfg, built, output_dir, config)
    trainer = _PointTrainer([_Recorder()] if logger is not None else [])
    point = _Point(cfg, output_dir, config, built, phases, logger, trainer)
    phases.on_fit_start(trainer, point.module)  # the dtype's epsilon
    return point


def _finish(point: _Point) -> None:
    """The point's phases.json, curves.json, table and W&B run (its recorded rows, then the results)."""
    module = point.module
    status = point.end.status if point.end is not None else "interrupted"
    populations = [{"population": describe_population(point.cfg, m, point.built.plan)} for m in point.built.members]
    try:
        result = point.phases.summarize(status=status, diverged_at=module.diverged_at, member_extras=populations)
        trainer = _PointTrainer([point.logger] if point.logger is not None else [])
        if point.logger is not None:
            from lightning_grok import wandb_theory

            for row in point.trainer.loggers[0].rows:
                wandb_theory.declare_curves(trainer, list(row))
                point.logger.log_metrics(row, step=None)
        point.phases.publish(trainer, result)
    except OSError as exc:
        print(f"lightning-grok: error: cannot write {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        point.status = EXIT_IO
        return
    finally:
        _close_wandb()
    point.result = result
    point.status = EXIT_DIVERGED if status == "diverged" else EXIT_OK


def fit_batch(cfgs: list[DictConfig], config_name: str = "run") -> list[tuple[int, dict]]:
    """Train the points ``cfgs`` (equal ``batch_key``) as one batched GD loop; per point (exit status, phases dict),
    the statuses of ``experiment.fit``: 0 completed, 1 a file could not be written, 2 rejected config (that point
    only; the others train), 3 diverged, 128 + N stopped by signal N (no results written for that point)."""
    keys = {batch_key(cfg) for cfg in cfgs}
    if None in keys or len(keys) != 1:
        raise ValueError(
            "fit_batch: every point needs its own output_dir, fused linear GD on one CPU process and no checkpoint, "
            "and the points may differ only in " + ", ".join(PER_MEMBER_KEYS)
        )
    if len({str(Path(cfg.output_dir).resolve()) for cfg in cfgs}) != len(cfgs):
        raise ValueError("fit_batch: two points share an output_dir")
    out: list[tuple[int, dict]] = [(EXIT_CONFIG, {})] * len(cfgs)
    # one process, one entry in the CPU ledger: torch's threads as for one lone run (``threads.CpuShare``)
    with SignalFlags() as flags, CpuShare(cfgs[0].trainer.threads) as share, contextlib.ExitStack() as stack:
        points: list[tuple[int, _Point]] = []
        for i, cfg in enumerate(cfgs):
            try:
                points.append((i, _prepare(cfg, config_name, stack)))
            except ConfigError as exc:
                print(f"lightning-grok: error: {exc}", file=sys.stderr)
            except OSError as exc:
                print(f"lightning-grok: error: cannot write {exc.filename or ''}: {exc}", file=sys.stderr)
                out[i] = (EXIT_IO, {})
        active = [p for _, p in points]
        if active:
            print(f"lightning-grok: {share.describe()}")
            _train(active, flags, share)
        for i, p in points:
            out[i] = (p.status if p.status is not None else 128 + int(flags.stop or 15), p.result)
    return out


def _member_bytes(module: GrokkingModule) -> int:
    """Numbers one member's GD step reads (bytes): M (n x n) in the row space, Phi (n x m) in parameter space."""
    n, (m, _) = module.tensors[0].n_train, module.model.trainable.shape
    size = next(module.model.parameters()).element_size()
    return (n * n if module.rowspace else n * m) * size


def _groups(active: list[_Point]) -> list[list[_Point]]:
    """Consecutive points in loops of at most ``CPU_GROUP_BYTES`` of per-step numbers (a point's members never
    split; a point over the budget is a loop of its own). One loop over every member is no faster per member-step
    on a CPU once its matrices leave the core's L2 cache (ridge defaults: 63,000 member-steps/s at 40 members
    against 69,600 at 5), while the per-call costs are shared either way."""
    groups: list[list[_Point]] = []
    used = 0
    for p in active:
        need = _member_bytes(p.module) * len(p.module.members)
        if groups and used + need <= CPU_GROUP_BYTES:
            groups[-1].append(p)
            used += need
        else:
            groups.append([p])
            used = need
    return groups


def _train(active: list[_Point], flags: SignalFlags, share: CpuShare | None = None) -> None:
    """GD for every active point, in the chunks of a lone run, each point leaving when it ends. Each call runs the
    batched loop of every group (``_groups``) for the same steps."""
    plan = active[0].module.plan  # every point's K and logged steps are those of its lone run (equal batch keys)
    gd_step = 0
    loops = [(_loop_of(group), group) for group in _groups(active)]
    while active and flags.stop is None:
        steps = plan.call_steps(gd_step)
        ended = []
        for loop, group in loops:
            loop.gd_step = gd_step
            chunk = loop.run_call(steps)  # writes the points' own models' parameters
            lo = 0
            for p in group:
                hi = lo + len(p.module.members)
                sub = _columns(chunk, lo, hi, loop)
                lo = hi
                module = p.module
                module.gd_step = gd_step + steps
                module._check_divergence(sub)
                p.phases.on_train_batch_end(p.trainer, module, {"chunk": sub}, None, 0)
                p.end = run_end(module.gd_step, module.max_steps, module.diverged_at, p.phases.transitions_done())
                if p.end is not None:
                    ended.append(p)
        gd_step += steps
        if share is not None:  # as RunControl between chunks: the threads follow the runs beside this one
            share.refresh()
        for p in ended:
            _finish(p)
            active.remove(p)
        if ended:  # a group that lost points is rebuilt over its remaining members (a QR of their features)
            kept = []
            for loop, group in loops:
                rest = [p for p in group if p not in ended]
                if rest:
                    kept.append((loop, group) if len(rest) == len(group) else (_loop_of(rest), rest))
            loops = kept


def config_of(args: list[str]) -> tuple[DictConfig, str]:
    """(config, config name) of the CLI arguments ``fit <config> key=value ...``, as ``cli.main`` builds them."""
    from lightning_grok.commands import parser as _parser
    from lightning_grok.config import load_config
    from lightning_grok.wandb_logger import run_name

    if not args or args[0] != "fit":
        raise ValueError(f"not a fit command: {args}")
    overrides = [a for a in args[1:] if "=" in a]
    parsed = _parser().parse_args([args[0]] + [a for a in args[1:] if "=" not in a])
    if parsed.print_config:
        raise ValueError(f"not a training command: {args}")
    cfg = load_config(parsed.config, list(parsed.overrides) + overrides, verb="fit")
    if cfg.wandb.name is None:
        cfg.wandb.name = run_name(cfg, list(parsed.overrides) + overrides)
    return cfg, Path(parsed.config).stem


def batch_main(argv: list[str]) -> int:
    """A sweep agent's batch child (``sweep.agent.Agent.run_batch``): ``argv`` = [status file, JSON list of the
    points' ``fit`` argument lists]. Trains them with ``fit_batch`` (the parent claimed points of equal
    ``batch_key``), writes their exit statuses (JSON list) to the status file, returns the worst of them."""
    from lightning_grok.atomic import atomic_write_text

    status_file, commands = Path(argv[0]), json.loads(argv[1])
    made = [config_of(args) for args in commands]
    results = fit_batch([cfg for cfg, _ in made], made[0][1])
    codes = [code for code, _ in results]
    atomic_write_text(status_file, json.dumps(codes))
    return max(codes, key=lambda c: (c != 0, c))
