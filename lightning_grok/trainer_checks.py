"""The trainer keys against this machine and its launcher, before the run directory is touched.

``config.validate`` checks what needs no torch or Lightning (accelerator names, the form of
``trainer.devices``, integer ranges); ``check_trainer`` runs where a run is prepared (``experiment.fit``),
before ``config.yaml`` or ``run.lock`` exist, so a refused command can be corrected and rerun on the same
``output_dir``. It asks Lightning's public APIs:

* ``trainer.accelerator``: is the hardware there (``CUDAAccelerator.is_available()`` and the like), and
  are there as many GPUs as ``trainer.devices`` asks for;
* ``trainer.strategy``: a name in Lightning's ``StrategyRegistry``;
* ``trainer.num_nodes`` > 1: the process runs under a multi-node launcher providing that many nodes
  (a SLURM job step, torchrun, LSF, MPI, or MASTER_ADDR and NODE_RANK set by hand on every node);
  otherwise the run would wait forever for nodes that never come;
* last, the Trainer itself is built once with these settings (nothing is trained, nothing written), so
  whatever else Lightning refuses (16-mixed on a CPU, a strategy whose package is missing, SLURM task
  counts that do not match ``trainer.devices``) is exit 2 now rather than a traceback mid-run.

Each refusal is a ``ConfigError`` naming the key, its value and what is allowed here.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from omegaconf import DictConfig

from lightning_grok.config import ConfigError
from lightning_grok.quiet import quiet_third_party
from lightning_grok.trainer_factory import make_trainer

# accelerator name -> the Lightning class that says whether it is here, and what it is called in messages
_HARDWARE = {
    "gpu": ("CUDAAccelerator", "a CUDA GPU"),
    "cuda": ("CUDAAccelerator", "a CUDA GPU"),
    "mps": ("MPSAccelerator", "an Apple MPS device"),
    "tpu": ("XLAAccelerator", "a TPU (torch_xla)"),
}


def check_trainer(cfg: DictConfig, output_dir: Path) -> None:
    """Refuse (ConfigError) trainer settings this machine or its launcher cannot run; see the module doc."""
    with quiet_third_party():  # Lightning's srun hint, logged while it detects SLURM
        _check_accelerator(cfg)
        _check_strategy(cfg)
        check_nodes(cfg.trainer.num_nodes, dict(os.environ))
        _check_with_lightning(cfg, output_dir)


def _accelerator_classes() -> dict:
    from lightning.pytorch import accelerators

    return {name: getattr(accelerators, cls) for name, (cls, _) in _HARDWARE.items()}


def _check_accelerator(cfg: DictConfig) -> None:
    from lightning.pytorch.accelerators import AcceleratorRegistry

    name = cfg.trainer.accelerator
    known = {"auto", "gpu", *AcceleratorRegistry.available_accelerators()}
    classes = _accelerator_classes()
    here = ["auto", "cpu"] + [n for n, cls in classes.items() if cls.is_available() and n in known]
    if name not in known:
        raise ConfigError(
            f"invalid value for 'trainer.accelerator': {name!r} (allowed: one of {', '.join(sorted(known))}; "
            f"on this machine: {', '.join(here)})"
        )
    if name in classes and not classes[name].is_available():
        what = _HARDWARE[name][1]
        why = ""
        if name in ("gpu", "cuda"):
            why = "; torch.cuda.is_available() is False"
            if "CUDA_VISIBLE_DEVICES" in os.environ:
                why += f", CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r}"
        raise ConfigError(
            f"invalid value for 'trainer.accelerator': {name!r} ({what} is not available to this process{why}; "
            f"allowed on this machine: {', '.join(here)})"
        )
    devices = str(cfg.trainer.devices).strip()
    if name in ("gpu", "cuda") and devices not in ("auto", "-1"):
        count = classes[name].auto_device_count()
        wanted = [int(p) for p in devices.split(",") if p.strip()] if "," in devices else None
        if (wanted is None and int(devices) > count) or (wanted is not None and max(wanted) >= count):
            raise ConfigError(
                f"invalid value for 'trainer.devices': {devices!r} with trainer.accelerator={name!r} (this process "
                f"sees {count} GPU(s); allowed: auto, -1, a count from 1 to {count}, or indices from 0 to {count - 1})"
            )
    if name == "cpu" or (name == "auto" and len(here) == 2):
        cores = os.cpu_count() or 1
        if devices == "auto":
            return
        if not devices.isdigit() or int(devices) > cores:
            raise ConfigError(
                f"invalid value for 'trainer.devices': {devices!r} on the CPU (allowed: auto, or a number of "
                f"processes from 1 to {cores}, this machine's cores; -1 and device indices apply to GPUs)"
            )


def _check_strategy(cfg: DictConfig) -> None:
    from lightning.pytorch.strategies import StrategyRegistry

    name = str(cfg.trainer.strategy).lower()  # Lightning lower-cases strategy names
    names = StrategyRegistry.available_strategies()
    if name == "auto" or name in names:
        return
    close = difflib.get_close_matches(name, names, n=2, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    variant = "_find_unused_parameters_"
    shown = [n for n in names if variant not in n]
    raise ConfigError(
        f"invalid value for 'trainer.strategy': {cfg.trainer.strategy!r} ({hint}allowed: auto or a name in "
        f"Lightning's StrategyRegistry: {', '.join(shown)}"
        + (f", and ddp*{variant}true|false" if len(shown) < len(names) else "")
        + ")"
    )


def launcher(env: dict[str, str]) -> tuple[str, int | None] | None:
    """The multi-node launcher this process runs under, and the number of nodes it provides (None: it does not
    say); None outside any. Lightning's own order (``TorchElasticEnvironment`` first: it may run inside SLURM)."""
    from lightning.fabric.plugins.environments import (
        LSFEnvironment,
        MPIEnvironment,
        SLURMEnvironment,
        TorchElasticEnvironment,
    )

    def count(*names: str) -> int | None:
        for n in names:
            if str(env.get(n, "")).strip().isdigit():
                return int(env[n])
        return None

    if TorchElasticEnvironment.detect():
        nodes = count("GROUP_WORLD_SIZE")
        world, local = count("WORLD_SIZE"), count("LOCAL_WORLD_SIZE")
        if nodes is None and world and local:
            nodes = world // local
        return "torchrun (GROUP_WORLD_SIZE)", nodes
    if SLURMEnvironment.detect():
        return "SLURM (SLURM_NNODES)", count("SLURM_NNODES", "SLURM_JOB_NUM_NODES")
    if LSFEnvironment.detect():
        return "LSF", None
    if MPIEnvironment.detect():
        return "MPI", None
    if env.get("MASTER_ADDR") and str(env.get("NODE_RANK", "")).strip().isdigit():
        return "MASTER_ADDR and NODE_RANK set by hand", None
    return None


