"""Threads chosen, not inherited (threads.CpuShare): the CPUs a process may use, divided by the live runs sharing
them, with real processes holding real ledger locks (and one killed by SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from lightning_grok.threads import LEDGER_ENV, CpuShare, usable_cpus

REPO = Path(__file__).resolve().parents[1]
CPUS = len(os.sched_getaffinity(0))

HOLDER = textwrap.dedent(
    """
    import sys, time
    from lightning_grok.threads import CpuShare
    with CpuShare() as share:
        print(share.threads, flush=True)
        time.sleep(float(sys.argv[1]))
    """
)


def _holder(ledger: Path, seconds: float = 60.0, cpus: set[int] | None = None) -> subprocess.Popen:
    """A live run: a process that holds its ledger entry for ``seconds``; prints its thread count once registered."""
    env = dict(os.environ, **{LEDGER_ENV: str(ledger)}, PYTHONPATH=str(REPO))
    pre = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(seconds)], env=env, stdout=subprocess.PIPE, text=True, preexec_fn=pre
    )
    assert proc.stdout.readline().strip().isdigit()  # registered
    return proc


def test_alone_a_run_takes_every_usable_cpu(tmp_path):
    with CpuShare(directory=tmp_path) as share:
        assert share.live_runs() == 1
        assert share.threads == usable_cpus()[0] == torch.get_num_threads()
        assert list(tmp_path.glob("*.cpus")) == [tmp_path / f"{os.getpid()}.cpus"]
    assert list(tmp_path.glob("*.cpus")) == []  # the entry leaves with the run


@pytest.mark.skipif(CPUS < 2, reason="needs two CPUs to share")
def test_live_runs_share_the_cpus_and_a_killed_run_gives_them_back(tmp_path):
    before = torch.get_num_threads()
    others = [_holder(tmp_path) for _ in range(2)]
    try:
        with CpuShare(directory=tmp_path) as share:
            assert share.live_runs() == 3
            assert share.threads == max(1, CPUS // 3) == torch.get_num_threads()
            for proc in others:  # kill -9: no clean-up runs, the kernel drops the lock
                proc.send_signal(signal.SIGKILL)
                proc.wait()
            assert share.refresh(force=True) == CPUS == torch.get_num_threads()
            assert sorted(p.name for p in tmp_path.glob("*.cpus")) == [f"{os.getpid()}.cpus"]  # stale ones removed
    finally:
        for proc in others:
            proc.kill()
    assert torch.get_num_threads() == before  # the process gets its own setting back


@pytest.mark.skipif(CPUS < 2, reason="needs two CPUs")
def test_runs_on_other_cpus_do_not_count(tmp_path):
    allowed = os.sched_getaffinity(0)
    mine, theirs = sorted(allowed)[:1], sorted(allowed)[1:2]
    other = _holder(tmp_path, cpus=set(theirs))
    try:
        os.sched_setaffinity(0, set(mine))
        with CpuShare(directory=tmp_path) as share:
            assert share.usable == 1
            assert share.live_runs() == 1  # the other run's CPUs do not overlap this one's
        os.sched_setaffinity(0, allowed)
        with CpuShare(directory=tmp_path) as share:
            assert share.live_runs() == 2  # now they do
    finally:
        os.sched_setaffinity(0, allowed)
        other.kill()
        other.wait()


def test_slurm_cpus_per_task_caps_the_usable_cpus(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert usable_cpus() == (1, "SLURM_CPUS_PER_TASK")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", str(CPUS + 7))  # more than the affinity allows: the affinity wins
    assert usable_cpus()[0] == CPUS


def test_trainer_threads_fixes_the_count(tmp_path):
    other = _holder(tmp_path)
    try:
        with CpuShare(requested=CPUS, directory=tmp_path) as share:
            assert share.threads == CPUS == torch.get_num_threads()
            assert share.refresh(force=True) == CPUS
    finally:
        other.kill()
        other.wait()


def test_a_fit_registers_and_says_how_many_threads_it_took(tmp_path):
    """A real fit process: its ledger entry exists while it trains, and its line names the thread count."""
    ledger = tmp_path / "ledger"
    env = dict(os.environ, **{LEDGER_ENV: str(ledger)}, PYTHONPATH=str(REPO), WANDB_MODE="disabled")
    other = _holder(ledger)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "lightning_grok", "fit", str(REPO / "configs" / "ridge.yaml"), "wandb.mode=disabled",
             "trainer.progress_bar=false", "trainer.max_steps=300", f"output_dir={tmp_path / 'run'}"],
            env=env, capture_output=True, text=True, timeout=300, check=True,
        ).stdout  # fmt: skip
    finally:
        other.kill()
        other.wait()
    want = max(1, usable_cpus()[0] // 2)
    assert f"lightning-grok: {want} torch thread(s): {usable_cpus()[0]} CPUs" in out
    assert "/ 2 run(s)" in out
    deadline = time.monotonic() + 5
    while list(ledger.glob("*.cpus")) and time.monotonic() < deadline:  # the holder's entry, until its lock drops
        time.sleep(0.05)
    assert not [p for p in ledger.glob("*.cpus") if p.stem != str(other.pid)]  # the fit removed its own entry
