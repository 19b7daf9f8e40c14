"""The offline sweep agent: the sweep files, several agents on one grid, a killed agent, signals, bad input.

Agents and runs are the real CLI in subprocesses, on a ridge problem small enough to grok within
3000 steps (lightning-grok theory: t1 ~ 40, t2 ~ 1300-2600 for lambda = 1e-3 or 2e-3). Signals are real
(``os.kill`` on the agent's PID), sent once the run has written its first periodic checkpoint.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from conftest import SWEEP_COMMAND, write_sweep

from lightning_grok.config import load_config
from lightning_grok.sweep.agent import classify
from lightning_grok.sweep.spec import SweepSpecError, import_sweeps, load_spec
from lightning_grok.sweep.state import AgentInfo, SweepDir, point_key, process_alive

REPO = Path(__file__).resolve().parents[1]
SWEEP_FILES = sorted((REPO / "sweeps").glob("*.yaml"))
PANELS = ("weight_decay", "n_train", "width", "init_scale")
COMMAND = SWEEP_COMMAND
TINY = {  # constants of every test sweep: a run takes seconds, most of it Python start-up
    "model.width": {"value": 200},
    "data.n_train": {"value": 20},
    "trainer.max_steps": {"value": 3000},
    "trainer.progress_bar": {"value": False},
}
AGENT_TIMEOUT = 300


@pytest.fixture(scope="session")
def agent_env(request, tmp_path_factory) -> dict[str, str]:
    """Environment for agent subprocesses.

    Where PYTHONDONTWRITEBYTECODE is set, every process would recompile torch and Lightning (~20 s);
    a bytecode cache outside the source tree keeps each run to a few seconds.
    """
    env = dict(os.environ, WANDB_MODE="disabled", WANDB_SILENT="true")
    env.pop("WANDB_API_KEY", None)
    if env.pop("PYTHONDONTWRITEBYTECODE", None):
        cache = request.config.cache
        prefix = cache.mkdir("pycache") if cache is not None else tmp_path_factory.mktemp("pycache")
        env["PYTHONPYCACHEPREFIX"] = str(prefix)
        marker = Path(prefix) / ".warm"
        if not marker.exists():  # compile once, not in three agents at the same time
            subprocess.run([sys.executable, "-c", "import lightning_grok.experiment, wandb"], env=env, check=True)
            marker.touch()
    return env


def start_agent(sweep: Path, sweep_dir: Path, env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lightning_grok", "sweep", str(sweep), "--sweep-dir", str(sweep_dir), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run_agent(sweep: Path, sweep_dir: Path, env: dict, *args: str) -> str:
    proc = start_agent(sweep, sweep_dir, env, *args)
    out, _ = proc.communicate(timeout=AGENT_TIMEOUT)
    assert proc.returncode == 0, out
    return out


def records(sweep_dir: Path) -> list[dict]:
    return list(SweepDir(sweep_dir).read()["runs"].values())


# ---- (1) the sweep files -----------------------------------------------------------------------------
def test_every_figure_panel_has_a_sweep_file():
    stems = {p.stem for p in SWEEP_FILES}
    expected = {f"fig{f}_{panel}" for f in (2, 3, 4) for panel in PANELS} | {"modular_weight_decay"}
    assert expected <= stems, f"missing: {sorted(expected - stems)}"


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_sweep_file_is_a_valid_wandb_sweep_whose_points_all_load(path: Path, monkeypatch):
    raw = yaml.safe_load(path.read_text())
    assert import_sweeps().schema_violations_from_proposed_config(raw) == []
    assert raw["method"] == "grid"
    config = raw["command"][5]
    # classification runs (modular arithmetic) are judged by accuracy: flat_summary's grok/acc/t_generalize
    metric = "grok/acc/t_generalize" if config.startswith("configs/modular/") else "grok/t_generalize"
    assert raw["metric"] == {"name": metric, "goal": "minimize"}
    assert "early_terminate" not in raw and "No early_terminate on purpose" in path.read_text()
    assert raw["command"] == [*COMMAND[:5], config, "${args_no_hyphens}"]
    if not (REPO / config).is_file():
        pytest.skip(f"{config} does not exist yet: its grid points cannot be checked")
    monkeypatch.chdir(REPO)
    spec = load_spec(path)  # raises on any parameter name or grid value the config schema rejects
    points = spec.points()
    sizes = [len(p["values"]) for p in raw["parameters"].values() if "values" in p]
    assert len(points) == len({point_key(p) for p in points}) == len(list(itertools.product(*map(range, sizes))))
    cfg = load_config(config, spec.overrides(points[-1]))  # load_spec loaded every point; see one land
    for name, value in points[-1].items():
        assert _select(cfg, name) == value


def _select(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


@pytest.mark.parametrize("macro", ["${args_no_hyphens}", "${args}"])
def test_run_command_goes_through_the_fit_cli(macro: str, tmp_path: Path, monkeypatch):
    """The agent's command, agent overrides included, is parsed by the real fit CLI in both W&B styles."""
    import types

    from lightning_grok import cli

    seen = {}
    fake = types.ModuleType("lightning_grok.experiment")
    fake.fit = lambda cfg, name: (seen.update(cfg=cfg, name=name), (0, {}))[1]
    monkeypatch.setitem(sys.modules, "lightning_grok.experiment", fake)
    monkeypatch.chdir(REPO)
    sweep = write_sweep(
        tmp_path / "styles.yaml", {"optim.weight_decay": {"values": [1e-3]}, **TINY}, command=[*COMMAND[:-1], macro]
    )
    spec = load_spec(sweep, sweep_dir=tmp_path / "d")
    argv = spec.argv(spec.points()[0], tmp_path / "d" / "runs" / "r1")
    assert cli.main(argv[argv.index("fit") :]) == 0
    cfg = seen["cfg"]
    assert cfg.optim.weight_decay == 1e-3 and cfg.model.width == 200 and cfg.trainer.progress_bar is False
    assert cfg.wandb.group == "styles" and cfg.output_dir == str(tmp_path / "d" / "runs" / "r1")


