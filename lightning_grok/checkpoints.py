"""Checkpoints that cannot break a run directory.

One file, ``<output_dir>/checkpoints/last.ckpt``, is rewritten at every save (periodic, on SIGUSR1, when a
fit ends or is interrupted). Each write goes to a temporary file that is renamed over it, and the previous
good file is kept as ``last.prev.ckpt``: a full disk or a kill -9 mid-write leaves both older files intact.
On resume the newest checkpoint that loads, carries this framework's state and belongs to this run's
config is used; a truncated, empty or foreign file is skipped with a warning.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lightning_grok.atomic import atomic_write
from lightning_grok.config import ConfigError

CHECKPOINT_DIR = "checkpoints"
LAST, PREVIOUS = "last.ckpt", "last.prev.ckpt"
STATE_KEY = "grok"  # the framework's own part of a checkpoint (GrokkingModule.on_save_checkpoint)


def last_checkpoint(output_dir: Path) -> Path:
    return Path(output_dir) / CHECKPOINT_DIR / LAST


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch.save checkpoint IO, written atomically, keeping the previous file as ``*.prev.ckpt``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        path = Path(path)
        if get_filesystem(path).protocol not in ("file", ("file", "local")):
            return super().save_checkpoint(checkpoint, path)
        # serialized in memory first: torch.save reports a full disk as a RuntimeError, a write as OSError ENOSPC
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        previous = path.with_name(path.name.removesuffix(".ckpt") + ".prev.ckpt")
        atomic_write(path, lambda f: f.write(buffer.getbuffer()), keep_previous=previous)


def checkpoint_problem(path: Path, fingerprint: str) -> str | None:
    """Why ``path`` cannot be resumed from (None if it can): empty, truncated, foreign or another config's."""
    try:
        if path.stat().st_size == 0:
            return "empty file"
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any failure to unpickle means the file is unusable
        return f"unreadable ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else 'truncated'})"
    if not isinstance(ckpt, dict) or STATE_KEY not in ckpt or "state_dict" not in ckpt:
        return "not a lightning_grok checkpoint"
    theirs = ckpt[STATE_KEY].get("config_fingerprint")
    if theirs is not None and theirs != fingerprint:
        return "written by a run with another config"
    return None


def resume_checkpoint(output_dir: Path, fingerprint: str, warn=print) -> Path | None:
    """The checkpoint to resume from: ``last.ckpt``, else ``last.prev.ckpt`` (with a warning), else None.

    Raises ConfigError when checkpoints exist but none is usable, naming each file and what to do."""
    folder = Path(output_dir) / CHECKPOINT_DIR
    candidates = [p for p in (folder / LAST, folder / PREVIOUS) if p.exists()]
    problems = []
    for path in candidates:
        problem = checkpoint_problem(path, fingerprint)
        if problem is None:
            for bad, why in problems:
                warn(f"lightning-grok: warning: skipping checkpoint {bad} ({why}); resuming from {path}")
            return path
        problems.append((path, problem))
    if problems:
        listed = "; ".join(f"{p} ({why})" for p, why in problems)
        raise ConfigError(
            f"no usable checkpoint to resume from in {folder}: {listed}. Delete the folder to start the run "
            "over, or choose another output_dir"
        )
    return None
