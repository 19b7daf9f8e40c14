"""Batched sweep points (lightning_grok.batch): points that differ only in per-member scalars, trained as members
of one GD loop, write the phases.json and curves.json of the same points run alone (to 1e-12), including points
that end early and leave the batch, through fit_batch and through the sweep agent (``sweep --batch``)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, SWEEP_COMMAND, load

from lightning_grok.batch import batch_key, fit_batch
from lightning_grok.experiment import fit
from lightning_grok.gd_loops import EvalSpec, LinearGDLoop, RowSpaceGDLoop

# t2 (exact) of the points below: about 98, 175, 837 and 2310 steps; stop_margin 2%: they stop after the calls
# ending at 128, 256 (lr 0.5), 1024 and max_steps 2000 (t2 not reached), so three leave the batch early
BASE = ("data.n_train=30", "model.width=100", "trainer.max_steps=2000", "phases.stop_margin=0.02", "seeds=2")
POINTS = (
    ("optim.weight_decay=3e-2",),
    ("optim.weight_decay=3e-2", "optim.lr=0.5", "model.init_scale=0.5"),
    ("optim.weight_decay=3e-3", "data.teacher_norm=0.8"),
    ("optim.weight_decay=1e-3", "seed=7"),
)
RTOL = 1e-12
TIMINGS = ("run_seconds", "run_cpu_seconds")  # a figure's per-panel wall and CPU seconds: never equal twice


def assert_same(batched, alone, path: str = "", abs_tol: float = 1e-300) -> None:
    """Equal trees; floats to RTOL (the batched loop's products may round differently in the last bit)."""
    if isinstance(alone, dict):
        assert isinstance(batched, dict) and set(batched) == set(alone), path
        for key in alone:
            assert_same(batched[key], alone[key], f"{path}/{key}", abs_tol)
    elif isinstance(alone, list):
        assert isinstance(batched, list) and len(batched) == len(alone), path
        for i, (b, a) in enumerate(zip(batched, alone, strict=True)):
            assert_same(b, a, f"{path}[{i}]", abs_tol)
    elif isinstance(alone, Path):  # a folder of the run (two output roots): the same name
        assert isinstance(batched, Path) and batched.name == alone.name, path
    elif isinstance(alone, float) and isinstance(batched, float):
        assert math.isclose(batched, alone, rel_tol=RTOL, abs_tol=abs_tol) or (
            math.isnan(batched) and math.isnan(alone)
        ), f"{path}: {batched} vs {alone}"
    else:
        assert batched == alone, f"{path}: {batched!r} vs {alone!r}"


def without_dir(phases: dict) -> dict:
    return phases | {"config": {k: v for k, v in phases["config"].items() if k not in ("output_dir", "wandb")}}


@pytest.mark.parametrize("kernel", ["rowspace", "parameter"])
def test_batched_points_equal_the_points_run_alone(tmp_path: Path, kernel: str):
    cfgs = [
        load("ridge.yaml", *BASE, *p, f"trainer.gd_loop={kernel}", f"output_dir={tmp_path}/b{i}")
        for i, p in enumerate(POINTS)
    ]
    assert len({batch_key(c) for c in cfgs}) == 1
    batched = fit_batch(cfgs, "ridge")
    steps = []
    for i, (point, (code, result)) in enumerate(zip(POINTS, batched, strict=True)):
        code_alone, alone = fit(
            load("ridge.yaml", *BASE, *point, f"trainer.gd_loop={kernel}", f"output_dir={tmp_path}/s{i}"), "ridge"
        )
        assert code == code_alone == 0
        on_disk = json.loads((tmp_path / f"b{i}" / "phases.json").read_text())
        assert on_disk == result
        # t1, t2, exact times, bound values and verdicts, envelopes, final losses, steps run: all of it
        assert_same(without_dir(on_disk), without_dir(json.loads((tmp_path / f"s{i}" / "phases.json").read_text())))
        curves_b = json.loads((tmp_path / f"b{i}" / "curves.json").read_text())
        curves_s = json.loads((tmp_path / f"s{i}" / "curves.json").read_text())
        assert set(curves_b) == set(curves_s)
        for key, values in curves_s.items():
            # the members' std |a - b| / 2 cancels: to RTOL of the mean it is the std of
            scale = max(abs(v) for v in curves_s[key.removesuffix("_std")]) if key.endswith("_std") else 0.0
            assert_same(curves_b[key], values, key, abs_tol=RTOL * scale or 1e-300)
        for member in on_disk["members"]:
            assert member["exact"]["t_overfit_matches"] is True
        steps.append(on_disk["steps_run"])
    assert steps[-1] == 2000 and all(s < 2000 for s in steps[:-1]), steps  # three left the batch early
    assert len(set(steps)) == len(steps), steps
    assert all(r["members"][0]["t_generalize"] is not None for _, r in batched[:-1])


def test_random_features_with_a_sampled_test_set_evaluate_where_their_lone_runs_do(tmp_path: Path):
    """Sparse evaluation (a test set of 500 points costs more than a step): the batch fills the blocks where any
    member crosses c, each point keeps only its own, so its t2, envelopes and curves are its lone run's."""
    from lightning_grok.gd_loops import auto_eval_every

    args = (
        "data.n_train=30",
        "data.input_dim=20",
        "model.width=200",
        "data.population=sampled",
        "data.n_test=500",
        "trainer.max_steps=3000",
        "phases.stop_margin=0.02",
        "trainer.gd_loop=parameter",
    )
    assert auto_eval_every(2 * 30 * 200, 500 * 200) > 1
    wds = ("3e-3", "1e-3", "3e-4")
    cfgs = [
        load("random_features.yaml", *args, f"optim.weight_decay={wd}", f"output_dir={tmp_path}/b{i}")
        for i, wd in enumerate(wds)
    ]
    batched = fit_batch(cfgs, "random_features")
    for i, wd in enumerate(wds):
        _, alone = fit(
            load("random_features.yaml", *args, f"optim.weight_decay={wd}", f"output_dir={tmp_path}/s{i}"),
            "random_features",
        )
        assert batched[i][0] == 0
        assert_same(without_dir(batched[i][1]), without_dir(alone))
    assert batched[0][1]["t_generalize"] is not None


def test_a_rejected_point_leaves_the_others_training(tmp_path: Path):
    """lr beyond the stability limit: that point is refused (exit 2, no directory left), the others train."""
    cfgs = [
        load("ridge.yaml", *BASE, "optim.weight_decay=3e-2", f"output_dir={tmp_path}/ok"),
        load("ridge.yaml", *BASE, "optim.weight_decay=3e-2", "optim.lr=50", f"output_dir={tmp_path}/bad"),
    ]
    (code_ok, res), (code_bad, bad) = fit_batch(cfgs, "ridge")
    assert (code_ok, code_bad) == (0, 2) and bad == {}
    assert not (tmp_path / "bad").exists()
    assert res["members"][0]["t_generalize"] == res["members"][0]["exact"]["t_generalize"]


def test_points_that_differ_in_more_than_per_member_scalars_are_not_batched(tmp_path: Path):
    a = load("ridge.yaml", *BASE, f"output_dir={tmp_path}/a")
    assert batch_key(a) == batch_key(load("ridge.yaml", *BASE, "optim.weight_decay=1", f"output_dir={tmp_path}/b"))
    assert batch_key(a) != batch_key(load("ridge.yaml", *BASE, "data.n_train=40", f"output_dir={tmp_path}/b"))
    assert batch_key(load("two_layer.yaml", f"output_dir={tmp_path}/c")) is None
    # batchable iff the plan runs a fused linear GD loop: a mini-batch of the whole training set is full batch
    assert batch_key(load("ridge.yaml", *BASE, "optim.batch_size=30", f"output_dir={tmp_path}/e")) is not None
    assert batch_key(load("ridge.yaml", "optim.batch_size=29", f"output_dir={tmp_path}/f")) is None
    assert batch_key(load("ridge.yaml", "optim.name=adamw", f"output_dir={tmp_path}/g")) is None
    assert batch_key(load("ridge.yaml", "trainer.precision=bf16-mixed", f"output_dir={tmp_path}/h")) is None
    with pytest.raises(ValueError, match="differ only in"):
        fit_batch([a, load("ridge.yaml", *BASE, "data.n_train=40", f"output_dir={tmp_path}/d")])


@pytest.mark.parametrize("loop", [LinearGDLoop, RowSpaceGDLoop])
def test_per_member_lr_and_weight_decay_equal_each_member_alone(loop):
    """The GD loops with (B,) eta and lambda follow each member's scalar run (Eq. 2) to rounding."""
    gen = torch.Generator().manual_seed(0)
    b, n, m = 3, 20, 60
    phi = torch.randn(b, n, m, generator=gen, dtype=torch.float64) / math.sqrt(m)
    y = torch.randn(b, n, 1, generator=gen, dtype=torch.float64)
    theta0 = torch.randn(b, m, 1, generator=gen, dtype=torch.float64)
    star = torch.randn(b, m, 1, generator=gen, dtype=torch.float64)
    lrs, wds = [1.0, 0.5, 0.8], [1e-2, 3e-2, 1e-3]

    def ev(rows: slice) -> EvalSpec:
        return EvalSpec(theta_star=star[rows], sigma_scale=1.0 / m, c=0.01)

    batched = loop(phi, y, lrs, wds, n, ev(slice(None)), 300)
    theta = theta0.clone()
    chunk = batched.run(theta, 0, 300)
    for i in range(b):
        alone = loop(phi[i : i + 1], y[i : i + 1], lrs[i], wds[i], n, ev(slice(i, i + 1)), 300)
        th = theta0[i : i + 1].clone()
        one = alone.run(th, 0, 300)
        torch.testing.assert_close(theta[i : i + 1], th, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(chunk.train_loss[:, i : i + 1], one.train_loss, rtol=1e-12, atol=0)
        torch.testing.assert_close(chunk.test_loss[:, i : i + 1], one.test_loss, rtol=1e-12, atol=0)


def test_a_stopped_batch_keeps_finished_points_and_a_rerun_completes_the_rest(tmp_path: Path):
    """SIGTERM once the first point has written its results: the batch stops at the next chunk boundary; finished
    points keep their files, unfinished ones have no phases.json (exit 143); fit_batch on those finishes them equal
    to their lone runs."""
    long = ("data.n_train=30", "model.width=100", "trainer.max_steps=100000", "phases.stop_margin=0.02")
    wds = ("3e-2", "1e-2", "1e-5")  # the last runs all 100,000 steps
    cfgs = [
        load("ridge.yaml", *long, f"optim.weight_decay={wd}", f"output_dir={tmp_path}/b{i}") for i, wd in enumerate(wds)
    ]

    def stop_after_first() -> None:
        while not (tmp_path / "b0" / "phases.json").exists():
            time.sleep(0.001)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=stop_after_first, daemon=True)
    thread.start()
    first = fit_batch(cfgs, "ridge")
    thread.join(timeout=60)
    assert first[0][0] == 0 and first[-1][0] == 143
    unfinished = []
    for i, (code, result) in enumerate(first):
        assert code in (0, 143)
        if code == 143:
            assert result == {} and not (tmp_path / f"b{i}" / "phases.json").exists()
            assert (tmp_path / f"b{i}" / "config.yaml").exists() and not (tmp_path / f"b{i}" / "checkpoints").exists()
            unfinished.append(i)
    rerun = fit_batch([cfgs[i] for i in unfinished], "ridge")
    assert all(code == 0 for code, _ in rerun)
    for i, wd in enumerate(wds):
        _, alone = fit(load("ridge.yaml", *long, f"optim.weight_decay={wd}", f"output_dir={tmp_path}/s{i}"), "ridge")
        assert_same(without_dir(json.loads((tmp_path / f"b{i}" / "phases.json").read_text())), without_dir(alone))


# ---- through the sweep agent ------------------------------------------------------------------------------------
def test_sweep_agent_batches_a_panel_and_each_point_equals_its_lone_run(tmp_path: Path):
    params = {
        "optim.weight_decay": {"values": [3e-2, 1e-2, 1e-3]},
        "data.n_train": {"value": 30},
        "model.width": {"value": 100},
        "trainer.max_steps": {"value": 2000},
        "phases.stop_margin": {"value": 0.02},
        "seeds": {"value": 2},
        "trainer.progress_bar": {"value": False},
        "wandb.mode": {"value": "offline"},
    }
    raw = {"name": "panel", "method": "grid", "metric": {"name": "grok/t_generalize", "goal": "minimize"}}
    sweep = tmp_path / "panel.yaml"
    sweep.write_text(yaml.safe_dump(raw | {"command": SWEEP_COMMAND, "parameters": params}, sort_keys=False))
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", OMP_NUM_THREADS="1")
    env.pop("WANDB_API_KEY", None)
    sweep_dir = tmp_path / "sweep"
    done = subprocess.run(
        [sys.executable, "-m", "lightning_grok", "sweep", str(sweep), "--sweep-dir", str(sweep_dir), "--batch", "8"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "started as one batched GD loop" in done.stdout
    runs = json.loads((sweep_dir / "state.json").read_text())["runs"]
    assert len(runs) == 3
    steps = set()
    for rec in runs.values():
        assert (rec["state"], rec["exit_code"]) == ("finished", 0), rec
        run_dir = sweep_dir / rec["output_dir"]
        assert list((run_dir / "wandb").glob("offline-run-*")), "each point has its own W&B run"
        phases = json.loads((run_dir / "phases.json").read_text())
        assert rec["result"]["t_generalize"] == phases["t_generalize"]
        wd = rec["params"]["optim.weight_decay"]
        alone_dir = tmp_path / f"alone-{wd}"
        _, alone = fit(
            load(
                "ridge.yaml",
                *(f"{k}={v['value']}" for k, v in params.items() if "value" in v and "wandb" not in k),
                f"optim.weight_decay={wd}",
                f"output_dir={alone_dir}",
                "wandb.mode=disabled",
            ),
            "ridge",
        )
        assert_same(without_dir(phases), without_dir(alone))
        steps.add(phases["steps_run"])
    assert len(steps) == 3 and 2000 in steps  # two points left the batch before the third ended


# ---- through reproduce ------------------------------------------------------------------------------------------
def test_reproduce_batches_a_panel_and_no_batch_runs_the_same_points_alone(tmp_path: Path):
    """``reproduce fig2 --quick``: its lambda and nu^2 panels (3 points x 2 seeds each) train batched by default;
    every point's phases.json equals the one ``--no-batch`` writes, and so does the figure's data."""
    from lightning_grok.reproduce import reproduce

    env = dict(os.environ, WANDB_MODE="disabled", WANDB_SILENT="true", OMP_NUM_THREADS="1")
    opts = {"quick": True, "overrides": ("wandb.mode=disabled",), "env": env}
    batched = reproduce("fig2", tmp_path / "batched", **opts)["fig2"]
    alone = reproduce("fig2", tmp_path / "alone", batch=False, **opts)["fig2"]
    assert batched["status"] == alone["status"] == 0
    notes = list((tmp_path / "batched").rglob("agent.log"))
    assert sum("trained in one batched GD loop" in p.read_text() for p in notes) == 4  # 2 panels x 2 followers
    assert not any("batched" in p.read_text() for p in (tmp_path / "alone").rglob("agent.log"))

    def by_point(root: Path) -> dict[str, dict]:
        out = {}
        for state in root.rglob("state.json"):
            for rec in json.loads(state.read_text())["runs"].values():
                phases = json.loads((state.parent / rec["output_dir"] / "phases.json").read_text())
                out[f"{state.parent.name} {json.dumps(rec['params'], sort_keys=True)}"] = without_dir(phases)
        return out

    points_b, points_a = by_point(tmp_path / "batched"), by_point(tmp_path / "alone")
    assert set(points_b) == set(points_a) and len(points_b) == 12
    for key, phases in points_a.items():
        assert_same(points_b[key], phases, key)
    panels_b, panels_a = batched["data"]["panels"], alone["data"]["panels"]
    assert set(panels_b) == set(panels_a)
    for key, panel in panels_a.items():  # wall and CPU times aside
        assert_same(
            {k: v for k, v in panels_b[key].items() if k not in TIMINGS},
            {k: v for k, v in panel.items() if k not in TIMINGS},
            key,
        )