# ---- (2) three agents, one grid ----------------------------------------------------------------------
def test_three_agents_run_each_grid_point_exactly_once(tmp_path: Path, agent_env: dict):
    grid = {"optim.weight_decay": [1e-3, 2e-3], "seed": [0, 1]}
    params = {k: {"values": v} for k, v in grid.items()} | TINY | {"wandb.mode": {"value": "offline"}}
    sweep = write_sweep(tmp_path / "grid.yaml", params)
    sweep_dir = tmp_path / "sweep"
    agents = [start_agent(sweep, sweep_dir, agent_env) for _ in range(3)]
    outs = [a.communicate(timeout=AGENT_TIMEOUT)[0] for a in agents]
    assert [a.returncode for a in agents] == [0, 0, 0], "\n".join(outs)

    runs = records(sweep_dir)
    expected = {point_key(dict(zip(grid, combo, strict=True))) for combo in itertools.product(*grid.values())}
    swept = [{k: r["params"][k] for k in grid} for r in runs]
    assert sorted(map(point_key, swept)) == sorted(expected)  # four runs, one per point: none twice, none lost
    for run in runs:
        assert (run["state"], run["exit_code"]) == ("finished", 0), run
        run_dir = sweep_dir / run["output_dir"]
        assert list((run_dir / "wandb").glob("offline-run-*")), "each run is an ordinary offline W&B run"
        phases = json.loads((run_dir / "phases.json").read_text())
        assert phases["config"]["wandb"]["group"] == "grid"
        assert run["result"]["t_overfit"] < run["result"]["t_generalize"] <= 3000

    table = subprocess.run(
        [sys.executable, "-m", "lightning_grok", "sweep-table", str(sweep_dir)],
        cwd=REPO,
        env=agent_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:7] == ["run", "state", "optim.weight_decay", "seed", "t1", "t2", "t2-t1"]
    rows = [line.split() for line in lines if line.startswith("grid-")]
    assert len(rows) == 4
    for row in rows:
        assert row[1] == "finished" and int(row[4]) < int(row[5]) and int(row[6]) == int(row[5]) - int(row[4])
        assert "ok" in row[7:]  # bound verdicts: the ridge bounds' hypotheses hold here


