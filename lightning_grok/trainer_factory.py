"""The run's Lightning ``Trainer``, built from the ``trainer.*`` keys in one place.

``make_trainer`` is called by ``experiment.fit`` (the Trainer that trains) and by
``trainer_checks.check_trainer`` (the same Trainer built once, unused, so whatever Lightning refuses is a
config error before the run directory is touched). Both must build it identically, hence this module below
both. Of this package it imports only ``checkpoints`` (the atomic checkpoint IO plugin).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.plugins.precision import Precision
from omegaconf import DictConfig

from lightning_grok.checkpoints import AtomicCheckpointIO


def _devices(spec: str):
    """``trainer.devices`` as Lightning takes it: "auto", a count (int), or a list of device indices ("0,2")."""
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
