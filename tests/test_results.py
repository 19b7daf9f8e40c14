"""One result schema: a single run is an ensemble of one; load_run reads any version; a sweep loads as a DataFrame;
sweep-table shows pending points and aggregates seeds."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, fit, write_sweep

from lightning_grok.results import SCHEMA_VERSION, TIMES, ResultError, load_run, runs_frame

SMALL = ("model.width=200", "data.n_train=20", "trainer.max_steps=3000", "wandb.mode=disabled")
RUN = (*SMALL, "optim.weight_decay=1e-3")  # t2 within the 3000 steps


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    assert fit("ridge.yaml", root / "single", *RUN)[0] == 0
    assert fit("ridge.yaml", root / "ensemble", *RUN, "seeds=3")[0] == 0
    return root


def test_a_single_run_and_an_ensemble_have_one_shape(runs):
    single, ens = load_run(runs / "single"), load_run(runs / "ensemble")
    raw_single = json.loads((runs / "single" / "phases.json").read_text())
    raw_ens = json.loads((runs / "ensemble" / "phases.json").read_text())
    assert raw_single["schema"] == raw_ens["schema"] == SCHEMA_VERSION
    # every field of the ensemble's file is in the single run's, and the members have the same fields
    assert set(raw_ens) <= set(raw_single)
    assert {frozenset(m) for m in raw_single["members"] + raw_ens["members"]} == {frozenset(raw_single["members"][0])}
    assert (len(single.members), len(ens.members)) == (1, 3)
    assert ens.seeds == [0, 1, 2] and single.seeds == [0]
    # the single run keeps its documented top-level fields: they are its member's
    member = single.members[0]
    for key in ("t_overfit", "t_generalize", "grokking_time", "steps_run"):
        assert raw_single[key] == raw_single["members"][0][key] == getattr(member, key), key
    assert {k: raw_single["exact"][k] for k in TIMES} == {k: member.exact[k] for k in TIMES}
    assert {n: (b["value"], b["verdict"]) for n, b in raw_single["bounds"].items()} == {
        n: (b.value, b.verdict) for n, b in member.bounds.items()
    }
    assert single.t_generalize == member.t_generalize == member.exact.t_generalize is not None
    # the ensemble's top-level times are the members' mean; member 0 is the single run (same seed)
    t2 = [m.t_generalize for m in ens.members]
    assert ens.t_generalize == pytest.approx(np.mean(t2)) and ens.data["aggregate"]["t_generalize"]["values"] == t2
    assert list(ens.aggregate["t_generalize"].values) == t2
    assert ens.members[0].t_generalize == single.t_generalize
    assert ens.members[0].final == pytest.approx(single.members[0].final, rel=1e-12)


def test_load_run_reads_a_version_1_single_run(runs, tmp_path):
    """Version 1 wrote a single run without members: load_run gives it the current shape."""
    raw = json.loads((runs / "single" / "phases.json").read_text())
    old = {k: v for k, v in raw.items() if k not in ("members", "aggregate", "schema")}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "phases.json").write_text(json.dumps(old))
    run = load_run(tmp_path / "old")
    assert run.data["schema"] == run.schema == 1 and len(run.members) == 1
    assert {n: b.value for n, b in run.members[0].bounds.items()} == {n: b["value"] for n, b in raw["bounds"].items()}
    assert run.t_generalize == raw["t_generalize"]
    assert run.data["aggregate"]["t_generalize"]["values"] == [raw["t_generalize"]]


def test_load_run_names_a_missing_or_corrupt_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_run(tmp_path)
    (tmp_path / "phases.json").write_text("{not json")
    with pytest.raises(ResultError, match="phases.json: not valid JSON"):
        load_run(tmp_path)


def test_runs_load_as_a_dataframe_one_row_per_member(runs):
    df = runs_frame(runs)
    assert len(df) == 4 and sorted(df["seed"]) == [0, 0, 1, 2]
    assert "seeds" in df.columns  # the config key that differs between the two runs
    assert (df["t_generalize"] == df["exact_t_generalize"]).all()
    assert (df["bound/eq8_t_generalize_lower"] == "holds").all()
    single = df[df["seeds"] == 1].iloc[0]
    assert single["t_generalize"] == load_run(runs / "single").t_generalize


def test_sweep_table_shows_pending_points_and_the_mean_over_seeds(tmp_path):
    params = {
        "optim.weight_decay": {"values": [1e-3, 2e-3]},
        "seed": {"values": [0, 1]},
        **{k: {"value": v} for k, v in (a.split("=") for a in SMALL)},
    }
    sweep = write_sweep(tmp_path / "grid.yaml", params)
    cli = [sys.executable, "-m", "lightning_grok"]
    agent = subprocess.run(
        [*cli, "sweep", str(sweep), "--sweep-dir", str(tmp_path / "s"), "--count", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert agent.returncode == 0, agent.stdout + agent.stderr
    table = subprocess.run([*cli, "sweep-table", str(tmp_path / "s")], cwd=REPO, capture_output=True, text=True)
    assert table.returncode == 0, table.stderr
    text = table.stdout
    assert "4 point(s): 2 finished, 2 pending" in text, text
    assert len([line for line in text.splitlines() if line.startswith("-  ") and "pending" in line]) == 2
    # the aggregate: the first weight decay's two seeds, finished; the second's two, pending
    block = text.split("per point, over seeds (GD steps):\n")[1].splitlines()
    assert block[0].split()[:2] == ["optim.weight_decay", "seeds"]
    first, second = block[1].split(), block[2].split()
    frame = runs_frame(tmp_path / "s")
    t2 = frame["t_generalize"].to_numpy(dtype=float)
    assert first[:2] == ["0.001", "2"] and float(first[4]) == pytest.approx(t2.mean(), rel=1e-3)
    assert second[:2] == ["0.002", "0"] and second[-1] == "2"
