"""Shared helpers: tests load the real configs and shrink them (fewer steps, no W&B, no progress bar)."""

from __future__ import annotations

import os
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
