"""Against the real test SLURM cluster (slurm/test_cluster.sh): job-array sweeps, 2-task DDP, requeue.

Skipped with a reason where no cluster runs; in CI (.ci/run sets LG_REQUIRE_SLURM=1) a missing cluster
is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, fit

from lightning_grok.sweep.state import SweepDir

pytestmark = pytest.mark.slurm
SMALL_RIDGE = ["model.width=300", "data.n_train=40", "optim.weight_decay=1e-3", "trainer.progress_bar=false"]


@pytest.fixture(scope="module", autouse=True)
def cluster():
    up = (
        shutil.which("sbatch")
        and subprocess.run(["bash", str(REPO / "slurm/test_cluster.sh"), "status"], capture_output=True).returncode == 0
    )
    if not up:
        if os.environ.get("LG_REQUIRE_SLURM"):
            pytest.fail("LG_REQUIRE_SLURM is set but the test SLURM cluster is not up (slurm/test_cluster.sh up)")
        pytest.skip("no SLURM test cluster here: run `sudo bash slurm/test_cluster.sh up` to enable these tests")


def _env(**extra: str) -> dict:
    env = dict(os.environ, LG_PYTHON=sys.executable, LG_REPO=str(REPO), WANDB_SILENT="true", **extra)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def sbatch(*args: str, env: dict) -> str:
    proc = subprocess.run(
        ["sbatch", "--parsable", *args], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    return proc.stdout.strip().split(";")[0]


def wait(job: str, timeout: float = 600) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip():
            return
        time.sleep(1)
    subprocess.run(["scancel", job])
    pytest.fail(f"job {job} did not finish in {timeout} s")


def _log(path: Path) -> str:
    return "\n".join(p.read_text()[-3000:] for p in sorted(path.parent.glob(path.name)))


def test_job_array_of_offline_agents_runs_each_grid_point_once(tmp_path):
    sweep = tmp_path / "grid.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "slurm-grid",
                "method": "grid",
                "metric": {"name": "grok/t_generalize", "goal": "minimize"},
                "command": [
                    "${env}",
                    "${interpreter}",
                    "-m",
                    "lightning_grok",
                    "fit",
                    "configs/ridge.yaml",
                    "${args_no_hyphens}",
                ],
                "parameters": {
                    "optim.weight_decay": {"values": [1e-3, 2e-3, 3e-3, 4e-3]},
                    "model.width": {"value": 300},
                    "data.n_train": {"value": 40},
                    "trainer.max_steps": {"value": 4000},
                    "trainer.progress_bar": {"value": False},
                },
            }
        )
    )
    sweep_dir = tmp_path / "sweep"
    job = sbatch(
        "--array=0-1",
        f"--output={tmp_path}/array-%a.out",
        str(REPO / "slurm/sweep_array.sbatch"),
        str(sweep),
        str(sweep_dir),
        env=_env(WANDB_MODE="offline"),
    )
    wait(job)
    runs = list(SweepDir(sweep_dir).read()["runs"].values())
    assert len(runs) == 4, _log(tmp_path / "array-*.out")
    assert sorted(r["params"]["optim.weight_decay"] for r in runs) == [1e-3, 2e-3, 3e-3, 4e-3]
    assert {r["state"] for r in runs} == {"finished"}
    assert len({r["agent"]["pid"] for r in runs}) == 2  # both array tasks took points
    table = subprocess.run(
        [sys.executable, "-m", "lightning_grok", "sweep-table", str(sweep_dir), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=_env(),
    )
    rows = json.loads(table.stdout)
    assert len(rows) == 4 and all(r["t_generalize"] is not None for r in rows), rows


def test_two_task_ddp_run_matches_the_single_process_run(tmp_path):
    out = tmp_path / "ddp"
    job = sbatch(
        "--ntasks-per-node=2",
        f"--output={tmp_path}/ddp.out",
        str(REPO / "slurm/ddp.sbatch"),
        "configs/ridge.yaml",
        *SMALL_RIDGE,
        "trainer.max_steps=4000",
        env=_env(WANDB_MODE="disabled", LG_ACCELERATOR="cpu", LG_OUTPUT_DIR=str(out)),
    )
    wait(job)
    log = (tmp_path / "ddp.out").read_text()
    assert "lightning-grok: data-parallel over 2 processes" in log, log[-3000:]
    ddp = json.loads((out / "phases.json").read_text())
    _, single = fit("ridge.yaml", tmp_path / "single", *SMALL_RIDGE, "trainer.max_steps=4000")
    assert ddp["t_overfit"] == single["t_overfit"] is not None
    assert ddp["t_generalize"] == single["t_generalize"] is not None
    assert ddp["final"]["train/loss"] == pytest.approx(single["final"]["train/loss"], rel=1e-9)
    assert ddp["final"]["test/loss"] == pytest.approx(single["final"]["test/loss"], rel=1e-9)


def test_sigusr1_requeues_and_the_job_finishes_like_an_uninterrupted_run(tmp_path):
    args = [
        "optim.weight_decay=1e-5",
        "trainer.max_steps=400000",
        "trainer.progress_bar=false",
        "trainer.steps_per_call=2000",
        "trainer.checkpoint_every=10000",
    ]
    out = tmp_path / "requeue"
    job = sbatch(
        f"--output={tmp_path}/requeue.out",
        str(REPO / "slurm/ddp.sbatch"),
        "configs/ridge.yaml",
        *args,
        env=_env(WANDB_MODE="offline", LG_ACCELERATOR="cpu", LG_OUTPUT_DIR=str(out)),
    )
    # signal as soon as the first periodic checkpoint shows GD under way: a fixed sleep lets a fast
    # machine finish the job before the signal arrives
    last = out / "checkpoints" / "last.ckpt"
    end = time.monotonic() + 300
    while not last.exists() and time.monotonic() < end:
        time.sleep(0.1)
    assert last.exists(), (tmp_path / "requeue.out").read_text()[-4000:]
    sent = subprocess.run(["scancel", "--signal=USR1", job], capture_output=True, text=True)
    assert sent.returncode == 0, (sent.stderr, (tmp_path / "requeue.out").read_text()[-4000:])
    wait(job, timeout=600)
    log = (tmp_path / "requeue.out").read_text()
    assert "restart 1" in log, log[-4000:]  # the job ran a second time
    assert "SIGUSR1: checkpoint at GD step" in log and "requeued SLURM job" in log, log[-4000:]
    requeued = json.loads((out / "phases.json").read_text())
    _, whole = fit("ridge.yaml", tmp_path / "whole", *args)
    for key in ("t_overfit", "t_generalize", "grokking_time", "steps_run", "final"):
        assert requeued[key] == whole[key], key
    run_ids = {
        json.loads(
            subprocess.run(
                [str(Path(sys.executable).with_name("wandb")), "leet", "inspect", "--summary", "--json", str(r)],
                capture_output=True,
                text=True,
            ).stdout
        )["run_id"]
        for r in (out / "wandb").glob("offline-run-*")
    }
    assert len(list((out / "wandb").glob("offline-run-*"))) == 2 and len(run_ids) == 1, run_ids
