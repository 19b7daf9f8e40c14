"""Sweep points run in forked children of an agent that imported the training stack once.

``import lightning`` alone takes several seconds; a fresh interpreter per point pays it every time. The
agent imports ``lightning_grok.experiment`` (torch, Lightning) and ``wandb`` once, and each point runs
``lightning_grok.commands.main`` (the ``fit`` and ``theory`` verbs, below the CLI: this module never imports
the CLI, which imports it) in a child made by ``os.fork``: one process per point, so a crash, a leak or a
stuck thread stays with that point, and signals, exit statuses and the log file are the same as for a
subprocess. The agent itself never runs a torch operation, so no OpenMP or BLAS thread pool exists at
the fork (pools are not fork-safe once started).

Only commands of the form ``<this interpreter> -m lightning_grok fit|theory ...`` are forked; any other command
(a wrapper script, another interpreter, another verb) runs as an ordinary subprocess.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable

from lightning_grok.commands import RUN_VERBS
from lightning_grok.commands import main as run_command

PREIMPORTED = ("lightning_grok.experiment", "wandb")
CHILD_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)  # the agent's handlers are not the run's


def preimport() -> None:
    """Import the stack every run needs, in the agent, before the first fork."""
    for name in PREIMPORTED:
        importlib.import_module(name)


def forkable_args(command: list[str]) -> list[str] | None:
    """The CLI arguments of ``command`` when it is this interpreter running ``-m lightning_grok fit|theory``
    (``commands.RUN_VERBS``), else None.

    A leading ``/usr/bin/env`` (W&B's ``${env}`` macro) is skipped; ``env`` with variable assignments is not
    forked, since the assignments would have to be applied by hand."""
    if command and os.path.basename(command[0]) == "env":
        command = command[1:]
    if len(command) < 4 or command[1:3] != ["-m", "lightning_grok"] or command[3] not in RUN_VERBS:
        return None
    same = os.path.realpath(command[0]) == os.path.realpath(sys.executable)
    return list(command[3:]) if same else None


def _exit_code(value: object) -> int:
    if value is None:
        return 0
    return value if isinstance(value, int) else 1


class ForkedRun:
    """A subprocess.Popen-like handle (``pid``, ``poll``, ``wait``, ``send_signal``) of ``target(args)``
    (default ``commands.main``, ``args`` being what follows ``lightning-grok``) run in a forked child with its
    own session, ``env`` as environment and ``log_fd`` as stdout and stderr."""

    def __init__(
        self,
        args: list[str],
        log_fd: int,
        env: dict[str, str],
        setup: Callable[[], None] | None,
        target: Callable[[list[str]], object] = run_command,
    ):
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                os.setsid()  # a Ctrl-C in the terminal reaches the agent only, as with start_new_session
                if setup is not None:
                    setup()
                for sig in CHILD_SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)
                os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
                os.dup2(log_fd, 1)
                os.dup2(log_fd, 2)
                os.environ.clear()
                os.environ.update(env)
                code = _exit_code(target(args))
            except SystemExit as exc:
                code = _exit_code(exc.code)
            except BaseException:  # noqa: BLE001 - the child reports and exits; it must never return
                traceback.print_exc()
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        end = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if end is not None and time.monotonic() >= end:
                raise subprocess.TimeoutExpired(["lightning_grok"], timeout)
            time.sleep(0.02)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)
