"""The agent loop: claim a point, run ``lightning_grok fit`` on it as a subprocess, record how it ended.

Each run is the very command ``wandb agent`` would start (an ordinary W&B run, offline unless logged in),
with ``output_dir=<sweep-dir>/runs/<run>`` and ``wandb.group=<sweep>`` added. SIGTERM/SIGINT to the agent
stop its run (SIGTERM to the child, SIGKILL after ``grace`` seconds or a second signal), mark it
``killed`` and end the agent; a SIGKILLed agent takes its child with it (Linux parent-death signal) and
leaves a ``running`` record that the next agent to look marks ``crashed``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lightning_grok.sweep.spec import SweepSpec
from lightning_grok.sweep.state import AgentInfo, SweepDir, read_phases, result_of

EXIT_OK, EXIT_TOO_MANY_FAILURES = 0, 1
EXIT_NOT_STARTED = 127  # recorded for a run whose command could not be executed (the shell's convention)
# exit statuses of fit that are answers about the point, not signs of a broken setup
EXPECTED_FAILURES = {2: "rejected config", 3: "diverged"}
PR_SET_PDEATHSIG = 1
# W&B variables an enclosing agent or run may have set: inherited, they would make every run resume one
# W&B run or attach it to a sweep that exists only on the server
SCRUBBED_ENV = ("WANDB_RUN_ID", "WANDB_RESUME", "WANDB_SWEEP_ID", "WANDB_SWEEP_PARAM_PATH")


@dataclass
class AgentOptions:
    count: int | None = None  # at most this many runs from this agent; None: until the sweep is done
    retry_failed: bool = False
    stale_after: float = 600.0  # seconds without a heartbeat before another host's run counts as crashed
    heartbeat_every: float = 30.0
    grace: float = 30.0  # seconds a run gets to exit after SIGTERM before SIGKILL
    max_failures: int = 3  # consecutive unexpected failures before the agent gives up


def _child_setup(parent: int):
    """preexec_fn: die with the agent (Linux), so a SIGKILLed agent leaves no orphan training on."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # looked up before fork: the child only makes the call

    def setup() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the agent died between fork and prctl
            os._exit(1)

    return setup


# Under ``srun -n K`` every agent is one of K tasks, but each run it starts is a job of its own: inherited,
# these would make Lightning's SLURM detection treat the run as rank SLURM_PROCID of a K-process DDP job.
SLURM_SINGLE_TASK = {
    "SLURM_NTASKS": "1",
    "SLURM_NTASKS_PER_NODE": "1",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
    "SLURM_NNODES": "1",
}


def child_env() -> dict[str, str]:
    """The agent's environment, minus what would tie a run to another run, a server sweep or other tasks."""
    env = dict(os.environ)
    for key in SCRUBBED_ENV:
        env.pop(key, None)
    if env.get("SLURM_NTASKS", "1") != "1" or env.get("SLURM_NNODES", "1") != "1":
        env.update(SLURM_SINGLE_TASK)
    return env


