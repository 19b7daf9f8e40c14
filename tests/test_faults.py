"""Faults a shared cluster does to a run, with real processes, real signals and real files.

Each test starts ``lightning-grok fit`` as its own process, injects the fault (``os.kill`` with SIGTERM,
SIGINT, SIGUSR1 or SIGKILL, a truncated checkpoint, a full or read-only tmpfs, a second process, a changed
config) and checks the exit status, the files left behind and, where the run resumes, that it ends with
exactly the t1, t2 and final losses of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, fit, load

# a run long enough (about 10 s of GD on 2 cores) to be signalled mid-way, with both transitions inside
LONG = (
    "model.width=2000",
    "optim.weight_decay=2e-4",
    "trainer.max_steps=20000",
    "trainer.steps_per_call=100",
    "trainer.checkpoint_every=1000",
)


def command(out: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lightning_grok",
        "fit",
        "configs/ridge.yaml",
        f"output_dir={out}",
        "wandb.mode=disabled",
        "trainer.progress_bar=false",
        *overrides,
    ]


def start(out: Path, *overrides: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    log = open(out.parent / f"{out.name}.log", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(command(out, *overrides), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def run(out: Path, *overrides: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command(out, *overrides), cwd=REPO, capture_output=True, text=True, timeout=timeout)


def log_of(out: Path) -> str:
    return (out.parent / f"{out.name}.log").read_text()


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended before {path.name} appeared"
        assert time.monotonic() < end, f"{path} did not appear"
        time.sleep(0.05)


def phases(out: Path) -> dict:
    return json.loads((out / "phases.json").read_text())


def ckpt_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    status, res = fit("ridge.yaml", tmp_path_factory.mktemp("whole"), *LONG)
    assert status == 0 and res["t_overfit"] is not None and res["t_generalize"] is not None
    return res


def assert_same_run(res: dict, whole: dict) -> None:
    assert res["status"] == "completed"
    for key in ("t_overfit", "t_generalize", "grokking_time", "steps_run", "final"):
        assert res[key] == whole[key], key


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_stop_signal_checkpoints_and_the_same_command_resumes_exactly(tmp_path, uninterrupted, sig, code):
    out = tmp_path / "run"
    proc = start(out, *LONG)
    wait_for(out / "checkpoints" / "last.ckpt", proc)
    os.kill(proc.pid, sig)
    assert proc.wait(timeout=120) == code, log_of(out)
    stopped = phases(out)
    assert stopped["status"] == "interrupted"
    assert 0 < stopped["steps_run"] < 20000
    assert ckpt_state(out / "checkpoints" / "last.ckpt")["grok"]["gd_step"] == stopped["steps_run"]
    assert f"stopped by {sig.name}" in log_of(out) and "Traceback" not in log_of(out)
    again = run(out, *LONG)
    assert again.returncode == 0, again.stderr[-3000:]
    assert_same_run(phases(out), uninterrupted)


def test_sigusr1_checkpoints_only_at_chunk_boundaries(tmp_path):
    """SIGUSR1 sent many times while chunks run: every checkpoint taken holds a whole number of chunks, the
    exact GD iterate of that step, and phase measurements up to that very step."""
    from lightning_grok.experiment import build
    from lightning_grok.theory.exact import ExactDynamics

    # ten times LONG's steps, so a fast machine still runs chunks while eight signals arrive
    args = (*LONG, "trainer.max_steps=200000", "optim.weight_decay=2e-5")
    out = tmp_path / "run"
    proc = start(out, *args)
    last = out / "checkpoints" / "last.ckpt"
    wait_for(last, proc)
    taken = []
    for i in range(8):
        before = last.stat().st_mtime_ns
        os.kill(proc.pid, signal.SIGUSR1)
        end = time.monotonic() + 30
        while last.stat().st_mtime_ns == before and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.005)
        if proc.poll() is not None:
            break
        copy = tmp_path / f"usr1-{i}.ckpt"
        shutil.copy(last, copy)
        taken.append(copy)
        time.sleep(0.02)
    assert proc.wait(timeout=300) == 0, log_of(out)
    assert len(taken) >= 4, log_of(out)
    assert "SIGUSR1: checkpoint at GD step" in log_of(out)
    dynamics = ExactDynamics(build(load("ridge.yaml", *args)).problem)
    steps = set()
    for path in taken:
        state = ckpt_state(path)
        step = state["grok"]["gd_step"]
        steps.add(step)
        assert step % 100 == 0, step  # steps_per_call = 100
        theta = state["state_dict"]["model.theta"].numpy().ravel()
        assert theta == pytest.approx(dynamics.theta(step).ravel(), abs=1e-9)
        (callback_state,) = [v for k, v in state["callbacks"].items() if k.startswith("PhaseTransitionCallback")]
        assert all(m["steps_run"] == step for m in callback_state["members"])
    assert len(steps) >= 3
    res = phases(out)
    assert res["status"] == "completed" and res["t_generalize"] is not None
    assert res["exact"]["t_overfit_matches"] and res["exact"]["t_generalize_matches"], res["exact"]


def test_kill_9_then_the_same_command_resumes_exactly(tmp_path, uninterrupted):
    out = tmp_path / "run"
    proc = start(out, *LONG)
    wait_for(out / "checkpoints" / "last.prev.ckpt", proc)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    again = run(out, *LONG)  # the dead process's lock went with it
    assert again.returncode == 0, again.stderr[-3000:]
    assert_same_run(phases(out), uninterrupted)


def test_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path, uninterrupted):
    out = tmp_path / "run"
    proc = start(out, *LONG)
    wait_for(out / "checkpoints" / "last.prev.ckpt", proc)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    last = out / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # what a full disk leaves behind
    again = run(out, *LONG)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"skipping checkpoint {last}" in again.stderr and "Traceback" not in again.stderr
    assert_same_run(phases(out), uninterrupted)


@pytest.mark.parametrize("damage", ["empty", "foreign"])
def test_no_usable_checkpoint_exits_2_naming_the_file(tmp_path, damage):
    out = tmp_path / "run"
    first = run(out, "trainer.max_steps=300")
    assert first.returncode == 0, first.stderr[-3000:]
    last = out / "checkpoints" / "last.ckpt"
    if damage == "empty":
        last.write_bytes(b"")
    else:
        torch.save({"state_dict": {}, "epoch": 3}, last)
    again = run(out, "trainer.max_steps=600")
    assert again.returncode == 2, again.stderr[-3000:]
    assert str(last) in again.stderr and "Traceback" not in again.stderr
    assert ("empty file" if damage == "empty" else "not a lightning_grok checkpoint") in again.stderr
    assert phases(out)["steps_run"] == 300  # nothing was touched


def test_resuming_with_another_config_is_refused_and_touches_nothing(tmp_path):
    out = tmp_path / "run"
    first = run(out, "trainer.max_steps=300")
    assert first.returncode == 0, first.stderr[-3000:]
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    again = run(out, "trainer.max_steps=300", "optim.weight_decay=1e-5", "seed=3")
    assert again.returncode == 2
    assert "optim.weight_decay" in again.stderr and "seed" in again.stderr and "Traceback" not in again.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    longer = run(out, "trainer.max_steps=600")  # max_steps may change: the run goes on
    assert longer.returncode == 0 and phases(out)["steps_run"] == 600


def test_a_second_process_into_a_live_run_directory_is_refused_at_once(tmp_path):
    out = tmp_path / "run"
    endless = (*LONG, "trainer.max_steps=100000000")
    proc = start(out, *endless)
    try:
        wait_for(out / "config.yaml", proc)
        t0 = time.monotonic()
        second = run(out, *endless)
        assert second.returncode == 2, second.stderr[-3000:]
        assert f"pid {proc.pid}" in second.stderr and "Traceback" not in second.stderr
        assert time.monotonic() - t0 < 30
    finally:
        proc.kill()
        proc.wait()


def test_output_dir_that_is_a_file_exits_2_before_building(tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a directory")
    res = run(target)
    assert res.returncode == 2 and "is a file" in res.stderr and "Traceback" not in res.stderr


def test_read_only_output_dir_exits_2_before_building(tmpfs):
    mnt = tmpfs("ro,size=1m")
    res = run(mnt / "run")
    assert res.returncode == 2, res.stderr[-2000:]
    assert "cannot be written" in res.stderr and "Traceback" not in res.stderr
    assert "GPU available" not in res.stdout + res.stderr  # refused before the Trainer existed


def test_full_disk_exits_1_and_leaves_earlier_results_intact(tmpfs):
    mnt = tmpfs("size=96k")  # room for one checkpoint of m = 1000 (31 kB) and its successor, not a third
    out = mnt / "run"
    res = run(out, "trainer.max_steps=20000", "trainer.steps_per_call=500", "trainer.checkpoint_every=500")
    assert res.returncode == 1, res.stdout[-2000:] + res.stderr[-2000:]
    assert "No space left on device" in res.stderr and "Traceback" not in res.stderr
    # the message names the file that could not be written (a write error alone carries no file name)
    named = res.stderr.split("cannot write ", 1)[1].split(": No space left", 1)[0]
    assert named.startswith(str(out)) and not named.endswith(".tmp"), res.stderr
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # no half-written file
    ckpts = sorted((out / "checkpoints").glob("*.ckpt"))
    assert ckpts
    for path in ckpts:  # every checkpoint left is whole and resumable
        assert ckpt_state(path)["grok"]["gd_step"] % 500 == 0
    assert (out / "config.yaml").read_text().startswith("seed:")


def test_result_files_honour_the_umask(tmp_path):
    res = run(tmp_path / "run", "trainer.max_steps=200")
    assert res.returncode == 0
    for name in ("phases.json", "curves.json", "config.yaml", "checkpoints/last.ckpt"):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o644, name


def test_a_finite_blow_up_is_diverged_not_completed(tmp_path):
    """Just above the stability limit the loss grows by a constant factor per step: it stays finite for
    thousands of steps, and must still be reported diverged (exit 3) as soon as it is a million-fold up."""
    from lightning_grok.theory.predict import predictions

    limit = predictions(load("ridge.yaml"))["stability"]["limit"]
    res = run(tmp_path / "run", f"optim.lr={1.02 * limit}", "optim.allow_unstable=true", "trainer.max_steps=20000")
    assert res.returncode == 3, res.stderr[-2000:]
    out = phases(tmp_path / "run")
    assert out["status"] == "diverged" and out["diverged_at"] < out["steps_run"] < 20000
    assert all(v < 1e300 for v in out["final"].values())  # finite: the old check waited for inf
