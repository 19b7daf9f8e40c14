"""What a team filters on in the W&B project, read back from offline runs made by the real CLI: a readable
name (family, the keys set on the command line, the seed), tags, notes, grok/grokked and grok/status."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

SMALL = ["data.n_train=20", "model.width=200", "optim.weight_decay=1e-3", "seed=3"]  # exact t2 = 2555 steps


def _cli_run(out, *args: str) -> tuple[dict, dict]:
    """(the run record, the final summary) of an offline `fit` in ``out``."""
    env = {**os.environ, "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "lightning_grok", "fit", "configs/ridge.yaml", f"output_dir={out}", *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    wandb_bin = os.path.join(os.path.dirname(sys.executable), "wandb")
    inspect = [wandb_bin, "leet", "inspect", "--json", str(run_dir)]
    records = [json.loads(line) for line in subprocess.check_output(inspect, text=True).splitlines() if line]
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    summary = json.loads(subprocess.check_output([*inspect[:3], "--summary", *inspect[3:]], text=True))["summary"]
    return run, summary


@pytest.mark.slow
def test_a_run_stopped_before_t2_is_named_tagged_and_not_grokked(tmp_path):
    run, summary = _cli_run(tmp_path, *SMALL, "trainer.max_steps=300", "wandb.notes=first look", "wandb.tags=[mine]")
    assert run["display_name"] == "ridge-n20-m200-wd1e-3-s3"  # the keys in the order given
    assert run["tags"] == ["ridge", "regression", "mine"] and run["notes"] == "first look"
    assert summary["grok/grokked"] is False and summary["grok/status"] == "no_t2"
    assert summary.get("grok/t_generalize") is None and summary["grok/exact/t_generalize"] == 2555
    assert "theory/members" not in summary  # a single run: its one row is the summary


@pytest.mark.slow
def test_an_ensemble_that_groks_says_so_with_its_spreads(tmp_path):
    run, summary = _cli_run(tmp_path, *SMALL, "seeds=2", "trainer.max_steps=3000")
    assert run["display_name"] == "ridge-n20-m200-wd1e-3-s3x2"
    assert run["tags"] == ["ridge", "regression", "ensemble"]
    assert summary["grok/grokked"] is True and summary["grok/status"] == "completed"
    assert summary["grok/exact/t_generalize_std"] == pytest.approx(summary["grok/t_generalize_std"])
    assert not [k for k in summary if k.startswith("grok/exact_")]  # one naming scheme: grok/exact/...
    assert summary["theory/members"]["_type"] == "table-file"
