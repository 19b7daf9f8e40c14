"""One run end to end: config -> data, model, system, theory -> Trainer.fit -> phases.json.

The theory is computed from the very tensors the run trains on (the sampled Phi, theta^(0), theta*),
never from a second sample.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from lightning_grok.callbacks.control import RunControl
from lightning_grok.callbacks.phases import PhaseTransitionCallback
from lightning_grok.callbacks.progress import StepProgressBar
from lightning_grok.checkpoints import AtomicCheckpointIO, last_checkpoint, resume_checkpoint
from lightning_grok.config import ConfigError, to_container
from lightning_grok.data.base import FullBatchDataModule, Tensors
from lightning_grok.models import build_model
from lightning_grok.rundir import RunLock, check_identity, check_writable, store_config
from lightning_grok.seeding import generator
from lightning_grok.signals import SignalFlags
from lightning_grok.system import GrokkingModule
from lightning_grok.theory.exact import LinearProblem
from lightning_grok.theory.report import Theory
from lightning_grok.tracking import make_logger, resolve_output_dir

SIGMA_ESTIMATE_MAX_WIDTH = 3000  # above this, lambda_min(Sigma) by eigendecomposition is too slow to do per run

EXIT_OK, EXIT_IO, EXIT_CONFIG, EXIT_DIVERGED = 0, 1, 2, 3


def param_dtype(cfg: DictConfig) -> torch.dtype:
    return torch.float64 if cfg.trainer.precision.startswith("64") else torch.float32


@dataclass
class Member:
    """One run's pieces: an ensemble (``seeds`` > 1) has one Member per seed."""

    model: torch.nn.Module
    datamodule: FullBatchDataModule
    problem: LinearProblem | None
    theory: Theory | None
    theory_note: str


@dataclass
class Built:
    cfg: DictConfig
    members: list[Member]
    module: GrokkingModule

    # member 0 stands for the run when there is one seed
    @property
    def model(self) -> torch.nn.Module:
        return self.members[0].model

    @property
    def datamodule(self) -> FullBatchDataModule:
        return self.members[0].datamodule

    @property
    def problem(self) -> LinearProblem | None:
        return self.members[0].problem

    @property
    def theory(self) -> Theory | None:
        return self.members[0].theory

    @property
    def theory_note(self) -> str:
        return self.members[0].theory_note


def build(cfg: DictConfig) -> Built:
    """Seeded construction of every piece; two calls with one config give bit-identical tensors.

    With ``seeds`` = K > 1, member i is the run of seed ``seed + i`` (its own data, initialization and
    teacher), and all K train in one batched kernel.
    """
    members = []
    for i in range(cfg.seeds):
        member_cfg = cfg if i == 0 else OmegaConf.merge(cfg, {"seed": cfg.seed + i})
        members.append(_build_member(member_cfg))
    module = GrokkingModule(cfg, [m.model for m in members], [m.datamodule.tensors for m in members])
    return Built(cfg, members, module)


def _build_member(cfg: DictConfig) -> Member:
    init_gen = generator(cfg.seed, "init")
    if cfg.data.kind == "regression":
        from lightning_grok.data.regression import RegressionDataModule, input_dim

        model = build_model(cfg, input_dim(cfg), 1, init_gen)
        features = getattr(model, "features", None)
        dm = RegressionDataModule(cfg, feature_map=features)
    else:
        from lightning_grok.data.modular import ModularDataModule

        dm = ModularDataModule(cfg)
        model = build_model(cfg, dm.tensors.x_train.shape[1], dm.tensors.out_dim, init_gen)
    model = model.to(param_dtype(cfg))
    problem, note = linear_problem(cfg, model, dm.tensors)
    theory = None
    if problem is not None:
        theory = Theory.from_problem(problem, cfg.phases.eps, cfg.phases.c, cfg.phases.delta)
    return Member(model, dm, problem, theory, note)