# ---- (3) an agent killed mid-run ---------------------------------------------------------------------
def test_killed_agent_leaves_a_crashed_point_that_a_retry_finishes(tmp_path: Path, agent_env: dict):
    # long enough to be killed mid-run: a forked run starts in well under a second
    params = {"optim.weight_decay": {"values": [1e-3]}} | TINY | {"wandb.mode": {"value": "disabled"}}
    params["trainer.max_steps"] = {"value": 300_000}
    # the parameter-space loop (O(n m) a step, about 9 s here): the row-space loop's O(n) steps end 300k steps in
    # about a second, before the agent is killed
    params["trainer.gd_loop"] = {"value": "parameter"}
    sweep = write_sweep(tmp_path / "kill.yaml", params)
    sweep_dir = tmp_path / "sweep"
    victim = start_agent(sweep, sweep_dir, agent_env)
    deadline = time.time() + 60
    child = None
    while child is None and time.time() < deadline:
        time.sleep(0.2)
        with contextlib.suppress(OSError, ValueError, IndexError):  # not written yet
            child = records(sweep_dir)[0]["child_pid"]
    assert child is not None, "the agent never started its run"
    time.sleep(1.0)
    victim.kill()
    victim.communicate(timeout=30)
    deadline = time.time() + 15
    while process_alive(child) and time.time() < deadline:
        time.sleep(0.2)
    assert not process_alive(child), "the run outlived its SIGKILLed agent"
    assert [r["state"] for r in records(sweep_dir)] == ["running"]  # nobody has looked yet

    out = run_agent(sweep, sweep_dir, agent_env)  # looks, finds the grid exhausted, runs nothing
    assert "0 run(s)" in out
    [crashed] = records(sweep_dir)
    assert crashed["state"] == "crashed" and "is gone" in crashed["reason"]

    run_agent(sweep, sweep_dir, agent_env, "--retry-failed")
    first, retry = records(sweep_dir)
    assert first["state"] == "crashed"
    assert retry["state"] == "finished" and retry["retry_of"] == first["name"] and retry["params"] == first["params"]
    assert retry["output_dir"] == first["output_dir"]  # the point's directory: fit resumes what it holds


def test_claims_reap_dead_and_silent_agents_and_retry_each_point_once(tmp_path: Path, monkeypatch):
    """The claim rules in-process: a dead PID on this machine, a silent heartbeat from another host, retries."""
    me = AgentInfo.current()
    if me.pid_start is None:
        pytest.skip("needs /proc to tell a reused PID from the original")
    monkeypatch.chdir(REPO)
    sweep = write_sweep(tmp_path / "rules.yaml", {"optim.weight_decay": {"values": [1e-3, 2e-3, 3e-3]}} | TINY)
    spec = load_spec(sweep, sweep_dir=tmp_path / "d")
    sd = SweepDir(tmp_path / "d")
    sd.init(spec)
    gone = replace(me, pid_start=me.pid_start - 1)  # this machine, our PID but another start time: a reused PID
    remote = replace(me, host="elsewhere")  # another host: judged by its heartbeat only
    a, b = sd.claim(spec, gone), sd.claim(spec, remote)
    c = sd.claim(spec, me, stale_after=60)
    assert [r["state"] for r in records(sd.root)] == ["crashed", "running", "running"]
    assert len({point_key(r["params"]) for r in (a, b, c)}) == 3
    (sd.heartbeat_dir / b["name"]).write_text(f"{time.time() - 120}\n")
    assert sd.claim(spec, me, stale_after=60) is None  # grid exhausted; the silent remote run is now crashed
    assert [r["state"] for r in records(sd.root)] == ["crashed", "crashed", "running"]
    started = time.time()
    retries = [sd.claim(spec, me, retry_failed=True, retry_before=started) for _ in range(3)]
    assert [r and r["retry_of"] for r in retries] == [a["name"], b["name"], None]
    sd.finish(retries[0]["name"], "failed", 1, None, "exit status 1")
    # the failed retry began after this agent started: not retried again by it, nor in a loop
    assert sd.claim(spec, me, retry_failed=True, retry_before=started) is None


