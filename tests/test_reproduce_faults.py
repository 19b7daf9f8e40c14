"""`lightning-grok reproduce` under faults, with real processes, real signals and real files.

Each test starts ``python -m lightning_grok reproduce`` as its own process: SIGTERM and SIGINT mid-sweep (exit
143 / 130, every agent and run stopped at a checkpoint and recorded ``killed``, no figure; the same command then
resumes and draws exactly the t1, t2 of an uninterrupted reproduce), an incomplete sweep (exit 4 unless
``--partial``), ``--from`` on a folder with no run, bad overrides and ``--out`` a file (exit 2, nothing made),
and a full disk while the figure is saved (exit 1 naming the file).

The figure is Fig. 7 at ``--quick`` size: one panel, one point (two seeds batched), made long enough (about 380
chunks of 20 GD steps, a checkpoint every 500) to be signalled mid-way. One module fixture runs it
uninterrupted; the other tests compare with it or draw from it.
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

from lightning_grok.sweep.state import process_alive

REPO = Path(__file__).resolve().parents[1]
FIGURE = "fig7"
ARGS = (
    FIGURE,
    "--quick",
    "wandb.mode=disabled",
    "optim.weight_decay=2.5e-4",  # t2 about 7000 steps: the run ends near step 7700, some seconds in
    "trainer.max_steps=20000",
    "trainer.steps_per_call=20",
    "trainer.checkpoint_every=500",
)
OUTPUTS = (f"{FIGURE}.png", f"{FIGURE}.pdf", f"{FIGURE}.json", f"{FIGURE}_fits.md")
TIMEOUT = 400
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def env(request, tmp_path_factory) -> dict[str, str]:
    """W&B disabled; one torch thread per run (the cores are shared: two threads each only contend); where
    PYTHONDONTWRITEBYTECODE is set, a bytecode cache outside the tree (else each process recompiles torch)."""
    env = dict(os.environ, WANDB_MODE="disabled", WANDB_SILENT="true", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WANDB_API_KEY", None)
    if env.pop("PYTHONDONTWRITEBYTECODE", None):
        cache = request.config.cache
        env["PYTHONPYCACHEPREFIX"] = str(cache.mkdir("pycache") if cache else tmp_path_factory.mktemp("pycache"))
    return env


def command(out: Path, *extra: str, args: tuple[str, ...] = ARGS) -> list[str]:
    return [sys.executable, "-m", "lightning_grok", "reproduce", *args, "--out", str(out), *extra]


def run(cmd: list[str], env: dict, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def times(figure_json: Path) -> list[tuple]:
    """Per point of every panel: x, and the seeds' t1 and t2 (GD steps)."""
    data = json.loads(figure_json.read_text())
    return [
        (key, p["x"], p["t1"]["values"], p["t2"]["values"])
        for key, panel in data["panels"].items()
        for p in panel["points"]
    ]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, env) -> Path:
    """The --out of an uninterrupted reproduce."""
    out = tmp_path_factory.mktemp("uninterrupted")
    res = run(command(out), env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert times(out / f"{FIGURE}.json")[0][3][0] is not None  # t2 measured
    return out


def sweep_dirs(out: Path) -> list[Path]:
    return [p.parent for p in (out / FIGURE).glob("*/state.json")]


def wait_mid_run(out: Path, proc: subprocess.Popen, log: Path, timeout: float = TIMEOUT) -> Path:
    """The run directory of a point that is running and has written a checkpoint (polls the sweep's state)."""
    end = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"reproduce ended before a run was mid-way:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < end, "no run reached its first checkpoint"
        for sweep in sweep_dirs(out):
            try:
                runs = json.loads((sweep / "state.json").read_text())["runs"]
            except (OSError, ValueError, KeyError):
                continue
            for rec in runs.values():
                run_dir = sweep / rec["output_dir"]
                if rec["state"] == "running" and (run_dir / "checkpoints" / "last.ckpt").is_file():
                    return run_dir
        time.sleep(0.05)


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_stop_signal_stops_every_run_and_the_same_command_resumes_exactly(tmp_path, env, baseline, sig, code):
    out = tmp_path / "out"
    log, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with open(log, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(command(out), cwd=REPO, env=env, stdout=stdout, stderr=stderr)
        try:
            run_dir = wait_mid_run(out, proc, log)
            os.kill(proc.pid, sig)
            assert proc.wait(timeout=TIMEOUT) == code, log.read_text()[-3000:] + err.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    assert f"stopped by {sig.name}" in err.read_text() and "Traceback" not in log.read_text() + err.read_text()
    assert not [name for name in OUTPUTS if (out / name).exists()]  # no figure from a partial sweep
    # the agent stopped its run at a chunk boundary, checkpointed, and recorded it; both are gone
    (sweep,) = sweep_dirs(out)
    (rec,) = json.loads((sweep / "state.json").read_text())["runs"].values()
    assert rec["state"] == "killed" and sig.name in rec["reason"], rec
    assert rec["exit_code"] == 143  # fit's "stopped by SIGTERM, checkpoint saved" (the agent sends SIGTERM)
    assert not process_alive(rec["agent"]["pid"]) and not process_alive(rec["child_pid"])
    stopped = json.loads((run_dir / "phases.json").read_text())
    (whole,) = [json.loads(p.read_text()) for p in baseline.rglob("phases.json")]
    assert stopped["status"] == "interrupted" and 500 <= stopped["steps_run"] < whole["steps_run"]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    # the same command resumes the run from its checkpoint and draws what an uninterrupted reproduce draws
    again = run(command(out), env)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming from" in (run_dir / "agent.log").read_text()
    assert (out / f"{FIGURE}.png").is_file()
    assert times(out / f"{FIGURE}.json") == times(baseline / f"{FIGURE}.json")
    first, retry = sorted(json.loads((sweep / "state.json").read_text())["runs"].values(), key=lambda r: r["index"])
    assert first["state"] == "killed" and retry["state"] == "finished" and retry["retry_of"] == first["name"]
    assert retry["output_dir"] == first["output_dir"]


def test_incomplete_sweep_is_drawn_only_with_partial(tmp_path, env, baseline):
    """An interrupted point (phases.json status interrupted): exit 4 naming the panel and what it lacks, no
    figure file; --partial draws what there is and says in the JSON what it lacks."""
    runs = tmp_path / "runs"
    shutil.copytree(baseline / FIGURE, runs / FIGURE)
    (phases_json,) = runs.rglob("phases.json")
    phases = json.loads(phases_json.read_text())
    phases["status"] = "interrupted"
    phases_json.write_text(json.dumps(phases))
    res = run(command(tmp_path / "drawn", "--from", str(runs)), env)
    assert res.returncode == 4, res.stdout[-3000:] + res.stderr[-3000:]
    assert "panel fourier lacks 1 of 1 point(s) (1 interrupted)" in res.stderr and "--partial" in res.stderr
    assert "Traceback" not in res.stderr
    assert not [name for name in OUTPUTS if (tmp_path / "drawn" / name).exists()]
    res = run(command(tmp_path / "drawn", "--from", str(runs), "--partial"), env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    data = json.loads((tmp_path / "drawn" / f"{FIGURE}.json").read_text())
    assert data["lacking"] == {"fourier": {"missing": 1, "points": 1, "interrupted": 1}}
    assert data["panels"]["fourier"]["runs"] == 0 and (tmp_path / "drawn" / f"{FIGURE}.png").is_file()


@pytest.mark.parametrize("kind", ["missing", "empty", "no run"])
def test_from_a_folder_without_runs_exits_2_naming_it(tmp_path, env, kind):
    source = tmp_path / "source"
    if kind != "missing":
        source.mkdir()
    if kind == "no run":
        (source / FIGURE / "fig7_fourier" / "runs").mkdir(parents=True)
        (source / FIGURE / "fig7_fourier" / "notes.txt").write_text("no phases.json here")
    res = run(command(tmp_path / "out", "--from", str(source)), env)
    assert res.returncode == 2, res.stdout[-3000:] + res.stderr[-3000:]
    assert str(source) in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()  # no empty figure


BAD_OVERRIDES = [
    ("optim.weight_decay=[1e-3", "optim.weight_decay", "[1e-3"),
    ("[1e-3", None, "[1e-3"),
    ("nosuchkey=1", "nosuchkey", "1"),
    ("optim.lr=nan", "optim.lr", "nan"),
    ("model.width=1e7", "model.width", "1e7"),
]


@pytest.mark.parametrize("item,key,value", BAD_OVERRIDES, ids=[b[0] for b in BAD_OVERRIDES])
def test_bad_override_exits_2_with_fits_message_before_any_folder(tmp_path, env, item, key, value):
    out = tmp_path / "out"
    res = run(command(out, item), env)
    assert res.returncode == 2, res.stdout[-3000:] + res.stderr[-3000:]
    assert value in res.stderr and (key is None or key in res.stderr) and "Traceback" not in res.stderr
    assert not out.exists()  # validated before any folder was made
    if key is None:  # not key=value: argparse's message, as for fit
        assert "unrecognized arguments" in res.stderr
        return
    config = REPO / "configs" / "paper" / "fig7_fourier.yaml"
    fit = run([sys.executable, "-m", "lightning_grok", "fit", str(config), f"output_dir={tmp_path / 'fit'}", item], env)
    assert fit.returncode == 2
    said = fit.stderr.strip().splitlines()[-1].removeprefix("lightning-grok: error: ")
    assert said in res.stderr  # the message fit gives for the same override


def test_out_that_is_a_file_exits_2(tmp_path, env):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    res = run(command(target), env)
    assert res.returncode == 2 and str(target) in res.stderr and "is a file" in res.stderr
    assert "Traceback" not in res.stderr and target.read_text() == "not a folder"


def test_full_disk_while_saving_the_figure_exits_1_naming_the_file(tmpfs, env, baseline):
    mnt = tmpfs("size=32k")  # the PNG takes about 70 kB
    res = run(command(mnt, "--from", str(baseline)), env)
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and str(mnt / f"{FIGURE}.png") in lines[0] and "No space left on device" in lines[0]
    assert list(mnt.iterdir()) == []  # no half-written file, no temporary file left
