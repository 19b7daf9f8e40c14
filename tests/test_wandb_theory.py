"""The theory in W&B, read back from offline runs with W&B's own tool (``wandb leet inspect --json``: every
record of the run's .wandb log) and the files W&B writes beside it: exact curves in the history against GD
steps, the bounds, exact-versus-measured and members tables, the figure and the results artifact."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import fit, load


def _inspect(run_dir: Path, *options: str) -> str:
    wandb_bin = Path(sys.executable).with_name("wandb")
    exe = str(wandb_bin) if wandb_bin.exists() else shutil.which("wandb")
    cmd = [exe, "leet", "inspect", *options, "--json", str(run_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _records(run_dir: Path) -> list[dict]:
    """Every record of the run's .wandb log, in order."""
    return [json.loads(line) for line in _inspect(run_dir).splitlines() if line.strip()]


def _summary(run_dir: Path) -> dict:
    """The run's final summary, media references as nested dicts."""
    return json.loads(_inspect(run_dir, "--summary"))["summary"]


def _offline_run(tmp_path: Path) -> Path:
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    return runs[0]


def _of(records: list[dict], kind: str) -> list[dict]:
    return [r[kind] for r in records if r["type"] == kind]


def _history(records: list[dict]) -> list[dict]:
    return [h["item"] for h in _of(records, "history")]


def _table(run_dir: Path, summary: dict, key: str) -> dict:
    """A logged wandb.Table as W&B wrote it offline: files/media/table/....table.json, named in the summary."""
    ref = summary[key]
    assert ref["_type"] == "table-file"
    return json.loads((run_dir / "files" / ref["path"]).read_text())


def _exact(cfg_name: str, *overrides: str):
    """The ExactDynamics of each member of the run (rebuilt from the same seeded tensors)."""
    from lightning_grok.experiment import build

    return [m.theory.exact for m in build(load(cfg_name, *overrides)).members]


def _b64md5(path: Path) -> str:
    return base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()