@pytest.mark.parametrize("method", ["random", "bayes"])
def test_random_and_bayes_claims_use_the_engine_and_retry_first(method: str, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(REPO)
    params = {"optim.weight_decay": {"distribution": "log_uniform_values", "min": 1e-3, "max": 3e-3}} | TINY
    spec = load_spec(write_sweep(tmp_path / "s.yaml", params, method=method), sweep_dir=tmp_path / "d")
    sd = SweepDir(tmp_path / "d")
    sd.init(spec)
    me = AgentInfo.current()
    for i in range(3):
        rec = sd.claim(spec, me)
        assert 1e-3 <= rec["params"]["optim.weight_decay"] <= 3e-3
        result = {
            "status": "completed",
            "t_overfit": 40,
            "t_generalize": int(2.6 / rec["params"]["optim.weight_decay"]),
        }
        sd.finish(rec["name"], "failed" if i == 0 else "finished", 1 if i == 0 else 0, result, None)
    started = time.time()
    retry = sd.claim(spec, me, retry_failed=True, retry_before=started)  # no end to the space: retries first
    assert retry["retry_of"] == "s-0001"
    fresh = sd.claim(spec, me, retry_failed=True, retry_before=started)
    assert fresh["retry_of"] is None and 1e-3 <= fresh["params"]["optim.weight_decay"] <= 3e-3


# ---- (3b) signals: interrupted, preempted, resumed in the same run directory ---------------------------
LONG_STEPS = 400_000  # a few seconds of GD at this size: long enough to be interrupted mid-run
LONG = TINY | {
    "trainer.max_steps": {"value": LONG_STEPS},
    "trainer.checkpoint_every": {"value": 20_000},  # a first checkpoint soon after training starts
    "wandb.mode": {"value": "disabled"},
}


def wait_for_checkpoint(agent: subprocess.Popen, sweep_dir: Path, timeout: float = 120.0) -> Path:
    """The run directory of the agent's (only) run, once its first checkpoint exists: training is under way."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert agent.poll() is None, f"the agent ended early:\n{agent.communicate()[0]}"
        with contextlib.suppress(OSError, ValueError, IndexError):  # not claimed yet
            run_dir = sweep_dir / records(sweep_dir)[-1]["output_dir"]
            if (run_dir / "checkpoints" / "last.ckpt").is_file():
                return run_dir
        time.sleep(0.2)
    agent.kill()
    raise AssertionError(f"no checkpoint within {timeout} s:\n{agent.communicate()[0]}")


def signal_agent(agent: subprocess.Popen, sweep_dir: Path, signum: int) -> tuple[int, str, Path]:
    """Send ``signum`` to the agent once its run trains; (agent exit status, agent output, run directory)."""
    run_dir = wait_for_checkpoint(agent, sweep_dir)
    os.kill(agent.pid, signum)
    out, _ = agent.communicate(timeout=AGENT_TIMEOUT)
    return agent.returncode, out, run_dir


def assert_resumed(first: dict, retry: dict, sweep_dir: Path) -> None:
    """The retry ran in the first attempt's directory, from its checkpoint, to the end of the run."""
    assert retry["retry_of"] == first["name"] and retry["params"] == first["params"]
    assert retry["output_dir"] == first["output_dir"]
    assert (retry["state"], retry["exit_code"]) == ("finished", 0), retry
    assert retry["result"]["status"] == "completed" and retry["result"]["steps_run"] == LONG_STEPS
    assert 0 < first["result"]["steps_run"] < LONG_STEPS  # the first attempt stopped mid-run ...
    log = (sweep_dir / retry["output_dir"] / "agent.log").read_text()  # both attempts append to it
    stopped = log.index("stopped by SIGTERM")
    assert "lightning-grok: resuming from" in log[stopped:]  # ... and the retry resumed it


def test_sigterm_records_interrupted_and_retry_resumes_in_the_same_directory(tmp_path: Path, agent_env: dict):
    sweep = write_sweep(tmp_path / "term.yaml", {"optim.weight_decay": {"values": [1e-3]}} | LONG)
    sweep_dir = tmp_path / "sweep"
    status, out, run_dir = signal_agent(start_agent(sweep, sweep_dir, agent_env), sweep_dir, signal.SIGTERM)
    assert status == 128 + signal.SIGTERM, out
    [first] = records(sweep_dir)
    assert first["state"] == "killed" and first["exit_code"] == 143, first  # interrupted, never finished
    assert "interrupted by SIGTERM (exit 143)" in first["reason"] and "agent received SIGTERM" in first["reason"]
    assert first["result"]["status"] == "interrupted"
    assert json.loads((run_dir / "phases.json").read_text())["status"] == "interrupted"

    assert "0 run(s)" in run_agent(sweep, sweep_dir, agent_env)  # a killed point is retried only when asked
    run_agent(sweep, sweep_dir, agent_env, "--retry-failed")
    first, retry = records(sweep_dir)
    assert first["state"] == "killed"
    assert_resumed(first, retry, sweep_dir)


def test_sigusr1_preempts_requeues_and_the_next_agent_resumes_first(tmp_path: Path, agent_env: dict):
    """SLURM's ``--signal=B:USR1@90`` reaches the agent: it stops the run, records it preempted and requeues
    its array task; the next agent (no --retry-failed) resumes the point in its directory."""
    bin_dir = tmp_path / "bin"  # stands in for SLURM's scontrol: records how it was called
    bin_dir.mkdir()
    calls = tmp_path / "scontrol.calls"
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    # an array task's ids, without SLURM_NTASKS: Lightning must not take the runs for SLURM-launched processes
    slurm = dict(SLURM_JOB_ID="78", SLURM_ARRAY_JOB_ID="77", SLURM_ARRAY_TASK_ID="3")
    env = dict(agent_env, PATH=f"{bin_dir}{os.pathsep}{agent_env['PATH']}", **slurm)
    sweep = write_sweep(tmp_path / "usr1.yaml", {"optim.weight_decay": {"values": [1e-3]}} | LONG)
    sweep_dir = tmp_path / "sweep"
    status, out, _ = signal_agent(start_agent(sweep, sweep_dir, env), sweep_dir, signal.SIGUSR1)
    assert status == 128 + signal.SIGUSR1, out
    [first] = records(sweep_dir)
    assert first["state"] == "preempted" and first["exit_code"] == 143, first
    assert "SIGUSR1" in first["reason"] and "exit 143" in first["reason"]
    assert calls.read_text().split() == ["requeue", "77_3"] and "requeued SLURM job 77_3" in out

    out = run_agent(sweep, sweep_dir, agent_env)  # the requeued task: no flag needed
    assert "(retry of usr1-0001" in out
    first, retry = records(sweep_dir)
    assert first["state"] == "preempted"
    assert_resumed(first, retry, sweep_dir)


def test_agent_exits_1_when_every_run_it_started_failed(tmp_path: Path, agent_env: dict):
    """lr far above the GD stability limit passes the sweep's config check but is refused by fit (exit 2)."""
    params = {"optim.lr": {"values": [50.0]}} | TINY | {"wandb.mode": {"value": "disabled"}}
    sweep = write_sweep(tmp_path / "refused.yaml", params)
    sweep_dir = tmp_path / "sweep"
    agent = start_agent(sweep, sweep_dir, agent_env)
    out, _ = agent.communicate(timeout=AGENT_TIMEOUT)
    assert agent.returncode == 1, out
    assert "every run this agent started failed" in out
    [rec] = records(sweep_dir)
    assert rec["state"] == "failed" and rec["exit_code"] == 2 and "rejected config" in rec["reason"]


@pytest.mark.parametrize(
    ("exit_code", "stop", "status", "expected"),
    [
        (0, None, "completed", ("finished", None)),
        (3, None, "diverged", ("failed", "exit status 3 (diverged)")),
        (143, None, "interrupted", ("killed", "interrupted by SIGTERM (exit 143)")),  # SIGTERM to the run itself
        (130, signal.SIGINT, None, ("killed", "run interrupted by SIGINT (exit 130); the agent received SIGINT")),
        (-9, None, None, ("killed", "terminated by SIGKILL")),
        (0, None, "interrupted", ("killed", "interrupted (exit 0, phases.json status: interrupted)")),
        (0, signal.SIGTERM, None, ("killed", "run stopped (exit 0); the agent received SIGTERM")),
        (143, signal.SIGUSR1, "interrupted", ("preempted", None)),
    ],
)
def test_a_run_ended_by_a_signal_is_never_finished(exit_code, stop, status, expected):
    state, reason = classify(exit_code, stop, status)
    assert state == expected[0]
    if expected[1] is not None:
        assert reason == expected[1]


def test_preempted_points_come_first_and_retries_reuse_the_run_directory(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(REPO)
    sweep = write_sweep(tmp_path / "order.yaml", {"optim.weight_decay": {"values": [1e-3, 2e-3, 3e-3]}} | TINY)
    spec = load_spec(sweep, sweep_dir=tmp_path / "d")
    sd = SweepDir(tmp_path / "d")
    sd.init(spec)
    me = AgentInfo.current()
    a = sd.claim(spec, me)
    sd.finish(a["name"], "preempted", 143, None, "the agent received SIGUSR1")
    resumed = sd.claim(spec, me)  # before the two new points, without retry_failed
    assert resumed["retry_of"] == a["name"] and resumed["output_dir"] == a["output_dir"]
    assert resumed["command"] == a["command"]  # the very same fit command: same output_dir, so it resumes
    sd.finish(resumed["name"], "killed", 143, None, "interrupted by SIGTERM (exit 143)")
    b, c = sd.claim(spec, me), sd.claim(spec, me)
    assert b["retry_of"] is None and c["retry_of"] is None
    assert len({a["output_dir"], b["output_dir"], c["output_dir"]}) == 3
    for rec in (b, c):
        sd.finish(rec["name"], "finished", 0, None, None)
    assert sd.claim(spec, me) is None
    again = sd.claim(spec, me, retry_failed=True, retry_before=time.time() + 1)
    assert again["retry_of"] == resumed["name"] and again["output_dir"] == a["output_dir"]


# ---- (3c) a damaged state.json: one clear line, exit 2 -----------------------------------------------
DAMAGED = {
    "truncated": ('{"version": 1, "runs": {"x-0001": {"name": ', "is damaged"),
    "empty": ("", "is damaged"),
    "binary": (b"\x89PNG\r\n\x1a\n\xff\xfe", "is damaged"),
    "not a state": ("[1, 2, 3]\n", "is not a sweep state"),
    "bad record": ('{"version": 1, "next_index": 2, "runs": {"x-0001": {"name": "x-0001"}}}', "not a run record"),
}


@pytest.mark.parametrize("case", DAMAGED, ids=list(DAMAGED))
def test_damaged_state_is_a_clear_error_not_a_traceback(case: str, tmp_path: Path, monkeypatch, capsys):
    from lightning_grok import cli

    monkeypatch.chdir(REPO)
    sweep = write_sweep(tmp_path / "x.yaml", GOOD | TINY)
    sweep_dir = tmp_path / "sweep"
    SweepDir(sweep_dir).init(load_spec(sweep, sweep_dir=sweep_dir))
    content, message = DAMAGED[case]
    state = sweep_dir / "state.json"
    state.write_bytes(content if isinstance(content, bytes) else content.encode())
    for argv in (["sweep", str(sweep), "--sweep-dir", str(sweep_dir)], ["sweep-table", str(sweep_dir)]):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        [line] = err.strip().splitlines()
        assert line.startswith("lightning-grok sweep") and "error:" in line
        assert str(state) in line and message in line and "--sweep-dir" in line
    assert not list((sweep_dir / "runs").iterdir())  # nothing ran


# ---- (4) bad input: exit 2, nothing started ----------------------------------------------------------
GOOD = {"optim.weight_decay": {"values": [1e-3, 2e-3]}}
BAD = {
    "schema error": (dict(parameters={"optim.weight_decay": {"valus": [1e-3]}}), "not a valid W&B sweep config"),
    "unknown method": (dict(parameters=GOOD, method="grd"), "'grd' is not one of"),
    "custom method": (dict(parameters=GOOD, method="custom"), "not supported by the offline agent"),
    "not a config key": (dict(parameters={"optim.wd": {"values": [1e-3]}}), "parameter 'optim.wd'"),
    "bad grid value": (
        dict(parameters={"optim.weight_decay": {"values": [1e-3, -1.0]}}),
        "'optim.weight_decay' = -1.0",
    ),
    "bad type": (dict(parameters={"model.width": {"values": [100, "wide"]}}), "parameter 'model.width' = 'wide'"),
    "bad distribution": (
        dict(parameters={"optim.weight_decay": {"min": -2.0, "max": -1.0}}, method="random"),
        "parameter 'optim.weight_decay'",
    ),
    "nested parameters": (dict(parameters={"optim": {"parameters": {"weight_decay": {"values": [1e-3]}}}}), "nested"),
    "continuous under grid": (dict(parameters={"optim.weight_decay": {"min": 0.0, "max": 1.0}}), "grid"),
    "command without fit": (dict(parameters=GOOD, command=["${env}", "${interpreter}", "train.py", "${args}"]), "fit"),
    "missing run config": (dict(parameters=GOOD, command=[*COMMAND[:5], "configs/nope.yaml", COMMAND[-1]]), "nope"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_sweep_exits_2_before_any_run(case: str, tmp_path: Path, monkeypatch, capsys):
    from lightning_grok import cli

    fields, message = BAD[case]
    sweep = write_sweep(tmp_path / "bad.yaml", **fields)
    monkeypatch.chdir(REPO)
    sweep_dir = tmp_path / "sweep"
    assert cli.main(["sweep", str(sweep), "--sweep-dir", str(sweep_dir)]) == 2
    err = capsys.readouterr().err
    assert message in err and "error" in err
    assert not sweep_dir.exists()  # nothing started, no runs directory


def test_sweep_dir_of_another_sweep_is_refused(tmp_path: Path, monkeypatch, capsys):
    from lightning_grok import cli

    monkeypatch.chdir(REPO)
    sweep_dir = tmp_path / "sweep"
    first = write_sweep(tmp_path / "one.yaml", GOOD | TINY)
    SweepDir(sweep_dir).init(load_spec(first, sweep_dir=sweep_dir))
    other = write_sweep(tmp_path / "two.yaml", {"optim.weight_decay": {"values": [3e-3]}} | TINY)
    assert cli.main(["sweep", str(other), "--sweep-dir", str(sweep_dir)]) == 2
    assert "holds a different sweep" in capsys.readouterr().err
    assert records(sweep_dir) == []


def test_only_this_interpreter_running_lightning_grok_is_forked():
    """${env} ${interpreter} -m lightning_grok ... runs in a fork of the agent; anything else as a subprocess."""
    from lightning_grok.sweep.worker import forkable_args

    args = ["fit", "configs/ridge.yaml", "seed=1"]
    assert forkable_args(["/usr/bin/env", sys.executable, "-m", "lightning_grok", *args]) == args
    assert forkable_args([sys.executable, "-m", "lightning_grok", *args]) == args
    assert forkable_args(["/usr/bin/python3-other", "-m", "lightning_grok", *args]) is None
    assert forkable_args(["/usr/bin/env", "FOO=1", sys.executable, "-m", "lightning_grok", *args]) is None
    assert forkable_args(["bash", "wrapper.sh", *args]) is None


def test_a_grid_sweep_whose_metric_changed_keeps_its_directory(tmp_path: Path):
    """The metric of a grid (or random) sweep only names what W&B shows: its finished runs stay valid. Under
    bayes the metric picks the points, so there it is a different sweep."""
    sweep_dir = tmp_path / "sweep"
    first = write_sweep(tmp_path / "one.yaml", GOOD | TINY)
    SweepDir(sweep_dir).init(load_spec(first, sweep_dir=sweep_dir))
    renamed = write_sweep(
        tmp_path / "one.yaml", GOOD | TINY, metric={"name": "grok/acc/t_generalize", "goal": "minimize"}
    )
    SweepDir(sweep_dir).init(load_spec(renamed, sweep_dir=sweep_dir))  # accepted
    bayes = tmp_path / "bayes"
    SweepDir(bayes).init(load_spec(write_sweep(tmp_path / "b.yaml", GOOD | TINY, method="bayes"), sweep_dir=bayes))
    other_metric = write_sweep(
        tmp_path / "b.yaml", GOOD | TINY, method="bayes", metric={"name": "x", "goal": "maximize"}
    )
    with pytest.raises(SweepSpecError, match="holds a different sweep"):
        SweepDir(bayes).init(load_spec(other_metric, sweep_dir=bayes))


def test_with_a_priority_claims_take_the_longest_point_first(tmp_path: Path, monkeypatch):
    """reproduce's order (reproduce/schedule.py): smaller eta * lambda means a later t2, so that point goes first,
    and the estimate follows the theory's t2 at the ridge defaults within a factor of 2."""
    from lightning_grok.reproduce.schedule import point_steps, priority

    monkeypatch.chdir(REPO)
    lams = [1e-3, 1e-4, 3e-3, 3e-4]
    sweep = write_sweep(
        tmp_path / "order.yaml", {"optim.weight_decay": {"values": lams}, "phases.stop_margin": {"value": 0.05}}
    )
    spec = load_spec(sweep, sweep_dir=tmp_path / "d")
    sd = SweepDir(tmp_path / "d")
    sd.init(spec)
    import yaml

    key = priority(yaml.safe_load(sweep.read_text()))
    me = AgentInfo.current()
    order = [sd.claim(spec, me, priority=key)["params"]["optim.weight_decay"] for _ in lams]
    assert order == sorted(lams)  # 1e-4 (t2 ~ 2.3e4 steps) first, 3e-3 last
    assert sd.claim(spec, me, priority=key) is None
    config = yaml.safe_load((REPO / "configs" / "ridge.yaml").read_text())
    estimate = point_steps(config, {"phases.stop_margin": 0.0})
    assert 23320 / 2 < estimate < 2 * 23320  # the exact t2 of configs/ridge.yaml (tests/test_exact.py)