def check_nodes(num_nodes: int, env: dict[str, str]) -> None:
    """``trainer.num_nodes`` > 1 only under a launcher that provides that many nodes (``launcher``); a plain
    process would wait forever in the process group for nodes that never start."""
    if num_nodes <= 1:
        return
    found = launcher(env)
    how = (
        f"start the same command on every node: srun under `sbatch --nodes={num_nodes}` (slurm/ddp.sbatch), "
        f"torchrun --nnodes={num_nodes}, or with MASTER_ADDR, MASTER_PORT and NODE_RANK set on each node"
    )
    if found is None:
        interactive = env.get("SLURM_JOB_NAME") in ("bash", "interactive")
        where = " (an interactive SLURM job is not a launcher: use srun)" if interactive else ""
        raise ConfigError(
            f"invalid value for 'trainer.num_nodes': {num_nodes} (no multi-node launcher started this process"
            f"{where}: no SLURM job step, no torchrun, no MASTER_ADDR/NODE_RANK; the run would wait forever for the "
            f"other nodes. Allowed here: 1, or {how})"
        )
    name, nodes = found
    if nodes is not None and nodes != num_nodes:
        raise ConfigError(
            f"invalid value for 'trainer.num_nodes': {num_nodes} (this process runs under {name} with {nodes} "
            f"node(s); allowed here: {nodes}, or {how})"
        )
    rank = env.get("NODE_RANK")
    if name.startswith("MASTER_ADDR") and rank is not None and int(rank) >= num_nodes:
        raise ConfigError(
            f"invalid value for 'trainer.num_nodes': {num_nodes} with NODE_RANK={rank} (allowed: more nodes than "
            "the largest NODE_RANK)"
        )


def _check_with_lightning(cfg: DictConfig, output_dir: Path) -> None:
    """Build the run's Trainer once (``trainer_factory.make_trainer``, no callbacks, no logger): whatever it refuses
    is named with the trainer keys. Building it writes nothing and starts no process."""
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    try:
        make_trainer(cfg, output_dir, [], None)
    except (ValueError, TypeError, RuntimeError, ImportError, MisconfigurationException) as exc:
        keys = ("accelerator", "devices", "strategy", "num_nodes", "precision")
        given = ", ".join(f"trainer.{k}={cfg.trainer[k]!r}" for k in keys)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"invalid trainer settings {given}: Lightning refuses them ({reason})") from None
