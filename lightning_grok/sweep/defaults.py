"""The sweep agent's time limits and patience, defined once: ``AgentOptions``, ``SweepDir`` and the
``lightning-grok sweep`` options (defaults and help text) all read them from here."""

from __future__ import annotations

STALE_AFTER_S = 600.0  # seconds without a heartbeat before another host's running run counts as crashed
LOCK_TIMEOUT_S = 600.0  # seconds an agent waits for the sweep's state.lock before giving up (exit 1)
HEARTBEAT_EVERY_S = 30.0  # seconds between two touches of a running run's heartbeat file
GRACE_S = 30.0  # seconds a run gets to exit after SIGTERM before SIGKILL
MAX_FAILURES = 3  # unexpected run failures in a row before an agent gives up (diverged runs do not count)
