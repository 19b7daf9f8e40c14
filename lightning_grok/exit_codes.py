"""Every exit status of ``lightning-grok`` and its agents, defined once (``cli``'s docstring tells users which
verb returns which). Several share a value: the shell sees one number, the name says which cause it was."""

from __future__ import annotations

EXIT_OK = 0  # fit completed; a sweep agent ran out of points; every figure drawn
EXIT_IO = 1  # a file could not be written (a full disk): earlier results are intact
EXIT_TOO_MANY_FAILURES = 1  # a sweep agent gave up after max_failures unexpected failures in a row
EXIT_ALL_FAILED = 1  # every run a sweep agent started failed (none finished or diverged)
EXIT_LOCK_TIMEOUT = 1  # a sweep agent could not take the sweep state's lock in time
EXIT_CONFIG = 2  # bad input (a config, sweep file or state the schema refuses): nothing trained
EXIT_DIVERGED = 3  # the run trained and measured its divergence: a result, not a broken setup
EXIT_INCOMPLETE = 4  # a figure lacks points (missing, failed or interrupted runs): not drawn without --partial
EXIT_NOT_STARTED = 127  # a run's command could not be executed (the shell's convention)
EXIT_SIGNAL_BASE = 128  # stopped by signal N: 128 + N (130 SIGINT, 143 SIGTERM, 138 SIGUSR1), checkpoint saved


def exit_for_signal(signum: int) -> int:
    """The exit status of a process stopped by signal ``signum``: 128 + N, the shell's convention."""
    return EXIT_SIGNAL_BASE + int(signum)
