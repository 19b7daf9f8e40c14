"""The agent loop: claim a point, run ``lightning_grok fit`` on it as a subprocess, record how it ended.

Each run is the very command ``wandb agent`` would start (an ordinary W&B run, offline unless logged in),
with ``output_dir=<sweep-dir>/runs/<run>`` and ``wandb.group=<sweep>`` added.

Signals to the agent stop its run the way fit expects (SIGTERM to the child: it checkpoints at the next
chunk boundary and exits 143; SIGKILL after ``grace`` seconds or a second signal), record it and end the
agent with 128 + the signal:

* SIGTERM, SIGINT: the run is recorded ``killed`` (interrupted); ``--retry-failed`` resumes it.
* SIGUSR1 (``#SBATCH --signal=B:USR1@90``: the time limit or a preemption is near): recorded ``preempted``,
  then, inside a SLURM job, ``scontrol requeue`` of this job (array task). Every agent claims preempted
  points before new ones, so the requeued task resumes the run from its checkpoint.

A run that ends by a signal is never ``finished``: exit 130/143 (fit's "stopped by signal, checkpoint
saved"), death by a signal, or a phases.json saying ``interrupted`` all record ``killed``. A SIGKILLed
agent takes its child with it (Linux parent-death signal: SIGTERM, so the run still checkpoints) and
leaves a ``running`` record that the next agent to look marks ``crashed``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lightning_grok.exit_codes import (
    EXIT_ALL_FAILED,
    EXIT_CONFIG,
    EXIT_DIVERGED,
    EXIT_NOT_STARTED,
    EXIT_OK,
    EXIT_SIGNAL_BASE,
    EXIT_TOO_MANY_FAILURES,
    exit_for_signal,
)
from lightning_grok.results import RunResult, format_duration, format_value
from lightning_grok.signals import slurm_job_id
from lightning_grok.sweep.defaults import GRACE_S, HEARTBEAT_EVERY_S, MAX_FAILURES, STALE_AFTER_S
from lightning_grok.sweep.spec import SweepSpec
from lightning_grok.sweep.state import AgentInfo, SweepDir, point_key, read_result, result_of
from lightning_grok.sweep.worker import ForkedRun, forkable_args, preimport

# exit statuses of fit that are answers about the point, not signs of a broken setup
EXPECTED_FAILURES = {EXIT_CONFIG: "rejected config", EXIT_DIVERGED: "diverged"}
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
PREEMPT_SIGNAL = signal.SIGUSR1
REQUEUE_TIMEOUT = 60.0  # seconds for `scontrol requeue` to answer
PR_SET_PDEATHSIG = 1
# W&B variables an enclosing agent or run may have set: inherited, they would make every run resume one
# W&B run or attach it to a sweep that exists only on the server
SCRUBBED_ENV = ("WANDB_RUN_ID", "WANDB_RESUME", "WANDB_SWEEP_ID", "WANDB_SWEEP_PARAM_PATH")


@dataclass
class AgentOptions:
    count: int | None = None  # at most this many runs from this agent; None: until the sweep is done
    retry_failed: bool = False
    stale_after: float = STALE_AFTER_S  # seconds without a heartbeat before another host's run counts as crashed
    heartbeat_every: float = HEARTBEAT_EVERY_S  # seconds between two touches of a running run's heartbeat file
    grace: float = GRACE_S  # seconds a run gets to exit after SIGTERM before SIGKILL
    max_failures: int = MAX_FAILURES  # consecutive unexpected failures before the agent gives up
    fork: bool = True  # run points in forked children of this (pre-imported) agent; False: a fresh interpreter
    # points claimed at once; those that differ only in per-member scalars (lambda, eta, nu^2, ...) train as one
    # batched GD loop in one forked child (``lightning_grok.batch``); 1: one point at a time. Needs ``fork``.
    batch: int = 1
    priority: Callable[[dict], float] | None = None  # grid: run the unclaimed point with the largest value first


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


def _children_cpu() -> float:
    """User + system CPU seconds of this process's reaped children (an agent runs one point at a time)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def classify(exit_code: int, stop_signal: int | None, run_status: str | None = None) -> tuple[str, str | None]:
    """(state, reason) of an ended run, in sweeps.RunState terms.

    ``stop_signal``: the signal the agent received while the run was going (it then sent SIGTERM to the run);
    ``run_status``: the ``status`` of the phases.json this attempt wrote, None if it wrote none.
    A run that ended by a signal is ``killed`` (``preempted`` when the agent got SIGUSR1), never finished.
    """
    interrupted = run_status == "interrupted" or (stop_signal is not None and run_status is None)
    if exit_code == 0 and not interrupted:
        return "finished", None
    if exit_code < 0:
        how = f"terminated by {_signal_name(-exit_code)}"
    elif exit_code > EXIT_SIGNAL_BASE:  # fit's 128 + N after a stop by signal N, checkpoint saved (130, 143)
        how = f"interrupted by {_signal_name(exit_code - EXIT_SIGNAL_BASE)} (exit {exit_code})"
    elif exit_code == 0:
        how = "interrupted (exit 0, phases.json status: interrupted)" if run_status else "stopped (exit 0)"
    else:
        how = None
    if stop_signal is not None:
        ended = how or f"exit status {exit_code}"
        if stop_signal == PREEMPT_SIGNAL:
            return "preempted", f"the agent received {_signal_name(stop_signal)} (preemption); run {ended}"
        return "killed", f"run {ended}; the agent received {_signal_name(stop_signal)}"
    if how is not None:
        return "killed", how
    why = f" ({EXPECTED_FAILURES[exit_code]})" if exit_code in EXPECTED_FAILURES else ""
    return "failed", f"exit status {exit_code}{why}"


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
        # only flags: the wait loop acts on them, so no lock or file is ever touched from a handler. The first
        # signal names the stop (SLURM's SIGTERM after a SIGUSR1 does not turn a preemption into a kill).
        if self.stop_signal is None:
            self.stop_signal = signum
        self.signal_count += 1

    def run(self) -> int:
        started = time.time()
        if self.opt.fork and sys.platform.startswith("linux"):
            preimport()  # once, so that each point's forked child starts with torch and Lightning loaded
        else:
            self.opt.fork = False
        previous = {}
        for sig in (*STOP_SIGNALS, PREEMPT_SIGNAL):
            with contextlib.suppress(ValueError):  # not the main thread: the caller owns signals
                previous[sig] = signal.signal(sig, self._on_signal)
        try:
            return self._loop(started)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _claim(self, started: float, most: int) -> list[dict]:
        """The next point, and with ``most`` > 1 the points after it that can train in one batched GD loop with it
        (equal ``batch.batch_key``), up to ``most``; the first that cannot is released at once for any agent."""
        records: list[dict] = []
        key = None
        while len(records) < most and self.stop_signal is None:
            record = self.dir.claim(
                self.spec,
                self.me,
                retry_failed=self.opt.retry_failed,
                retry_before=started,
                stale_after=self.opt.stale_after,
                priority=self.opt.priority,
            )
            if record is None:
                break
            if most > 1:
                this = self._batch_key(record)
                if records and (this is None or this != key):
                    self.dir.release(record["name"])
                    break
                key = this
                if this is None:
                    return [record]
            records.append(record)
        return records

    @staticmethod
    def _batch_key(record: dict) -> str | None:
        """``batch.batch_key`` of a claimed point's config; None for a command that is not a forkable ``fit``."""
        from lightning_grok.batch import batch_key, config_of

        args = forkable_args(record["command"])
        if args is None:
            return None
        try:
            return batch_key(config_of(args)[0])
        except Exception:  # noqa: BLE001 - fit itself reports a bad command; here the point only runs alone
            return None

    def _loop(self, started: float) -> int:
        ran = results = failures = 0
        while self.stop_signal is None and (self.opt.count is None or ran < self.opt.count):
            most = max(1, self.opt.batch if self.opt.fork else 1)
            if self.opt.count is not None:
                most = min(most, self.opt.count - ran)
            records = self._claim(started, most)
            if not records:
                self.say(f"nothing left to run in {self.dir.root}")
                break
            if self.stop_signal is not None:
                for record in records:
                    self.dir.release(record["name"])
                break
            outcomes = [self.run_one(records[0])] if len(records) == 1 else self.run_batch(records)
            for state, exit_code in outcomes:
                ran += 1
                results += state == "finished" or (state == "failed" and exit_code == EXIT_DIVERGED)
                unexpected = state != "finished" and exit_code not in EXPECTED_FAILURES and self.stop_signal is None
                failures = failures + 1 if unexpected else 0
            self._say_progress()
            if failures >= self.opt.max_failures:
                self.say(f"giving up after {failures} runs in a row failed unexpectedly (see their agent.log)")
                return EXIT_TOO_MANY_FAILURES
        if self.stop_signal is not None:
            self.say(f"stopped by {_signal_name(self.stop_signal)}")
            if self.stop_signal == PREEMPT_SIGNAL:
                self._requeue()
            return exit_for_signal(self.stop_signal)
        if ran and not results:
            self.say(f"every run this agent started failed ({ran}): see the table and their agent.log")
            return EXIT_ALL_FAILED
        self.say(f"done: {ran} run(s)")
        return EXIT_OK

    def _say_progress(self) -> None:
        """``k/N points finished``, and for a grid an ETA: the mean wall time of the finished runs times the
        points left, over the agents now running (this one included)."""
        try:
            records = list(self.dir.read()["runs"].values())
        except (OSError, ValueError):  # progress is a courtesy: never stop the sweep for it
            return
        finished = {point_key(r["params"]) for r in records if r["state"] == "finished"}
        total = len(self._grid) if self.spec.method == "grid" else self.opt.count
        if total is None:
            self.say(f"{len(finished)} point(s) finished")
            return
        line = f"{len(finished)}/{total} points finished"
        took = [r["ended_at"] - r["started_at"] for r in records if r["state"] == "finished" and r.get("ended_at")]
        left = max(total - len(finished), 0)
        if took and left and self.spec.method == "grid":
            agents = 1 + len({json.dumps(r.get("agent"), sort_keys=True) for r in records if r["state"] == "running"})
            line += f", about {format_duration(sum(took) / len(took) * left / agents)} left"
        self.say(line)

    @functools.cached_property
    def _grid(self) -> list[dict]:
        return self.spec.points()

    def _requeue(self) -> None:
        """Inside SLURM: requeue this job, whose restart resumes the preempted run (claimed first)."""
        job = slurm_job_id()
        if job is None:
            self.say("not a SLURM job: nothing to requeue; the next agent resumes the preempted run first")
            return
        try:
            done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=REQUEUE_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.say(f"could not requeue SLURM job {job}: {exc}; the next agent resumes the preempted run first")
            return
        if done.returncode != 0:
            why = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
            self.say(f"could not requeue SLURM job {job}: {why}; the next agent resumes the preempted run first")
        else:
            self.say(f"requeued SLURM job {job}: it resumes the preempted run")

    def run_one(self, record: dict) -> tuple[str, int]:
        """Run one claimed point to its end; returns (state, exit status)."""
        name = record["name"]
        run_dir = self.dir.run_dir(record)
        run_dir.mkdir(parents=True, exist_ok=True)
        log_path = run_dir / "agent.log"
        shown = " ".join(f"{k}={record['params'][k]}" for k in self.spec.swept_names) or "(constants only)"
        retry = f" (retry of {record['retry_of']}, resuming in {run_dir})" if record.get("retry_of") else ""
        self.say(f"{name} started{retry}: {shown} (log: {log_path})")
        t0 = time.time()
        with open(log_path, "ab") as log:
            try:
                args = forkable_args(record["command"]) if self.opt.fork else None
                if args is not None:
                    proc = ForkedRun(args, log.fileno(), child_env(), _child_setup(os.getpid()))
                else:
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
            cpu_before = _children_cpu()
            with _Heartbeat(self.dir, name, self.opt.heartbeat_every):
                exit_code = self._wait(proc)
            self.dir.update(name, cpu_s=round(_children_cpu() - cpu_before, 3))  # the run's CPU time, once reaped
        run = self._result_since(run_dir, t0)
        result = result_of(run) if run is not None else None
        state, reason = classify(exit_code, self.stop_signal, run.status if run is not None else None)
        self.dir.finish(name, state, exit_code, result, reason)
        times = ""
        if run is not None:
            times = f": t1={format_value(run.t_overfit)} t2={format_value(run.t_generalize)} ({run.status})"
        self.say(f"{name} {state}{f' ({reason})' if reason else ''} after {time.time() - t0:.1f} s{times}")
        if state == "failed" and exit_code not in EXPECTED_FAILURES:
            self._show_tail(log_path)
        return state, exit_code

    def run_batch(self, records: list[dict]) -> list[tuple[str, int]]:
        """Run claimed points as one batched GD loop in one forked child; (state, exit status) per point.

        The child (``lightning_grok.batch.batch_main``) writes each point's exit status to a file; a point it
        did not finish (a signal, a crash) is recorded from its phases.json if this attempt wrote one, else by
        the child's exit status. Its output goes to the first point's agent.log (the others' say where)."""
        from lightning_grok.batch import batch_main

        names = [r["name"] for r in records]
        dirs = [self.dir.run_dir(r) for r in records]
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
        log_path = dirs[0] / "agent.log"
        for d in dirs[1:]:
            with open(d / "agent.log", "a") as note:
                note.write(f"trained in one batched GD loop with {', '.join(names)}; its log: {log_path}\n")
        shown = "; ".join(
            " ".join(f"{k}={r['params'][k]}" for k in self.spec.swept_names) or "(constants only)" for r in records
        )
        self.say(f"{', '.join(names)} started as one batched GD loop: {shown} (log: {log_path})")
        fd, status_path = tempfile.mkstemp(prefix=".batch-", suffix=".json", dir=self.dir.root)
        os.close(fd)
        os.unlink(status_path)
        commands = [forkable_args(r["command"]) for r in records]
        t0 = time.time()
        with open(log_path, "ab") as log:
            proc = ForkedRun(
                [status_path, json.dumps(commands)],
                log.fileno(),
                child_env(),
                _child_setup(os.getpid()),
                target=batch_main,
            )
            for name in names:
                self.dir.update(name, child_pid=proc.pid, batch=names)  # one duration for all (collect._run_seconds)
            cpu_before = _children_cpu()
            with contextlib.ExitStack() as beats:
                for name in names:
                    beats.enter_context(_Heartbeat(self.dir, name, self.opt.heartbeat_every))
                exit_code = self._wait(proc)
            cpu = round((_children_cpu() - cpu_before) / len(names), 3)  # the batch's CPU time, shared equally
            for name in names:
                self.dir.update(name, cpu_s=cpu)
        try:
            codes = json.loads(Path(status_path).read_text())
        except (OSError, ValueError):
            codes = None
        finally:
            Path(status_path).unlink(missing_ok=True)
        outcomes = []
        for i, (name, run_dir) in enumerate(zip(names, dirs, strict=True)):
            run = self._result_since(run_dir, t0)
            code = codes[i] if codes is not None else exit_code
            if codes is None and run is not None and run.status in ("completed", "diverged"):
                code = EXIT_OK if run.status == "completed" else EXIT_DIVERGED  # ended before the child did
            result = result_of(run) if run is not None else None
            state, reason = classify(code, self.stop_signal, run.status if run is not None else None)
            self.dir.finish(name, state, code, result, reason)
            times = ""
            if run is not None:
                times = f": t1={format_value(run.t_overfit)} t2={format_value(run.t_generalize)} ({run.status})"
            self.say(f"{name} {state}{f' ({reason})' if reason else ''} after {time.time() - t0:.1f} s{times}")
            outcomes.append((state, code))
        if any(s == "failed" and c not in EXPECTED_FAILURES for s, c in outcomes):
            self._show_tail(log_path)
        return outcomes

    @staticmethod
    def _result_since(run_dir: Path, t0: float) -> RunResult | None:
        """The result this attempt wrote: an earlier attempt's phases.json, in the same directory, is not it."""
        try:
            if (run_dir / "phases.json").stat().st_mtime < t0 - 1.0:  # 1 s: file systems with coarse timestamps
                return None
        except OSError:
            return None
        return read_result(run_dir)

    def _wait(self, proc: subprocess.Popen | ForkedRun) -> int:
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
