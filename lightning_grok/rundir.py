"""A run directory: checked before any data is built, locked by one live process, bound to one config.

* ``check_writable``: ``output_dir`` must be a directory this process can create and write (not a file,
  not on a read-only mount), checked by really creating a file: root ignores permission bits, mounts don't.
* ``RunLock``: ``filelock``'s exclusive ``flock`` on ``<output_dir>/run.lock``, taken without waiting and
  released by the kernel when the holder dies (kill -9 included), so a second live ``fit`` into the same
  directory is refused at once, naming the holder (recorded in ``<output_dir>/run.lock.holder``).
* ``check_identity``: the resolved config is stored as ``<output_dir>/config.yaml``; resuming into the
  directory with a config that differs in a key that can change results is refused, naming the keys.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import yaml
from filelock import Timeout, UnixFileLock
from omegaconf import DictConfig

from lightning_grok.atomic import atomic_write_text
from lightning_grok.config import RENAMED_KEYS, ConfigError

CONFIG_FILE = "config.yaml"
LOCK_FILE = "run.lock"
HOLDER_FILE = "run.lock.holder"  # who holds LOCK_FILE: "pid N on HOST since TIME (command)"; gone on release
# keys that cannot change what a run computes, only how far it goes or how it is shown and logged
RESUMABLE_CHANGES = (
    "trainer.max_steps",
    "trainer.progress_bar",
    "trainer.checkpoint_every",
    "trainer.checkpoint_minutes",
    "trainer.threads",
    "output_dir",
    "wandb.",
    "phases.log_points",  # which steps are logged (t1, t2 stay exact); wandb.log_points before the rename
)


def check_writable(output_dir: Path) -> None:
    """Create ``output_dir`` (and parents) and prove a file can be written in it; ConfigError otherwise."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"invalid value for 'output_dir': {str(output_dir)!r} is a file (allowed: a directory)")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as exc:
        raise ConfigError(
            f"invalid value for 'output_dir': {str(output_dir)!r} cannot be written ({exc.strerror or exc}; "
            "allowed: a directory this process can create and write)"
        ) from None


def _flat(tree: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# keys that only the transformer reads: left out of every other run's identity and checkpoint fingerprint, so the
# run directories and checkpoints made before these keys existed still resume
TRANSFORMER_KEYS = ("model.n_layers", "model.d_model", "model.n_heads")


# a renamed key's new name -> the name it had when run directories and checkpoints were first written
FIRST_NAMES = {new: old for old, new in RENAMED_KEYS.items()}


def result_keys(config: dict) -> dict[str, object]:
    """The flattened config less the keys a resumed run may change (``RESUMABLE_CHANGES``) and, unless the model is
    the transformer, less the transformer's keys (``TRANSFORMER_KEYS``), which cannot change what it computes.
    A renamed key stands under its first name (``FIRST_NAMES``: ``trainer.gd_loop`` as ``trainer.kernel``,
    ``phases.log_points`` as ``wandb.log_points``), so a config.yaml or a checkpoint written before the rename has
    the same identity and fingerprint as one after. A key is resumable under either of its names."""
    flat = {FIRST_NAMES.get(k, k): v for k, v in _flat(config).items() if not _resumable(k)}
    inert = TRANSFORMER_KEYS if flat.get("model.family") != "transformer" else ()
    return {k: v for k, v in flat.items() if not _resumable(k) and k not in inert}


def _resumable(key: str) -> bool:
    return any(key.startswith(p) for p in RESUMABLE_CHANGES)


def fingerprint(config: dict) -> str:
    """A hash of the result-determining keys: stored in checkpoints to recognise another config's file."""
    text = json.dumps(result_keys(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_identity(output_dir: Path, config: dict) -> None:
    """Refuse to resume a run directory written with another config (ConfigError naming the keys)."""
    stored_path = output_dir / CONFIG_FILE
    if not stored_path.is_file():
        if (output_dir / "checkpoints").is_dir() and any((output_dir / "checkpoints").iterdir()):
            raise ConfigError(
                f"output_dir {str(output_dir)!r} holds checkpoints but no {CONFIG_FILE}: it cannot be checked "
                "that they belong to this config. Choose another output_dir, or delete its checkpoints"
            )
        return
    try:
        stored = yaml.safe_load(stored_path.read_text()) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {stored_path} ({exc}); delete it only if the run may be restarted") from None
    old, new = result_keys(stored), result_keys(config)
    differ = sorted(k for k in old.keys() | new.keys() if old.get(k, "<absent>") != new.get(k, "<absent>"))
    if differ:
        shown = ", ".join(f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}" for k in differ[:8])
        more = f" and {len(differ) - 8} more" if len(differ) > 8 else ""
        raise ConfigError(
            f"output_dir {str(output_dir)!r} holds a run with another config ({shown}{more}); only "
            f"{', '.join(RESUMABLE_CHANGES)}* may change on resume. Choose another output_dir"
        )


def store_config(output_dir: Path, config: dict) -> None:
    atomic_write_text(output_dir / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))


class RunLock:
    """Exclusive lock of a run directory for this process (``with RunLock(dir):``); ConfigError naming the
    holder if another live process has it.

    ``filelock.UnixFileLock`` on ``run.lock``, acquired with timeout 0 (never waits). It is an ``flock``, so the
    kernel frees it when the holder dies however it dies; the holder's description, written to ``run.lock.holder``
    once the lock is taken and removed on release, is what a refused process prints (a holder killed by -9
    leaves it behind, and the next holder overwrites it)."""

    def __init__(self, output_dir: Path):
        self.path = Path(output_dir) / LOCK_FILE
        self.holder_path = Path(output_dir) / HOLDER_FILE
        self._lock = UnixFileLock(str(self.path), timeout=0)

    def __enter__(self) -> RunLock:
        try:
            self._lock.acquire()
        except Timeout:
            try:
                holder = self.holder_path.read_text(errors="replace").strip()
            except OSError:
                holder = ""
            raise ConfigError(
                f"output_dir {str(self.path.parent)!r} is in use by {holder or 'an unknown process'}; wait for it "
                "to end, stop it, or choose another output_dir"
            ) from None
        holder = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        try:
            atomic_write_text(self.holder_path, f"{holder} ({' '.join(sys.argv[:3])})\n")
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._lock.is_locked:
            with contextlib.suppress(OSError):
                self.holder_path.unlink(missing_ok=True)
            self._lock.release()


def resolve_output_dir(cfg: DictConfig, config_name: str) -> Path:
    """cfg.output_dir, else runs/<config name>-<UTC time>-<pid> (unique per run)."""
    if cfg.output_dir:
        return Path(cfg.output_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return Path("runs") / f"{config_name}-{stamp}-{os.getpid()}"
