"""Shared helpers: tests load the real configs and shrink them (fewer steps, no W&B, no progress bar)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"

os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(autouse=True)
def _quiet_wandb(monkeypatch):
    """Tests run W&B disabled unless they ask for it; no test ever talks to a server."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def load(name: str, *overrides: str):
    from lightning_grok.config import load_config

    return load_config(CONFIGS / name, ["trainer.progress_bar=false", *overrides])


def fit(name: str, tmp_path: Path, *overrides: str):
    """Train in-process; returns (exit status, phases dict)."""
    from lightning_grok.experiment import fit as _fit

    cfg = load(name, f"output_dir={tmp_path}", *overrides)
    return _fit(cfg, Path(name).stem)


@pytest.fixture
def tmpfs(tmp_path):
    """A small tmpfs mounted at tmp_path/mnt (root only); yields a function that mounts it with options."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mounted = []

    def mount(options: str) -> Path:
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)], capture_output=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
        mounted.append(mnt)
        return mnt

    yield mount
    for m in mounted:
        subprocess.run(["umount", "-l", str(m)], check=False)


# the fit command of a sweep file, as in sweeps/*.yaml
SWEEP_COMMAND = ["${env}", "${interpreter}", "-m", "lightning_grok", "fit", "configs/ridge.yaml", "${args_no_hyphens}"]


def write_sweep(path: Path, parameters: dict, method: str = "grid", command: list | None = None, **extra) -> Path:
    """A W&B sweep file at ``path`` (named after its stem) running ``configs/ridge.yaml`` by default."""
    import yaml

    doc = {
        "name": path.stem,
        "method": method,
        "metric": {"name": "grok/t_generalize", "goal": "minimize"},
        "command": command or SWEEP_COMMAND,
        "parameters": parameters,
        **extra,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