def linear_problem(cfg: DictConfig, model: torch.nn.Module, t: Tensors) -> tuple[LinearProblem | None, str]:
    """The run in feature space (float64), or None with the reason no closed form applies."""
    if not getattr(model, "linear_in_parameters", False):
        return None, "the model is not linear in its parameters: no closed form or bound applies"
    if cfg.optim.name != "gd" or (cfg.optim.batch_size is not None and cfg.optim.batch_size < t.n_train):
        return None, f"optim.name={cfg.optim.name} (mini-batch={cfg.optim.batch_size}): the theory covers full-batch GD"
    if t.cross_entropy:
        return None, "cross-entropy objective: the theory covers the squared loss"
    dtype = param_dtype(cfg)
    with torch.no_grad():
        feats = lambda x: model.features(x.to(dtype)).double().numpy()  # noqa: E731
        phi = feats(t.x_train)
        phi_test = feats(t.x_test) if t.x_test is not None else None
        sigma_min, source = None, "unknown"
        if t.sigma_scale is not None:
            sigma_min, source = t.sigma_scale, "exact (Sigma = I/m)"
        elif t.x_sigma is not None:
            m = phi.shape[1]
            if m > SIGMA_ESTIMATE_MAX_WIDTH and not t.sigma_is_exact:
                source = f"not estimated (m = {m} > {SIGMA_ESTIMATE_MAX_WIDTH})"
            else:
                f_sig = feats(t.x_sigma)
                sigma = f_sig.T @ f_sig / f_sig.shape[0]
                sigma_min = max(0.0, float(np.linalg.eigvalsh(sigma)[0]))
                source = (
                    "exact over the finite input population"
                    if t.sigma_is_exact
                    else f"estimated from {f_sig.shape[0]} fresh samples"
                )
        rows = [phi] + ([phi_test] if phi_test is not None else [])
        b2 = float(max(np.max(np.sum(r**2, axis=1)) for r in rows))
        theta0 = model.theta_init.to(dtype).double().numpy()
        y = t.y_train.to(dtype).double().numpy()
        y_test = None if t.y_test is None else t.y_test.to(dtype).double().numpy()
    theta_star = None if t.theta_star is None else t.theta_star.to(dtype).double().numpy()
    residual = None
    if theta_star is None and t.finite_population:
        theta_star, residual = realizing_teacher(np.vstack([phi, phi_test]), np.vstack([y, y_test]))
    problem = LinearProblem(
        phi=phi,
        y=y,
        theta0=theta0,
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay,
        theta0_variance=model.theta0_variance,
        theta_star=theta_star,
        sigma_scale=t.sigma_scale,
        phi_test=phi_test,
        y_test=y_test,
        realizability_residual=residual,
        sigma_min=sigma_min,
        sigma_min_source=source,
        gaussian_identity=t.gaussian_identity,
        noise_free=t.noise_free,
        b2=b2,
    )
    return problem, ""


def realizing_teacher(phi_all: np.ndarray, y_all: np.ndarray, rtol: float = 1e-8) -> tuple[np.ndarray | None, float]:
    """On a finite population, is Y in the span of the features? Returns (min-norm theta*, relative residual);
    theta* is None when the residual exceeds ``rtol`` (the task is not realizable by this feature map)."""
    sol, *_ = np.linalg.lstsq(phi_all, y_all, rcond=None)
    residual = float(np.linalg.norm(phi_all @ sol - y_all) / max(np.linalg.norm(y_all), 1e-300))
    return (sol if residual <= rtol else None), residual


def check_stability(built: Built) -> None:
    """Refuse eta above the GD stability limit 2/(lambda_max(Phi^T Phi)/n + lambda) unless allowed."""
    if built.theory is None or built.cfg.optim.allow_unstable:
        return
    limit = min(m.theory.quantities.stability_limit for m in built.members)
    if built.cfg.optim.lr >= limit:
        raise ConfigError(
            f"invalid value for 'optim.lr': {built.cfg.optim.lr!r} (allowed: below the GD stability limit "
            f"2/(lambda_max(Phi^T Phi)/n + lambda) = {limit:.6g} for this data; "
            "set optim.allow_unstable=true to run anyway)"
        )


def _devices(spec: str):
    spec = str(spec).strip()
    if spec == "auto":
        return "auto"
    if "," in spec:
        return [int(s) for s in spec.split(",") if s]
    return int(spec)


def make_trainer(cfg: DictConfig, output_dir: Path, callbacks: list, logger, plugins: list | None = None) -> L.Trainer:
    """The Trainer of a run: no epochs or batches to speak of (one epoch is one call of K GD steps), no default
    checkpoint callback (``RunControl`` and ``fit`` write ``checkpoints/last.ckpt``), atomic checkpoint files."""
    return L.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=_devices(cfg.trainer.devices),
        num_nodes=cfg.trainer.num_nodes,
        strategy=cfg.trainer.strategy,
        precision=None if any(isinstance(p, Precision) for p in plugins or []) else cfg.trainer.precision,
        plugins=[AtomicCheckpointIO(), *(plugins or [])],
        max_epochs=-1,
        max_steps=-1,
        logger=logger if logger is not None else False,
        callbacks=callbacks,
        enable_progress_bar=cfg.trainer.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(output_dir),
        enable_checkpointing=False,
        log_every_n_steps=1,
    )


