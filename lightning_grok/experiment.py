"""One run end to end: config -> data, model, system, theory -> Trainer.fit -> phases.json.

The theory is computed from the very tensors the run trains on (the sampled Phi, theta^(0), theta*),
never from a second sample.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from lightning_grok.callbacks.control import RunControl
from lightning_grok.callbacks.phases import PhaseTransitionCallback
from lightning_grok.callbacks.progress import StepProgressBar
from lightning_grok.checkpoints import last_checkpoint, resume_checkpoint
from lightning_grok.config import ConfigError, check_step_size, to_container
from lightning_grok.data.datamodule import FullBatchDataModule
from lightning_grok.exit_codes import (
    EXIT_CONFIG,  # noqa: F401 - importable from here, as before (batch.py)
    EXIT_DIVERGED,
    EXIT_IO,
    EXIT_OK,
    exit_for_signal,
)
from lightning_grok.lightning_module import GrokkingModule
from lightning_grok.members import Member, build_member, describe_population
from lightning_grok.plan import RunPlan
from lightning_grok.quiet import (  # noqa: F401 - importable from here, as before
    IRRELEVANT_WARNINGS,
    LIGHTNING_LOGGERS,
    quiet_third_party,
)
from lightning_grok.rundir import RunLock, check_identity, check_writable, resolve_output_dir, store_config
from lightning_grok.signals import SignalFlags
from lightning_grok.theory.exact import LinearProblem
from lightning_grok.theory.run_theory import RunTheory
from lightning_grok.threads import CpuShare
from lightning_grok.trainer_checks import check_trainer
from lightning_grok.trainer_factory import _devices, make_trainer  # noqa: F401 - importable from here, as before
from lightning_grok.wandb_logger import make_logger


@dataclass
class Built:
    cfg: DictConfig
    members: list[Member]
    module: GrokkingModule
    plan: RunPlan

    # member 0 stands for the run when there is one seed
    @property
    def model(self) -> torch.nn.Module:
        return self.members[0].model

    @property
    def datamodule(self) -> FullBatchDataModule:
        """The Lightning face of member 0's tensors (the other seeds' members travel inside the module)."""
        return FullBatchDataModule(self.members[0].tensors)

    @property
    def problem(self) -> LinearProblem | None:
        return self.members[0].problem

    @property
    def theory(self) -> RunTheory | None:
        return self.members[0].theory

    @property
    def theory_note(self) -> str:
        return self.members[0].theory_note


def build(cfg: DictConfig) -> Built:
    """Seeded construction of every piece; two calls with one config give bit-identical tensors.

    With ``seeds`` = K > 1, member i is the run of seed ``seed + i`` (its own data, initialization and
    teacher), and all K train in one batched GD loop. The run's plan (``plan.RunPlan``) is computed here, once, and
    read by the members' theory and the module; the module trains on the members' Phi (their ``LinearProblem``).
    """
    plan = RunPlan.from_config(cfg)
    members = []
    for i in range(cfg.seeds):
        member_cfg = cfg if i == 0 else OmegaConf.merge(cfg, {"seed": cfg.seed + i})
        members.append(build_member(member_cfg, plan))
    models, tensors, problems = ([getattr(m, key) for m in members] for key in ("model", "tensors", "problem"))
    module = GrokkingModule(cfg, models, tensors, problems=problems, plan=plan)
    return Built(cfg, members, module, plan)


def check_stability(built: Built) -> None:
    """``config.check_step_size`` against the smallest stability limit of the members (the only rule that needs
    the data: lambda_max(Phi^T Phi))."""
    if built.theory is not None:
        check_step_size(built.cfg, min(m.theory.quantities.stability_limit for m in built.members))


def phase_callback(cfg: DictConfig, built: Built, output_dir: Path, config: dict) -> PhaseTransitionCallback:
    """The run's phase callback: t1, t2, bounds and logging of ``built``'s members, from ``cfg``'s phases keys."""
    return PhaseTransitionCallback(
        cfg.phases.eps,
        cfg.phases.c,
        cfg.phases.acc_threshold,
        [m.theory for m in built.members],
        output_dir,
        config,
        stop_margin=built.plan.stop_margin,
        theory_note=built.theory_note,
        log_steps=built.plan.log_steps,
    )


