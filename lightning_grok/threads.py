"""CpuShare: torch's intra-op threads chosen from the CPUs this process may use and the runs that share them.

Inherited thread counts oversubscribe: torch starts one intra-op thread per core in every process, so three
concurrent fits on two cores run six spinning OpenMP threads. Measured on this project's 2-core machine
(benchmarks/bench_threads.py): three concurrent two-layer fits took 228 s with two threads each against 17 s
with one (10 s for one fit alone).

The share of a run: threads = max(1, usable // live), where

* ``usable`` is the number of CPUs this process may run on: its affinity mask (``os.sched_getaffinity``: what
  ``taskset``, ``srun --cpu-bind`` or a container's cpuset allow), at most ``SLURM_CPUS_PER_TASK`` inside a
  SLURM job, and at most the cgroup's CPU quota (``cpu.max``, rounded up);
* ``live`` is the number of lightning_grok runs of this user whose CPUs overlap this one's, itself included:
  every run registers in ``<tmp>/lightning_grok-cpus-<uid>/`` by holding an exclusive ``flock`` on a file named
  by its pid. The kernel drops the lock when the process ends, however it ends (kill -9 included), so a file
  whose lock can be taken is a dead run's and is removed. Runs re-read the ledger between chunks (at most every
  ``REFRESH_SECONDS``), so two runs started one after the other both drop to their share, and the survivor
  takes the cores back when the other ends. Sweep agents, ``reproduce --agents N`` and DDP ranks on one
  machine are runs like any other: no setting is needed.

``trainer.threads`` > 0 fixes the count (the run still registers, so others leave it room). numpy's BLAS
(the theory's SVDs) gets the same count through ``threadpoolctl``.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import tempfile
import time
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits

REFRESH_SECONDS = 1.0  # between two reads of the ledger: a read is a directory listing and one flock per run
LEDGER_ENV = "LIGHTNING_GROK_CPU_LEDGER"  # another ledger directory (tests; machines whose /tmp is not shared)


def usable_cpus() -> tuple[int, str]:
    """(count, where it came from): the CPUs this process may use (affinity, SLURM_CPUS_PER_TASK, cgroup quota)."""
    try:
        cpus, source = len(os.sched_getaffinity(0)), "affinity"
    except AttributeError:  # not Linux
        cpus, source = os.cpu_count() or 1, "cpu_count"
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and 0 < int(slurm) < cpus:
        cpus, source = int(slurm), "SLURM_CPUS_PER_TASK"
    quota = _cgroup_quota()
    if quota is not None and quota < cpus:
        cpus, source = quota, "cgroup cpu.max"
    return max(1, cpus), source


def _cgroup_quota() -> int | None:
    """The cgroup v2 CPU quota in whole CPUs (rounded up), None when unlimited or unknown."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def ledger_dir() -> Path:
    return Path(os.environ.get(LEDGER_ENV) or Path(tempfile.gettempdir()) / f"lightning_grok-cpus-{os.getuid()}")


class CpuShare(contextlib.AbstractContextManager):
    """This run's entry in the CPU ledger and the thread count it implies (module docstring).

    ``requested`` > 0 fixes the thread count; 0 picks max(1, usable // live runs) and follows the ledger.
    """

    def __init__(self, requested: int = 0, directory: Path | None = None):
        self.requested = int(requested)
        self.directory = Path(directory) if directory is not None else ledger_dir()
        self.usable, self.source = usable_cpus()
        self.cpus = _affinity()
        self.threads = 0
        self._file = None
        self._path: Path | None = None
        self._next_read = 0.0
        self._blas = None
        self._torch_before = torch.get_num_threads()

    def __enter__(self) -> CpuShare:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._path = self.directory / f"{os.getpid()}.cpus"
            self._file = open(self._path, "w")  # noqa: SIM115 - held open: the lock lives as long as the file
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._file.write(" ".join(map(str, sorted(self.cpus))))
            self._file.flush()
        except OSError:
            # no ledger (read-only /tmp, a full disk): this run counts only itself, as torch would
            self._close_file()
        self.refresh(force=True)
        return self

    def __exit__(self, *exc) -> None:
        self._close_file()
        if self._blas is not None:
            self._blas.restore_original_limits()
            self._blas = None
        torch.set_num_threads(self._torch_before)  # a process that runs several fits (tests, agents) starts afresh
        self.threads = 0

    def _close_file(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._path.unlink()
            self._file.close()  # releases the lock
            self._file = None

    def live_runs(self) -> int:
        """Runs of this user registered in the ledger whose CPUs overlap this process's, itself included."""
        count = 1
        try:
            entries = list(self.directory.iterdir())
        except OSError:
            return count
        for path in entries:
            if path == self._path or path.suffix != ".cpus":
                continue
            try:
                with open(path) as f:
                    try:
                        fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    except BlockingIOError:  # held: a live run
                        cpus = {int(c) for c in f.read().split()}
                        count += not cpus or bool(cpus & self.cpus)
                        continue
                path.unlink(missing_ok=True)  # nobody holds it: a run that ended without cleaning up
            except (OSError, ValueError):
                continue
        return count

    def refresh(self, force: bool = False) -> int:
        """Re-read the ledger (at most every REFRESH_SECONDS unless ``force``) and set torch's and BLAS's threads."""
        now = time.monotonic()
        if not force and now < self._next_read:
            return self.threads
        self._next_read = now + REFRESH_SECONDS
        want = self.requested or max(1, self.usable // self.live_runs())
        if want != self.threads:
            torch.set_num_threads(want)
            if self._blas is None:
                self._blas = threadpool_limits(limits=want, user_api="blas")
            else:
                threadpool_limits(limits=want, user_api="blas")
            self.threads = want
        return want

    def describe(self) -> str:
        how = "trainer.threads" if self.requested else f"{self.usable} CPUs ({self.source}) / {self.live_runs()} run(s)"
        return f"{self.threads} torch thread(s): {how}"


def _affinity() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:
        return set(range(os.cpu_count() or 1))
