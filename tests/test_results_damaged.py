"""Results read back safely: every reader of phases.json (load_run, runs_frame, reproduce's collect, the sweep
table) meets real damaged files (truncated, empty, foreign, wrong types, future schema, non-UTF-8) with one
error naming the file, or a warning naming it and the rest; curves.json keeps the exact dynamics."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
from conftest import REPO, fit, write_sweep

from lightning_grok.results import ResultError, load_curves, load_run, parse, read_curves, runs_frame

SMALL = ("model.width=200", "data.n_train=20", "trainer.max_steps=3000", "wandb.mode=disabled")
RUN = (*SMALL, "optim.weight_decay=1e-3")  # t2 within the 3000 steps


def _damages(raw: bytes) -> dict[str, tuple[bytes, str]]:
    """name -> (file content, what the error must say)."""
    doc = json.loads(raw)

    def with_(**change) -> bytes:
        return json.dumps(doc | change).encode()

    member = doc["members"][0]
    return {
        "truncated": (raw[: len(raw) // 2], "not valid JSON"),
        "empty": (b"", "empty file"),
        "foreign": (b'{"a": 1}', "not a lightning_grok result"),
        "list": (b"[1, 2, 3]", "not a lightning_grok result"),
        "t_overfit_str": (with_(t_overfit="abc"), 't_overfit: expected a number or null, got str "abc"'),
        "members_str": (with_(members="zzz"), 'members: expected a list, got str "zzz"'),
        "member_t2_float": (
            with_(members=[member | {"t_generalize": 12.5}]),
            "members[0].t_generalize: expected an integer",
        ),
        "bound_value_str": (
            with_(members=[member | {"bounds": {"eq8": {"value": "big", "verdict": "holds"}}}]),
            "members[0].bounds.eq8.value: expected a number",
        ),
        "future_schema": (with_(schema=99), "schema: 99 is newer than this lightning_grok reads"),
        "non_utf8": (b"\xff\xfe" + raw, "not UTF-8"),
    }


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    assert fit("ridge.yaml", root / "run", *RUN)[0] == 0
    return root / "run"


@pytest.fixture(scope="module")
def damaged(good, tmp_path_factory):
    """One directory per damage, a copy of the good run with its phases.json replaced."""
    root = tmp_path_factory.mktemp("damaged")
    cases = {}
    for name, (content, message) in _damages((good / "phases.json").read_bytes()).items():
        run = root / name
        shutil.copytree(good, run, ignore=shutil.ignore_patterns("checkpoints"))
        (run / "phases.json").write_bytes(content)
        cases[name] = (run, message)
    return cases


def test_load_run_raises_one_error_naming_the_file_and_the_field(damaged):
    for name, (run, message) in damaged.items():
        with pytest.raises(ResultError) as info:
            load_run(run)
        err = info.value
        assert isinstance(err, ValueError), name
        assert err.path == run / "phases.json" and str(run / "phases.json") in str(err), (name, str(err))
        assert message in str(err), (name, str(err))


def test_a_wrong_type_is_never_accepted_silently(good):
    raw = json.loads((good / "phases.json").read_text())
    assert parse(raw).members[0].t_generalize == raw["t_generalize"]
    for change in ({"steps_run": "5"}, {"status": 3}, {"final": {"train/loss": "x"}}, {"diverged_at": True}):
        with pytest.raises(ResultError):
            parse(raw | change)
    with pytest.raises(ResultError, match="empty list"):
        parse(raw | {"members": []})


def test_run_result_repr_is_one_line(good):
    text = repr(load_run(good))
    assert "\n" not in text and len(text) < 200
    assert text.startswith(f"RunResult({good}: completed, 1 member(s), ") and "t2=" in text


def test_runs_frame_warns_once_per_damaged_run_and_keeps_the_rest(good, damaged, tmp_path):
    root = tmp_path / "mixed"
    shutil.copytree(good, root / "good", ignore=shutil.ignore_patterns("checkpoints"))
    for name, (run, _) in damaged.items():
        shutil.copytree(run, root / name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = runs_frame(root)
    messages = [str(w.message) for w in caught]
    assert len(messages) == len(damaged), messages
    for name in damaged:
        assert sum(str(root / name / "phases.json") in m for m in messages) == 1, name
    assert len(frame) == 1 and frame["run_dir"].tolist() == [str(root / "good")]
    # bound values, not only verdicts
    bound = frame["bound/eq8_t_generalize_lower/value"].iloc[0]
    assert bound == load_run(good).members[0].bounds["eq8_t_generalize_lower"].value
    with pytest.raises(ResultError, match="phases.json"):
        runs_frame(root, strict=True)


def test_runs_frame_refuses_a_missing_or_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        runs_frame(tmp_path / "nowhere")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(ResultError, match="holds no run"):
        runs_frame(tmp_path / "empty")


def test_curves_keep_the_exact_dynamics_beside_the_measured_ones(good, tmp_path):
    """GD equals its closed form (Eqs. 3-5): the exact curves written at the logged steps equal the measured."""
    curves = load_curves(good)
    assert curves.index.name == "step" and curves.index.is_monotonic_increasing and len(curves) > 100
    for key in ("train/loss", "test/loss"):
        measured, exact = curves[key].to_numpy(), curves[f"exact/{key}"].to_numpy()
        assert np.allclose(measured, exact, rtol=1e-6, atol=1e-12), key
    (tmp_path / "curves.json").write_text(json.dumps({"step": [0, 1], "train/loss": [1.0]}))
    with pytest.raises(ResultError, match="train/loss: 1 values for 2 steps"):
        read_curves(tmp_path)
    (tmp_path / "curves.json").write_text('{"step": [0, 1], "train/lo')
    with pytest.raises(ResultError, match="curves.json: not valid JSON"):
        load_curves(tmp_path)


def test_reproduce_reads_the_good_runs_and_names_each_damaged_one(good, damaged, tmp_path, capsys):
    from lightning_grok.reproduce import FIGURES, exact_overlay, read_runs
    from lightning_grok.reproduce.collect import combine_curves

    root = tmp_path / "panel"
    shutil.copytree(good, root / "good", ignore=shutil.ignore_patterns("checkpoints"))
    for name in ("truncated", "foreign", "future_schema", "t_overfit_str"):
        shutil.copytree(damaged[name][0], root / name)
    panel = FIGURES["fig2"].panels[0]
    runs, left_out = read_runs(root, panel)
    err = capsys.readouterr().err
    assert [r.path for r in runs] == [root / "good"]
    assert sorted(p.name for p in left_out) == ["foreign", "future_schema", "t_overfit_str", "truncated"]
    for name in ("truncated", "foreign", "future_schema", "t_overfit_str"):
        assert str(root / name / "phases.json") in err, name
    # the exact overlay comes from the run's own curves.json, without rebuilding data or theory
    curve = combine_curves(runs)
    exact = exact_overlay(curve)
    assert np.allclose(exact["test/loss"], curve["test/loss"], rtol=1e-6)


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    params = {
        "optim.weight_decay": {"values": [1e-3, 2e-3, 3e-3]},
        **{k: {"value": v} for k, v in (a.split("=") for a in SMALL)},
    }
    sweep = write_sweep(tmp / "grid.yaml", params)
    agent = subprocess.run(
        [sys.executable, "-m", "lightning_grok", "sweep", str(sweep), "--sweep-dir", str(tmp / "s")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert agent.returncode == 0, agent.stdout + agent.stderr
    # the agent says how far the sweep is, with an ETA while points are left
    assert "] 1/3 points finished, about " in agent.stdout and "] 3/3 points finished\n" in agent.stdout
    return tmp / "s"


def _table(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "lightning_grok", "sweep-table", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_sweep_table_lists_a_damaged_run_and_prints_the_rest(sweep_dir):
    runs = sorted((sweep_dir / "runs").iterdir())
    assert len(runs) == 3
    intact = load_run(runs[2])
    (runs[0] / "phases.json").write_text('{"a": 1}')
    raw = (runs[1] / "phases.json").read_bytes()
    (runs[1] / "phases.json").write_bytes(raw[: len(raw) // 3])
    proc = _table(str(sweep_dir))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stdout.splitlines()
    for run, problem in ((runs[0], "not a lightning_grok result"), (runs[1], "not valid JSON")):
        row = next(line for line in lines if line.startswith(run.name))
        assert "damaged" in row, row
        assert any(line.startswith(f"damaged: {run.name}: ") and problem in line for line in lines), proc.stdout
    row = next(line for line in lines if line.startswith(runs[2].name)).split()
    assert str(intact.t_overfit) in row and str(intact.t_generalize) in row and "damaged" not in row
    rows = json.loads(_table(str(sweep_dir), "--json").stdout)
    assert [bool(r["damaged"]) for r in rows] == [True, True, False]


def test_sweep_table_json_into_head_ends_quietly(sweep_dir):
    """A reader that closes the pipe early (``| head``; ``| true`` closes it before the first write)."""
    for reader in ("head -c 20", "true"):
        proc = subprocess.run(
            f"{sys.executable} -m lightning_grok sweep-table --json {sweep_dir} | {reader}; exit ${{PIPESTATUS[0]}}",
            shell=True,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            executable="/bin/bash",
        )
        assert proc.returncode == 0, (reader, proc.stderr)
        assert proc.stderr == "", (reader, proc.stderr)
        assert len(proc.stdout) == (20 if reader.startswith("head") else 0)
