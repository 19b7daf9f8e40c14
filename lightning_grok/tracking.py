"""Run directories, atomic JSON writes and the W&B logger (offline unless credentials are present)."""

from __future__ import annotations

import json
import math
import netrc
import os
import time
import uuid
from pathlib import Path

from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

from lightning_grok.atomic import atomic_write_text


def resolve_output_dir(cfg: DictConfig, config_name: str) -> Path:
    """cfg.output_dir, else runs/<config name>-<UTC time>-<pid> (unique per run)."""
    if cfg.output_dir:
        return Path(cfg.output_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return Path("runs") / f"{config_name}-{stamp}-{os.getpid()}"


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        return _json_safe(obj.item())
    return obj


def atomic_write_json(path: Path, obj) -> None:
    """JSON with non-finite floats and tensors made safe, written atomically."""
    atomic_write_text(path, json.dumps(_json_safe(obj), indent=2) + "\n")


def wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        rc = netrc.netrc(os.environ.get("NETRC", os.path.expanduser("~/.netrc")))
    except (FileNotFoundError, netrc.NetrcParseError):
        return False
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("//")[-1]
    return rc.authenticators(host) is not None


def wandb_mode(cfg: DictConfig) -> str:
    """online | offline | disabled. WANDB_MODE in the environment wins over wandb.mode=auto."""
    mode = cfg.wandb.mode
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled"):
        return env
    if env == "dryrun":
        return "offline"
    return "online" if wandb_logged_in() else "offline"


def stable_run_id(cfg: DictConfig, output_dir: Path) -> str:
    """The W&B run id: wandb.run_id, else one kept in the run directory so a requeued job resumes it."""
    if cfg.wandb.run_id:
        return cfg.wandb.run_id
    path = output_dir / "wandb_run_id.txt"
    if path.is_file():
        return path.read_text().strip()
    run_id = os.environ.get("WANDB_RUN_ID") or uuid.uuid4().hex[:12]
    if rank_zero_only.rank == 0:  # under DDP only rank 0 logs to W&B; other ranks must not race for the file
        output_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(run_id + "\n")
    return run_id


def make_logger(cfg: DictConfig, output_dir: Path, config: dict):
    """A WandbLogger (resume='allow' under a stable id), or None when wandb.mode resolves to disabled."""
    mode = wandb_mode(cfg)
    if mode == "disabled":
        return None
    from lightning.pytorch.loggers import WandbLogger

    w = cfg.wandb
    return WandbLogger(
        project=w.project,
        entity=w.entity,
        group=w.group,
        name=w.name or output_dir.name,
        tags=list(w.tags),
        id=stable_run_id(cfg, output_dir),
        resume="allow",
        save_dir=str(output_dir),
        offline=mode == "offline",
        mode=mode,
        config=config,
        log_model=False,
    )
