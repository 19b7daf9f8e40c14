"""W&B offline runs: the summary carries the measured phases; a resumed run keeps its W&B run id."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import fit


def _inspect(run_dir: Path) -> dict:
    wandb_bin = Path(sys.executable).with_name("wandb")
    exe = str(wandb_bin) if wandb_bin.exists() else shutil.which("wandb")
    proc = subprocess.run(
        [exe, "leet", "inspect", "--summary", "--json", str(run_dir)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_offline_run_summary_holds_the_phase_times(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE")
    status, res = fit(
        "ridge.yaml",
        tmp_path,
        "wandb.mode=offline",
        "optim.weight_decay=1e-3",
        "trainer.max_steps=3000",
        "phases.log_points=50",
    )
    assert status == 0
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    info = _inspect(runs[0])
    summary = info["summary"]
    assert summary["grok/t_generalize"] == res["t_generalize"]
    assert summary["grok/t_overfit"] == res["t_overfit"]
    assert summary["grok/bound/eq8_t_generalize_lower/verdict"] == res["bounds"]["eq8_t_generalize_lower"]["verdict"]
    assert info["config"]["optim"]["weight_decay"] == 1e-3
    run_id = (tmp_path / "wandb_run_id.txt").read_text().strip()
    assert info["run_id"] == run_id
    # curves are logged against the GD step on a bounded geometric schedule, not every step
    curves = json.loads((tmp_path / "curves.json").read_text())
    assert curves["step"][-1] <= 2999 and summary["gd_step"] == res["steps_run"]  # tables come at the end
    assert 20 <= len(curves["step"]) <= 51


def test_resuming_reuses_the_run_id(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE")
    args = ("wandb.mode=offline", "optim.weight_decay=1e-3")
    fit("ridge.yaml", tmp_path, *args, "trainer.max_steps=1000")
    first = (tmp_path / "wandb_run_id.txt").read_text()
    fit("ridge.yaml", tmp_path, *args, "trainer.max_steps=2000")
    assert (tmp_path / "wandb_run_id.txt").read_text() == first
    ids = {_inspect(r)["run_id"] for r in (tmp_path / "wandb").glob("offline-run-*")}
    assert ids == {first.strip()}


def test_disabled_writes_no_wandb_folder(tmp_path):
    assert os.environ["WANDB_MODE"] == "disabled"
    fit("ridge.yaml", tmp_path, "optim.weight_decay=1e-3", "trainer.max_steps=500")
    assert not (tmp_path / "wandb").exists()
    assert (tmp_path / "phases.json").is_file()