def fit(cfg: DictConfig, config_name: str = "run", built: Built | None = None) -> tuple[int, dict]:
    """Train one run (``built``: the pieces, when the caller already built them from ``cfg``).

    Returns (exit status, phases dict): 0 completed, 1 a file could not be written (a full disk: earlier
    results stay intact), 3 diverged, 128 + N stopped by signal N (130 SIGINT, 143 SIGTERM; the checkpoint
    is saved and the same command resumes). Bad input raises ConfigError (exit 2) before anything is built:
    an ``output_dir`` that cannot be written, held by another live process, or holding another config's run.
    """
    output_dir = resolve_output_dir(cfg, config_name)
    config = to_container(cfg)
    config["output_dir"] = str(output_dir)
    check_writable(output_dir)
    rank_zero = rank_zero_only.rank == 0  # DDP ranks share the directory: rank 0 owns the lock and the config
    with SignalFlags() as flags, RunLock(output_dir) if rank_zero else contextlib.nullcontext():
        check_identity(output_dir, config)
        try:
            return _fit(cfg, config, output_dir, built, flags, rank_zero)
        except OSError as exc:
            where = f" {exc.filename}" if exc.filename else ""
            print(
                f"lightning-grok: error: cannot write{where}: {exc.strerror or exc}. Results written before "
                f"this are intact in {output_dir}; free space and run the same command again to resume.",
                file=sys.stderr,
            )
            return EXIT_IO, {}


def _fit(
    cfg: DictConfig, config: dict, output_dir: Path, built: Built | None, flags: SignalFlags, rank_zero: bool
) -> tuple[int, dict]:
    built = built or build(cfg)
    check_stability(built)
    resume = resume_checkpoint(output_dir, built.module.config_fingerprint, warn=_warn if rank_zero else _quiet)
    if rank_zero:
        store_config(output_dir, config)
    logger = make_logger(cfg, output_dir, config)
    phases = PhaseTransitionCallback(
        cfg.phases.eps,
        cfg.phases.c,
        cfg.phases.acc_threshold,
        [m.theory for m in built.members],
        output_dir,
        config,
        cfg.trainer.max_steps,
        cfg.wandb.log_points,
        cfg.phases.stop_margin,
        theory_note=built.theory_note,
    )
    control = RunControl(flags, last_checkpoint(output_dir), cfg.trainer.checkpoint_every)
    callbacks = [phases, control] + ([StepProgressBar(phases)] if cfg.trainer.progress_bar else [])
    trainer = make_trainer(cfg, output_dir, callbacks, logger)
    module = built.module
    try:
        with warnings.catch_warnings():
            # hints about DataLoader workers and logging intervals do not apply to full-batch GD
            warnings.filterwarnings("ignore", message=".*(does not have many workers|log_every_n_steps).*")
            try:
                trainer.fit(module, datamodule=built.datamodule, ckpt_path=resume)
            except SIGTERMException:
                # Lightning's own SIGTERM handler fired before RunControl took over, i.e. before any step of
                # this process: nothing new to save
                control.stopped_by = signal.SIGTERM
            else:
                trainer.save_checkpoint(last_checkpoint(output_dir))
        if control.stopped_by is not None:
            status = "interrupted"
        else:
            status = "diverged" if module.diverged_at is not None else "completed"
        result = phases.summarize(status=status, diverged_at=module.diverged_at)
        phases.publish(trainer, result)
    finally:
        _close_wandb()
    if control.stopped_by is not None:
        print(
            f"lightning-grok: stopped by {signal.Signals(control.stopped_by).name} at GD step {module.gd_step}; "
            f"checkpoint in {last_checkpoint(output_dir)}. Run the same command again to resume.",
            file=sys.stderr,
        )
        return 128 + int(control.stopped_by), result
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


def theory(cfg: DictConfig) -> dict:
    """Predictions only, no training: exact t1, t2, every bound with its hypotheses (of seed ``seed``)."""
    built = build(OmegaConf.merge(cfg, {"seeds": 1}))
    if built.theory is None:
        return {"exact": None, "bounds": {}, "note": built.theory_note}
    out = built.theory.predictions()
    limit = built.theory.quantities.stability_limit
    out["stability"] = {"lr": cfg.optim.lr, "limit": limit, "stable": cfg.optim.lr < limit}
    return out
