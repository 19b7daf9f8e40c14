"""The memory a run needs and the memory the machine has.

``estimate_memory(cfg)`` is the run's plan's estimate (``plan.RunPlan.memory``: bytes by component, mirroring what
the run allocates), so that a run too big for the machine is refused (exit 2) before a single tensor exists. It
imports neither torch nor Lightning: ``lightning_grok.config`` calls it while validating. ``available_memory`` is
what the machine (or its cgroup) still has.
"""

from __future__ import annotations

import os
from typing import Any

from lightning_grok.plan import (  # noqa: F401 - re-exported: the sizes and constants the allocating code reads
    COMPONENT_KEYS,
    F64,
    FRAMEWORK_BYTES,
    ITERATE_BUFFER_FLOATS,
    KERNEL_BLOCK_ELEMENTS,
    KERNEL_ROW_BLOCK,
    SIGMA_ESTIMATE_MAX_WIDTH,
    TEST_BLOCK_ELEMENTS,
    TWO_LAYER_CALL_MACS,
    RunPlan,
    auto_steps_per_call,
    auto_two_layer_steps_per_call,
    itemsize,
    transformer_parameters,
)

MEMORY_ENV = "LG_MEMORY_AVAILABLE"  # bytes; overrides the machine's figure (tests, or a shared node)


def estimate_memory(cfg: Any, *, verb: str = "fit", plan: RunPlan | None = None) -> dict[str, int]:
    """Bytes a run of ``cfg`` needs, by component (keys of ``COMPONENT_KEYS``; zero components left out): the
    estimate of its plan (``plan``, or the one of ``cfg``). ``verb`` ``"fit"``: a training run (every member, the GD
    loops); ``"theory"``: what ``lightning-grok theory`` builds, member 0's data, model and theory only."""
    return (plan or RunPlan.from_config(cfg)).memory(verb)


def available_memory() -> tuple[int, str]:
    """Bytes this process may still allocate, and where the figure comes from: ``LG_MEMORY_AVAILABLE`` if set,
    else ``MemAvailable`` of /proc/meminfo (free pages of ``os.sysconf`` where there is none), lowered to the
    room left under a cgroup memory limit (containers, SLURM jobs). Raises ValueError on a bad override."""
    env = os.environ.get(MEMORY_ENV)
    if env:
        try:
            value = int(float(env))
        except ValueError:
            raise ValueError(f"environment variable {MEMORY_ENV}={env!r} is not a number of bytes") from None
        return value, f"${MEMORY_ENV}"
    avail, source = _meminfo_available()
    limit = _cgroup_room()
    if limit is not None and limit < avail:
        return limit, "room under this cgroup's memory limit"
    return avail, source


def _meminfo_available() -> tuple[int, str]:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free physical pages (sysconf)"
    except (OSError, ValueError, AttributeError):
        # no way to tell (not Linux or BSD): do not refuse anything
        return 1 << 62, "unknown"


def _read_int(path: str) -> int | None:
    try:
        with open(path) as fh:
            text = fh.read().strip()
        return None if text == "max" else int(text)
    except (OSError, ValueError):
        return None


def _inactive_file(stat_file: str) -> int:
    """Reclaimable page cache of a cgroup (bytes): its usage counts it, but the kernel frees it on demand."""
    try:
        with open(stat_file) as fh:
            for line in fh:
                key, _, value = line.partition(" ")
                if key in ("inactive_file", "total_inactive_file"):
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _cgroup_room() -> int | None:
    """limit - usage (less reclaimable cache) of the cgroup memory controller, v2 then v1; None without a limit."""
    for root, limit_file, usage_file in (
        ("/sys/fs/cgroup", "memory.max", "memory.current"),
        ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes"),
    ):
        limit, usage = _read_int(f"{root}/{limit_file}"), _read_int(f"{root}/{usage_file}")
        if limit is not None and limit < 1 << 60:  # v1 writes "no limit" as a huge number
            used = max(0, (usage or 0) - _inactive_file(f"{root}/memory.stat"))
            return max(0, limit - used)
    return None


def gib(nbytes: int) -> str:
    """``nbytes`` as GiB for messages, e.g. '74.5 GiB' (small values as MiB)."""
    if nbytes < 1 << 30:
        return f"{nbytes / (1 << 20):.0f} MiB"
    return f"{nbytes / (1 << 30):.1f} GiB"
