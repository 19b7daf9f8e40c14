"""``rundir.RunLock`` (filelock's flock on run.lock): refused at once while a live process holds the directory,
naming it; free again when the holder is killed with -9; nothing of the holder left after a clean release."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lightning_grok.config import ConfigError
from lightning_grok.rundir import HOLDER_FILE, LOCK_FILE, RunLock

HOLD = (
    "import sys, time; from lightning_grok.rundir import RunLock; "
    "lock = RunLock(sys.argv[1]).__enter__(); print('held', flush=True); time.sleep(120)"
)


def test_a_live_holder_is_named_and_kill_9_frees_the_lock(tmp_path: Path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        with pytest.raises(ConfigError, match=f"in use by pid {holder.pid} on "), RunLock(tmp_path):
            pass
        assert time.monotonic() - t0 < 5  # refused at once, never waits
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path):  # the kernel freed the dead holder's flock
        assert (tmp_path / HOLDER_FILE).read_text().startswith(f"pid {os.getpid()} on ")
    assert not (tmp_path / HOLDER_FILE).exists() and (tmp_path / LOCK_FILE).exists()
    with RunLock(tmp_path):  # and taken again after a clean release
        pass
