"""A sweep made before issue 18 (the RunPlan, the config package, the renames ``trainer.kernel`` ->
``trainer.gd_loop`` and ``wandb.log_points`` -> ``phases.log_points``, the gd_loops package) goes on with today's
code: its sweep file, its ``state.json``, a finished run directory and one stopped by SIGTERM with its checkpoint.

The fixture ``fixtures/before_issue18`` was written by commit b297234 with ``make_fixture.py`` (beside it): a grid
of two ridge points; the agent finished the first and was stopped by SIGTERM during the second, at GD step 132,800.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO, fit

from lightning_grok.results import load_run
from lightning_grok.sweep.state import SweepDir

FIXTURE = Path(__file__).parent / "fixtures" / "before_issue18"
# the stopped point's settings, in today's names
POINT = (
    "model.width=200",
    "data.n_train=20",
    "optim.weight_decay=1e-05",
    "trainer.gd_loop=parameter",
    "trainer.max_steps=300000",
    "trainer.steps_per_call=200",
    "trainer.threads=1",
    "phases.log_points=60",
)


def _lightning_grok(*args: str | Path) -> str:
    env = dict(os.environ, WANDB_MODE="disabled", WANDB_SILENT="true")
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # each forked run would otherwise recompile torch
    proc = subprocess.run(
        [sys.executable, "-m", "lightning_grok", *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def test_a_sweep_from_before_issue_18_is_read_resumed_and_ends_where_an_unstopped_run_does(tmp_path):
    root = tmp_path / "before"
    shutil.copytree(FIXTURE, root)
    sweep, sweep_dir = root / "sweep.yaml", root / "sweep"
    before = SweepDir(sweep_dir).read()["runs"]

    table = _lightning_grok("sweep", sweep, "--sweep-dir", sweep_dir, "--table")
    assert re.search(r"before_issue18-0001\s+finished\s+0\.003\s+32\s+858", table), table
    assert re.search(r"before_issue18-0002\s+killed interrupted\s+1e-05\s+34\s+-", table), table

    out = _lightning_grok("sweep", sweep, "--sweep-dir", sweep_dir, "--retry-failed")
    assert "config key 'trainer.kernel' is now 'trainer.gd_loop'" in out
    assert "config key 'wandb.log_points' is now 'phases.log_points'" in out
    runs = SweepDir(sweep_dir).read()["runs"]
    assert runs["before_issue18-0001"] == before["before_issue18-0001"]  # finished: not run again
    retry = runs["before_issue18-0003"]
    assert retry["state"] == "finished" and retry["retry_of"] == "before_issue18-0002"
    assert retry["output_dir"] == "runs/before_issue18-0002"  # the same directory: its checkpoint resumed
    run_dir = sweep_dir / "runs" / "before_issue18-0002"
    assert "resuming from" in (run_dir / "agent.log").read_text()

    resumed = load_run(run_dir)
    status, fresh = fit("ridge.yaml", tmp_path / "fresh", *POINT)
    assert status == 0 and resumed.status == "completed"
    assert resumed.t_overfit == fresh["t_overfit"] == 34
    assert resumed.t_generalize == fresh["t_generalize"]  # measured after the resume, at step 257,627
    assert resumed.t_generalize > 132_800
    assert resumed.steps_run == fresh["steps_run"] == 300_000

    finished = load_run(sweep_dir / "runs" / "before_issue18-0001")  # its phases.json as b297234 wrote it
    assert (finished.t_overfit, finished.t_generalize) == (32, 858)
