"""The sweep directory shared by every agent: ``state.json`` behind one file lock.

Coordination rule: every read-modify-write of ``state.json`` happens under ``FileLock(<dir>/state.lock)``
and ends with an atomic replace, so readers without the lock (the table) never see half a file and two
agents never both claim a point. Claiming asks W&B's engine (``sweeps.next_run``) for the next point
given *every* recorded run, whatever its state: for a grid, a point that is running, finished, failed
or crashed is taken, and only ``--retry-failed`` gives a failed/crashed/killed point a second attempt.

A running record whose agent died is marked ``crashed`` by whichever agent next takes the lock: on the
same machine (host name and PID namespace) the agent's PID is checked directly (with its start time, so a
reused PID does not pass as alive); for another host the agent's heartbeat file must be fresher than
``stale_after`` seconds.

Every attempt at a point runs in the point's one run directory (a retry reuses the directory of the attempt
it retries), so ``fit`` resumes from the checkpoint there instead of starting at step 0. A ``preempted``
point (its agent got SIGUSR1, e.g. SLURM's warning before a time limit) is claimed before any new point by
any agent, without ``--retry-failed``: a requeued array task picks its run up where it stopped.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock

from lightning_grok.atomic import atomic_write_text
from lightning_grok.results import TIMES, ResultError, RunResult, Times, flat_summary, load_run, parse
from lightning_grok.sweep.defaults import LOCK_TIMEOUT_S, STALE_AFTER_S
from lightning_grok.sweep.spec import SweepSpec, SweepSpecError, import_sweeps, params_of, same_runs

STATE_VERSION = 1
RETRYABLE = ("failed", "crashed", "killed", "preempted")
STATES = ("running", "finished", "failed", "crashed", "killed", "preempted")  # a subset of sweeps.RunState
RECORD_KEYS = ("name", "params", "state", "output_dir")  # what every reader of a record relies on


class SweepStateError(ValueError):
    """``state.json`` is missing, damaged or not a sweep state: the message names the file and what to do.

    CLI exit status 2. Agents write the file only by atomic replace, so this means it was changed from outside.
    """


# ---- processes --------------------------------------------------------------------------------------
def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may hold spaces), or None without /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def process_start(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (Linux), to tell a reused PID from the original."""
    stat = _proc_stat(pid)
    return int(stat[19]) if stat and len(stat) > 19 else None


def process_alive(pid: int, start: int | None = None) -> bool:
    """True if ``pid`` runs on this machine (and, when known, started at ``start``); zombies count as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no /proc: the kill test is all there is
    if stat[0] in ("Z", "X"):
        return False  # exited, not yet reaped by its parent
    return start is None or int(stat[19]) == start


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


@dataclass(frozen=True)
class AgentInfo:
    """Who claimed a run: enough to decide later, from another process, whether it is still alive."""

    host: str
    pid: int
    pidns: str | None  # containers on one host may share a host name but not a PID space
    pid_start: int | None

    @classmethod
    def current(cls) -> AgentInfo:
        pid = os.getpid()
        return cls(socket.gethostname(), pid, _pid_namespace(), process_start(pid))

    def same_machine(self, other: dict) -> bool:
        return other.get("host") == self.host and other.get("pidns") == self.pidns

    def as_dict(self) -> dict:
        return asdict(self)


# ---- results ----------------------------------------------------------------------------------------
def read_result(run_dir: Path) -> RunResult | None:
    """The result in ``run_dir``'s phases.json; None when there is none or it is damaged (``results.load_run``)."""
    try:
        return load_run(run_dir)
    except (OSError, ResultError):
        return None


def result_of(run: RunResult) -> dict:
    """The part of a run's result the sweep keeps in state.json, itself a phases.json document
    (``results.parse`` reads it): times, status, bound values and verdicts, final losses, and for several seeds
    each member's times and the members' statistics (so its W&B summary can be rebuilt)."""

    def times_of(t: Times | None) -> dict | None:
        return {k: t[k] for k in TIMES} if t is not None else None

    res: dict[str, Any] = {"status": run.status, "steps_run": run.steps_run, **times_of(run.times)}
    res["diverged_at"] = run.diverged_at
    single = run.single
    if single is not None:
        res |= {part: times_of(t) for part, t in (("exact", single.exact), ("accuracy", single.accuracy)) if t}
    res["bounds"] = {
        name: {"value": b.value, "verdict": b.verdict} for name, b in (single.bounds if single else {}).items()
    }
    res["final"] = run.final
    if single is None:
        res["members"] = [
            times_of(m.times) | {p: times_of(t) for p, t in (("exact", m.exact), ("accuracy", m.accuracy)) if t}
            for m in run.members
        ]
        res["aggregate"] = {k: asdict(st) for k, st in run.aggregate.items()}  # the spreads flat_summary reports
    return res