class _Heartbeat:
    """Touches the run's heartbeat file every few seconds from a thread, for agents on other hosts."""

    def __init__(self, sweep_dir: SweepDir, name: str, every: float):
        self.sweep_dir, self.name, self.every = sweep_dir, name, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{name}", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            # a shared-filesystem hiccup: the next beat may succeed, and staleness allows for a few misses
            with contextlib.suppress(OSError):
                self.sweep_dir.beat(self.name)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def classify(exit_code: int, stop_signal: int | None) -> tuple[str, str | None]:
    """(state, reason) of an ended run, in sweeps.RunState terms."""
    if exit_code == 0:
        return "finished", None
    if stop_signal is not None:
        return "killed", f"the agent received {signal.Signals(stop_signal).name}"
    if exit_code < 0:
        return "killed", f"terminated by {signal.Signals(-exit_code).name}"
    if exit_code == 130:
        return "killed", "interrupted (exit status 130)"
    why = f" ({EXPECTED_FAILURES[exit_code]})" if exit_code in EXPECTED_FAILURES else ""
    return "failed", f"exit status {exit_code}{why}"


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class Agent:
    """One agent process. ``run()`` returns its exit status."""

    def __init__(self, spec: SweepSpec, sweep_dir: SweepDir, options: AgentOptions | None = None):
        self.spec, self.dir = spec, sweep_dir
        self.opt = options or AgentOptions()
        self.me = AgentInfo.current()
        self.stop_signal: int | None = None
        self.signal_count = 0
        self.tag = f"[agent {self.me.host}:{self.me.pid}]"

    def say(self, msg: str) -> None:
        print(f"{self.tag} {msg}", flush=True)

    def _on_signal(self, signum: int, frame) -> None:
        # only flags: the wait loop acts on them, so no lock or file is ever touched from a handler
        self.stop_signal = signum
        self.signal_count += 1

    def run(self) -> int:
        started = time.time()
        previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: the caller owns signals
                previous[sig] = signal.signal(sig, self._on_signal)
        try:
            return self._loop(started)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _loop(self, started: float) -> int:
        ran = failures = 0
        while self.stop_signal is None and (self.opt.count is None or ran < self.opt.count):
            record = self.dir.claim(
                self.spec,
                self.me,
                retry_failed=self.opt.retry_failed,
                retry_before=started,
                stale_after=self.opt.stale_after,
            )
            if record is None:
                self.say(f"nothing left to run in {self.dir.root}")
                break
            if self.stop_signal is not None:
                self.dir.release(record["name"])
                break
            state, exit_code = self.run_one(record)
            ran += 1
            unexpected = state != "finished" and exit_code not in EXPECTED_FAILURES and self.stop_signal is None
            failures = failures + 1 if unexpected else 0
            if failures >= self.opt.max_failures:
                self.say(f"giving up after {failures} runs in a row failed unexpectedly (see their agent.log)")
                return EXIT_TOO_MANY_FAILURES
        if self.stop_signal is not None:
            self.say(f"stopped by {signal.Signals(self.stop_signal).name}")
            return 128 + self.stop_signal
        self.say(f"done: {ran} run(s)")
        return EXIT_OK

    def run_one(self, record: dict) -> tuple[str, int]:
        """Run one claimed point to its end; returns (state, exit status)."""
        name = record["name"]
        run_dir = self.dir.run_dir(record)
        run_dir.mkdir(parents=True, exist_ok=True)
        log_path = run_dir / "agent.log"
        shown = " ".join(f"{k}={record['params'][k]}" for k in self.spec.swept_names) or "(constants only)"
        retry = f" (retry of {record['retry_of']})" if record.get("retry_of") else ""
        self.say(f"{name} started{retry}: {shown} (log: {log_path})")
        t0 = time.time()
        with open(log_path, "ab") as log:
            try:
                proc = subprocess.Popen(
                    record["command"],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=child_env(),
                    # its own session: a Ctrl-C in the terminal reaches the agent only, which stops the run
                    # and records it; the heartbeat thread starts after the fork, as preexec_fn requires
                    start_new_session=True,
                    preexec_fn=_child_setup(os.getpid()),
                )
            except OSError as exc:  # e.g. the interpreter is gone: a failed run, not a stuck "running" record
                self.dir.finish(name, "failed", EXIT_NOT_STARTED, None, f"could not start: {exc}")
                self.say(f"{name} failed: could not start {record['command'][0]}: {exc}")
                return "failed", EXIT_NOT_STARTED
            self.dir.update(name, child_pid=proc.pid)
            with _Heartbeat(self.dir, name, self.opt.heartbeat_every):
                exit_code = self._wait(proc)
        phases = read_phases(run_dir / "phases.json")
        result = result_of(phases) if phases else None
        state, reason = classify(exit_code, self.stop_signal)
        self.dir.finish(name, state, exit_code, result, reason)
        times = ""
        if result:
            times = f": t1={_fmt(result['t_overfit'])} t2={_fmt(result['t_generalize'])} ({result['status']})"
        self.say(f"{name} {state}{f' ({reason})' if reason else ''} after {time.time() - t0:.1f} s{times}")
        if state == "failed" and exit_code not in EXPECTED_FAILURES:
            self._show_tail(log_path)
        return state, exit_code

    def _wait(self, proc: subprocess.Popen) -> int:
        term_at = None
        while True:
            try:
                return proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
            if self.stop_signal is None:
                continue
            if term_at is None:
                self.say(f"stopping run (pid {proc.pid})")
                proc.send_signal(signal.SIGTERM)
                term_at = time.time()
            elif self.signal_count > 1 or time.time() - term_at > self.opt.grace:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)

    def _show_tail(self, log_path: Path, lines: int = 15) -> None:
        try:
            tail = log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return
        print("\n".join(f"{self.tag}   | {line}" for line in tail), file=sys.stderr, flush=True)