def fit(cfg: DictConfig, config_name: str = "run", built: Built | None = None) -> tuple[int, dict]:
    """Train one run (``built``: the pieces, when the caller already built them from ``cfg``).

    Returns (exit status, phases dict): 0 completed, 1 a file could not be written (a full disk: earlier
    results stay intact), 3 diverged, 128 + N stopped by signal N (130 SIGINT, 143 SIGTERM; the checkpoint
    is saved and the same command resumes). Bad input raises ConfigError (exit 2) before anything is built:
    trainer settings this machine or launcher cannot run (``trainer_checks``: checked before the run directory
    is created or locked, so the corrected command runs on the same ``output_dir``), an ``output_dir`` that
    cannot be written, held by another live process, or holding another config's run.
    """
    output_dir = resolve_output_dir(cfg, config_name)
    check_trainer(cfg, output_dir)
    config = to_container(cfg)
    config["output_dir"] = str(output_dir)
    created = not output_dir.exists()
    check_writable(output_dir)
    if rank_zero_only.rank == 0:
        print(f"lightning-grok: run directory {output_dir}")
    rank_zero = rank_zero_only.rank == 0  # DDP ranks share the directory: rank 0 owns the lock and the config
    with (
        SignalFlags() as flags,
        RunLock(output_dir) if rank_zero else contextlib.nullcontext(),
        CpuShare(cfg.trainer.threads) as share,
    ):
        try:
            check_identity(output_dir, config)
            return _fit(cfg, config, output_dir, built, flags, rank_zero, share)
        except ConfigError:
            if created and rank_zero:  # refused before training: remove the directory this process made
                shutil.rmtree(output_dir, ignore_errors=True)
            raise
        except OSError as exc:
            where = f" {exc.filename}" if exc.filename else ""
            print(
                f"lightning-grok: error: cannot write{where}: {exc.strerror or exc}. Results written before "
                f"this are intact in {output_dir}; free space and run the same command again to resume.",
                file=sys.stderr,
            )
            return EXIT_IO, {}


def _fit(
    cfg: DictConfig,
    config: dict,
    output_dir: Path,
    built: Built | None,
    flags: SignalFlags,
    rank_zero: bool,
    share: CpuShare,
) -> tuple[int, dict]:
    if rank_zero:
        print(f"lightning-grok: {share.describe()}")
    built = built or build(cfg)
    check_stability(built)
    resume = resume_checkpoint(output_dir, built.module.config_fingerprint, warn=_warn if rank_zero else _quiet)
    logger = make_logger(cfg, output_dir, config)  # may refuse (exit 2): W&B online without credentials, ...
    if rank_zero:
        store_config(output_dir, config)
    phases = phase_callback(cfg, built, output_dir, config)
    control = RunControl(
        flags,
        last_checkpoint(output_dir),
        cfg.trainer.checkpoint_every,
        cfg.trainer.checkpoint_minutes,
        share,
        phases=phases,
    )
    callbacks = [phases, control] + ([StepProgressBar(phases)] if cfg.trainer.progress_bar else [])
    module = built.module
    if resume is not None and rank_zero:
        print(f"lightning-grok: resuming from {resume}")
    try:
        with quiet_third_party():
            trainer = make_trainer(cfg, output_dir, callbacks, logger)
            if trainer.world_size > 1 and rank_zero:
                print(f"lightning-grok: data-parallel over {trainer.world_size} processes ({cfg.trainer.strategy})")
            try:
                trainer.fit(module, datamodule=built.datamodule, ckpt_path=resume, weights_only=False)
            except SIGTERMException:
                # Lightning's own SIGTERM handler fired before RunControl took over, i.e. before any step of
                # this process: nothing new to save
                control.stop_by_signal(signal.SIGTERM, module.gd_step)
            else:
                trainer.save_checkpoint(last_checkpoint(output_dir), weights_only=False)
        # the end RunControl decided (``run_end``); a fit Lightning ended for another reason did not finish
        status = control.end.status if control.end is not None else "interrupted"
        populations = [{"population": describe_population(cfg, member, built.plan)} for member in built.members]
        result = phases.summarize(status=status, diverged_at=module.diverged_at, member_extras=populations)
        phases.publish(trainer, result)
    finally:
        _close_wandb()
    if control.stopped_by is not None:
        print(
            f"lightning-grok: stopped by {signal.Signals(control.stopped_by).name} at GD step {module.gd_step}; "
            f"checkpoint in {last_checkpoint(output_dir)}. Run the same command again to resume.",
            file=sys.stderr,
        )
        return exit_for_signal(control.stopped_by), result
    return (EXIT_DIVERGED if status == "diverged" else EXIT_OK), result


def _warn(message: str) -> None:
    print(message, file=sys.stderr)


def _quiet(message: str) -> None:
    pass


def _close_wandb() -> None:
    """Always close the W&B run, so one failed run in a sweep process does not poison the next."""
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    except Exception:  # noqa: BLE001 - closing must never mask the run's own error
        pass