def kept_result(result: dict | None) -> RunResult | None:
    """A state record's kept ``result`` (``result_of``) typed; None when it has none or it is not readable."""
    try:
        return parse(result) if result else None
    except ResultError:
        return None


def summary_metrics(result: dict | None) -> dict:
    """The W&B summary keys the run itself logs (``results.flat_summary``), rebuilt from the kept result for
    the bayes engine."""
    run = kept_result(result)
    return flat_summary(run) if run is not None else {}


def point_key(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=str)


# ---- files ------------------------------------------------------------------------------------------
class SweepDir:
    """One sweep's directory. Methods that change state take the lock themselves."""

    def __init__(self, root: str | os.PathLike, lock_timeout: float = LOCK_TIMEOUT_S):
        self.root = Path(root)
        self.lock = FileLock(str(self.root / "state.lock"), timeout=lock_timeout)

    @property
    def state_path(self) -> Path:
        return self.root / "state.json"

    @property
    def sweep_path(self) -> Path:
        return self.root / "sweep.yaml"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def heartbeat_dir(self) -> Path:
        return self.root / "heartbeats"

    def run_dir(self, record: dict) -> Path:
        return self.root / record["output_dir"]

    # ---- state ----
    def read(self) -> dict:
        """The current state; safe without the lock because every write is an atomic replace.

        Raises SweepStateError when the file is missing, not JSON, or not a sweep state.
        """
        path = self.state_path
        advice = (
            f"restore it from a backup, or start over with a new --sweep-dir (results of finished runs stay in "
            f"{self.runs_dir}/*/phases.json)"
        )
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            raise SweepStateError(f"no sweep state in {self.root} ({path} is missing)") from None
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError: truncated, overwritten, binary
            raise SweepStateError(f"sweep state {path} is damaged ({exc}); {advice}") from None
        runs = state.get("runs") if isinstance(state, dict) else None
        if not isinstance(runs, dict) or not isinstance(state.get("next_index"), int):
            raise SweepStateError(f"{path} is not a sweep state (no 'runs' mapping or 'next_index'); {advice}")
        for name, rec in runs.items():
            if not isinstance(rec, dict) or any(k not in rec for k in RECORD_KEYS):
                raise SweepStateError(
                    f"{path}: run {name!r} is not a run record (needs {', '.join(RECORD_KEYS)}); {advice}"
                )
        return state

    def _write(self, state: dict) -> None:
        atomic_write_text(self.state_path, json.dumps(state, indent=1, default=str) + "\n")

    def init(self, spec: SweepSpec) -> None:
        """Create the directory for ``spec``, or check that it already holds this very sweep."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self.lock:
            if self.sweep_path.is_file():
                existing = yaml.safe_load(self.sweep_path.read_text())
                if not same_runs(existing, spec.raw):
                    raise SweepSpecError(
                        f"sweep directory {self.root} holds a different sweep ({self.sweep_path} differs from "
                        f"{spec.path}); pass another --sweep-dir"
                    )
            else:
                atomic_write_text(self.sweep_path, spec.text)
            if self.state_path.is_file():
                self.read()  # a damaged state is reported now, before any run, not at the first claim
            else:
                self._write(
                    {
                        "version": STATE_VERSION,
                        "sweep": spec.name,
                        "method": spec.method,
                        "created_at": time.time(),
                        "next_index": 1,
                        "runs": {},
                    }
                )
        self.runs_dir.mkdir(exist_ok=True)
        self.heartbeat_dir.mkdir(exist_ok=True)

    # ---- heartbeats ----
    def beat(self, name: str) -> None:
        atomic_write_text(self.heartbeat_dir / name, f"{time.time()}\n")

    def last_beat(self, record: dict) -> float:
        try:
            return float((self.heartbeat_dir / record["name"]).read_text())
        except (OSError, ValueError):
            return float(record.get("started_at") or 0.0)

    # ---- transitions ----
    def reap(self, state: dict, me: AgentInfo, stale_after: float) -> list[str]:
        """Mark running records whose agent is gone as crashed (call with the lock held). Returns their names."""
        now, reaped = time.time(), []
        for rec in state["runs"].values():
            if rec["state"] != "running":
                continue
            agent = rec["agent"]
            if me.same_machine(agent):
                if process_alive(agent["pid"], agent.get("pid_start")):
                    continue
                reason = f"agent {agent['host']}:{agent['pid']} is gone"
            else:
                silent = now - self.last_beat(rec)
                if silent <= stale_after:
                    continue
                reason = f"no heartbeat from agent {agent['host']}:{agent['pid']} for {silent:.0f} s"
            rec.update(state="crashed", ended_at=now, reason=reason)
            reaped.append(rec["name"])
        return reaped

    def claim(
        self,
        spec: SweepSpec,
        me: AgentInfo,
        *,
        retry_failed: bool = False,
        retry_before: float = 0.0,
        stale_after: float = STALE_AFTER_S,
        priority: Callable[[dict], float] | None = None,
    ) -> dict | None:
        """Choose the next point and record it as running for ``me``, all under the lock; None when done.

        Preempted points first (always), then for grid: new points (the engine's order, or with ``priority`` the
        unclaimed point with the largest ``priority(params)``: ``reproduce`` runs the longest first), then (with
        ``retry_failed``) points
        whose latest attempt failed, crashed or was killed and began before ``retry_before`` (this agent's
        start: each launch retries a point once, never in a loop). random/bayes never run out of points, so
        their retries come before new points. A retry runs in the directory of the attempt it retries.
        """
        with self.lock:
            state = self.read()
            reaped = self.reap(state, me, stale_after)
            # preempted points first, whatever run_cap says: they were stopped by the scheduler, not by a fault
            chosen = self._retry_candidate(list(state["runs"].values()), float("inf"), ("preempted",))
            if chosen is None and (spec.run_cap is None or len(state["runs"]) < spec.run_cap):
                chosen = self._choose(spec, state, retry_failed, retry_before, priority)
            if chosen is None:
                if reaped:
                    self._write(state)
                return None
            params, retry_of = chosen
            index = state["next_index"]
            state["next_index"] = index + 1
            name = f"{spec.name}-{index:04d}"
            # a retry continues in its point's directory: fit resumes from the checkpoint (and W&B run) there
            output_dir = Path(state["runs"][retry_of]["output_dir"]) if retry_of else Path("runs") / name
            now = time.time()
            record = {
                "name": name,
                "index": index,
                "params": params,
                "state": "running",
                "retry_of": retry_of,
                "output_dir": str(output_dir),
                "command": spec.argv(params, (self.root / output_dir).resolve()),
                "cwd": os.getcwd(),
                "agent": me.as_dict(),
                "child_pid": None,
                "started_at": now,
                "ended_at": None,
                "exit_code": None,
                "reason": None,
                "result": None,
            }
            state["runs"][name] = record
            self._write(state)
            self.beat(name)
            return record

    def _choose(self, spec: SweepSpec, state: dict, retry_failed: bool, retry_before: float, priority=None):
        records = list(state["runs"].values())
        retry = self._retry_candidate(records, retry_before) if retry_failed else None
        if retry is not None and spec.method != "grid":
            return retry
        if priority is not None and spec.method == "grid":
            taken = {point_key(r["params"]) for r in records}
            todo = [p for p in spec.points() if point_key(p) not in taken]
            return (max(todo, key=priority), None) if todo else retry  # max: the first of equals, engine order
        sweeps = import_sweeps()
        runs = [
            sweeps.SweepRun(
                name=r["name"],
                config={k: {"value": v} for k, v in r["params"].items()},
                state=r["state"],
                summary_metrics=summary_metrics(r.get("result")),
            )
            for r in records
        ]
        with warnings.catch_warnings():
            # bayes fits a Gaussian process to a handful of runs: sklearn's convergence notes are expected noise
            warnings.filterwarnings("ignore", module=r"sklearn\..*")
            proposal = sweeps.next_run(spec.engine_config, runs)
        if proposal is not None:
            return params_of(proposal), None
        return retry  # grid exhausted: only retries are left

    @staticmethod
    def _retry_candidate(
        records: list[dict], retry_before: float, states: tuple[str, ...] = RETRYABLE
    ) -> tuple[dict, str] | None:
        """(params, name of the attempt to retry) of the first point whose latest attempt is in ``states``."""
        latest: dict[str, dict] = {}
        for rec in records:  # claim order: the last attempt of each point wins
            latest[point_key(rec["params"])] = rec
        for rec in latest.values():
            if rec["state"] in states and (rec.get("started_at") or 0.0) < retry_before:
                return rec["params"], rec["name"]
        return None

    def update(self, name: str, **fields: Any) -> dict:
        """Change fields of one record under the lock; returns the record."""
        with self.lock:
            state = self.read()
            rec = state["runs"][name]
            rec.update(fields)
            self._write(state)
            return rec

    def finish(self, name: str, state: str, exit_code: int | None, result: dict | None, reason: str | None) -> dict:
        """Record how a run ended. Overrides a ``crashed`` set meanwhile by another agent: this is what happened."""
        rec = self.update(name, state=state, exit_code=exit_code, result=result, reason=reason, ended_at=time.time())
        (self.heartbeat_dir / name).unlink(missing_ok=True)
        return rec

    def release(self, name: str) -> None:
        """Forget a claim that never started (the agent was stopped between claiming and launching)."""
        with self.lock:
            state = self.read()
            state["runs"].pop(name, None)
            self._write(state)
        (self.heartbeat_dir / name).unlink(missing_ok=True)