@pytest.mark.slow
def test_ridge_defaults_log_exact_curves_tables_figure_and_artifact(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE")
    status, res = fit("ridge.yaml", tmp_path, "wandb.mode=offline")
    assert status == 0 and res["t_generalize"] == 23320 and res["t_overfit"] == 212
    run_dir = _offline_run(tmp_path)
    records = _records(run_dir)
    run_id = (tmp_path / "wandb_run_id.txt").read_text().strip()

    # every run is a "fit" job
    (run,) = _of(records, "run")
    assert run["job_type"] == "fit" and run["run_id"] == run_id

    # the curve keys are declared against the GD step
    steps_of = {m["name"]: m.get("step_metric") for m in _of(records, "metric") if "name" in m}
    for key in ("train/loss", "test/loss", "exact/train/loss", "exact/test/loss"):
        assert steps_of[key] == "gd_step", key
    assert steps_of["grok/t_generalize"] is None  # a summary metric, not a curve

    # exact curves beside the measured ones, at the same logged GD steps, equal to the exact dynamics
    rows = [h for h in _history(records) if "train/loss" in h]
    curves = json.loads((tmp_path / "curves.json").read_text())
    assert [h["gd_step"] for h in rows] == curves["step"]
    # one step metric: no curve row carries Lightning's trainer/global_step, which is declared hidden
    assert not [h for h in rows if "trainer/global_step" in h]
    assert {"name": "trainer/global_step", "options": {"defined": True, "hidden": True}} in _of(records, "metric")
    assert all("exact/train/loss" in h and "exact/test/loss" in h for h in rows)
    (exact,) = _exact("ridge.yaml")
    by_step = {h["gd_step"]: h for h in rows}
    for step in (0, 212, 1000, 23320, curves["step"][-1]):
        h = by_step.get(step) or by_step[min(by_step, key=lambda s: abs(s - step))]
        s = h["gd_step"]
        assert h["exact/train/loss"] == pytest.approx(float(exact.train_loss(s)[0]), rel=1e-12)
        assert h["exact/test/loss"] == pytest.approx(float(exact.population_loss(s)[0]), rel=1e-12)
        assert h["train/loss"] == pytest.approx(h["exact/train/loss"], rel=1e-6)  # GD equals its closed form
        assert h["test/loss"] == pytest.approx(h["exact/test/loss"], rel=1e-6)
    assert rows[0]["exact/train/loss"] > 100 * rows[-1]["exact/train/loss"]  # a curve, not a constant

    summary = _summary(run_dir)
    assert summary["grok/t_generalize"] == 23320 and summary["grok/exact/t_generalize"] == 23320
    assert not [k for k in summary if k.startswith("grok/member_")]

    # the bounds table: one row per bound, as phases.json judged it
    bounds = _table(run_dir, summary, "theory/bounds")
    assert bounds["columns"] == [
        "member",
        "name",
        "source",
        "target",
        "side",
        "value",
        "measured",
        "verdict",
        "failed_hypotheses",
    ]
    assert len(bounds["data"]) == len(res["bounds"]) >= 6
    for member, name, source, target, side, value, measured, verdict, failed in bounds["data"]:
        b = res["bounds"][name]
        assert (member, source, target, side, verdict) == (0, b["source"], b["target"], b["side"], b["verdict"])
        assert value == pytest.approx(b["value"]) and measured == res[target]
        assert failed == "; ".join(
            h["statement"] + ("" if h["required"] else " (not required)") for h in b["hypotheses"] if not h["met"]
        )
    assert {row[1] for row in bounds["data"]} >= {"eq7_t_generalize_lower", "eq8_t_overfit_upper"}
    assert {row[7] for row in bounds["data"]} == {"holds"}

    versus = _table(run_dir, summary, "theory/exact_vs_measured")
    assert versus["columns"] == ["member", "t1", "exact_t1", "t2", "exact_t2", "matches"]
    assert versus["data"] == [[0, 212, 212, 23320, 23320, True]]

    # the figure, as a PNG W&B keeps with the run
    image = summary["theory/curves"]
    assert image["_type"] == "image-file"
    assert (run_dir / "files" / image["path"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the results artifact: phases.json and curves.json as written, under the run id
    (artifact,) = [a for a in _of(records, "artifact") if a["type"] == "results"]
    assert artifact["name"] == f"results-{run_id}"
    contents = {c["path"]: c["digest"] for c in artifact["manifest"]["contents"]}
    assert contents == {name: _b64md5(tmp_path / name) for name in ("phases.json", "curves.json")}


@pytest.mark.slow
def test_ensemble_members_are_a_table_not_summary_keys(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_SWEEP_ID", "swp42")  # as `wandb agent` sets it: the default group names the sweep
    args = ("seeds=3", "optim.weight_decay=1e-3", "trainer.max_steps=3000", "phases.log_points=40")
    status, res = fit("ridge.yaml", tmp_path, "wandb.mode=offline", *args)
    assert status == 0 and len(res["members"]) == 3
    run_dir = _offline_run(tmp_path)
    records = _records(run_dir)
    (run,) = _of(records, "run")
    assert (run["job_type"], run["run_group"]) == ("fit", "sweep-swp42")

    summary = _summary(run_dir)
    assert not [k for k in summary if k.startswith("grok/member_")]
    assert summary["grok/t_generalize"] == pytest.approx(np.mean([m["t_generalize"] for m in res["members"]]))
    assert summary["grok/t_generalize_std"] == pytest.approx(np.std([m["t_generalize"] for m in res["members"]]))
    assert summary["grok/t_generalize_std"] > 0  # three different seeds

    members = _table(run_dir, summary, "theory/members")
    assert members["columns"][:4] == ["member", "seed", "t1", "t2"]
    assert len(members["data"]) == 3
    for i, (row, m) in enumerate(zip(members["data"], res["members"], strict=True)):
        assert row[:7] == [
            i,
            i,
            m["t_overfit"],
            m["t_generalize"],
            m["grokking_time"],
            m["exact"]["t_overfit"],
            m["exact"]["t_generalize"],
        ]
        assert row[7:] == pytest.approx([m["final"]["train/loss"], m["final"]["test/loss"]])
    assert len(_table(run_dir, summary, "theory/bounds")["data"]) == sum(len(m["bounds"]) for m in res["members"])

    # the exact curves follow the measured ones: the members' mean (and std) at each logged step
    exacts = _exact("ridge.yaml", *args)
    rows = [h for h in _history(records) if "train/loss" in h]
    for h in rows[:: max(1, len(rows) // 5)]:
        s = h["gd_step"]
        per_member = [float(e.train_loss(s)[0]) for e in exacts]
        assert h["exact/train/loss"] == pytest.approx(np.mean(per_member), rel=1e-12)
        assert h["exact/train/loss_std"] == pytest.approx(np.std(per_member), rel=1e-9, abs=1e-300)
        assert h["train/loss"] == pytest.approx(h["exact/train/loss"], rel=1e-6)


def test_a_wandb_error_while_logging_a_table_is_one_line_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    import wandb

    class BrokenTable(wandb.Table):  # still a Table to wandb's own isinstance checks
        def __init__(self, *args, **kwargs):
            raise RuntimeError("no tables today")

    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setattr(wandb, "Table", BrokenTable)
    status, res = fit("ridge.yaml", tmp_path, "wandb.mode=offline", "optim.weight_decay=1e-3", "trainer.max_steps=500")
    assert status == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lightning-grok: W&B:")]
    assert err == [
        f"lightning-grok: W&B: could not log the {what} table (RuntimeError: no tables today)"
        for what in ("bounds", "exact-versus-measured")  # a single run has no members table
    ]
    assert json.loads((tmp_path / "phases.json").read_text())["t_overfit"] == res["t_overfit"]
    run_dir = _offline_run(tmp_path)  # the rest still reached W&B
    assert [a["name"] for a in _of(_records(run_dir), "artifact") if a["type"] == "results"]
    assert _summary(run_dir)["theory/curves"]["_type"] == "image-file"


def _member(t1: int, t2: int, acc_t2: int | None) -> dict:
    times = {"t_overfit": t1, "t_generalize": t2, "grokking_time": t2 - t1}
    acc = {"t_overfit": 5, "t_generalize": acc_t2, "grokking_time": None if acc_t2 is None else acc_t2 - 5}
    return times | {"steps_run": 900, "final": {"train/loss": 0.1}, "accuracy": acc, "exact": None, "bounds": {}}


@pytest.mark.parametrize("sweep", ["modular_weight_decay", "modular_train_fraction", "modular_init_scale"])
def test_modular_sweep_metric_is_the_accuracy_t2_that_flat_summary_writes(sweep):
    import yaml

    from lightning_grok.results import flat_summary

    metric = yaml.safe_load((Path(__file__).resolve().parents[1] / "sweeps" / f"{sweep}.yaml").read_text())["metric"]
    assert metric == {"name": "grok/acc/t_generalize", "goal": "minimize"}
    one = _member(10, 400, 300)
    single = flat_summary(one | {"status": "completed", "members": [one]})  # the shape with a members list of 1
    assert single[metric["name"]] == 300 and single["grok/t_generalize"] == 400
    assert not [k for k in single if k.startswith("grok/member_") or k.endswith("_std")]
    members = [_member(10, 400, 300), _member(20, 600, 500), _member(30, 800, 700)]
    agg = {"t_generalize": {"mean": 600.0, "std": 163.3, "min": 400.0, "max": 800.0}}
    top = {"status": "completed", "steps_run": 900, "t_overfit": 20.0, "t_generalize": 600.0, "grokking_time": 580.0}
    ensemble = flat_summary(top | {"members": members, "aggregate": agg})
    assert ensemble[metric["name"]] == 500.0 and ensemble["grok/t_generalize_std"] == 163.3
    assert not [k for k in ensemble if k.startswith("grok/member_")]
    members[1]["accuracy"]["t_generalize"] = None  # a member that never generalized: no mean
    assert flat_summary(top | {"members": members, "aggregate": agg})[metric["name"]] is None
