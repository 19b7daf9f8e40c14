"""Lightning's and torch's chatter that does not apply here, and the context that silences it.

``quiet_third_party`` is entered around building and fitting the Trainer (``experiment.fit``) and around
the trainer checks (``trainer_checks.check_trainer``), so both see the same quiet Lightning. It imports
nothing from this package.
"""

from __future__ import annotations

import contextlib
import logging
import warnings

# Lightning's and torch's messages that do not apply to a full-batch GD run started on purpose here
IRRELEVANT_WARNINGS = (
    ".*does not have many workers.*",  # one batch, the whole training set, already in memory
    ".*log_every_n_steps.*",  # curves are logged on their own schedule of GD steps
    ".*The `srun` command is available on your system but is not used.*",
    r".*isinstance\(treespec, LeafSpec\).*",  # a torch deprecation inside Lightning
)
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")  # GPU/TPU availability, tips, restore notes


@contextlib.contextmanager
def quiet_third_party():
    """Within: Lightning logs warnings and errors only, and the hints above are not shown. Our own lines
    (run directory, resume, signals, the phase table) are printed by this package, not through Lightning."""
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        for pattern in IRRELEVANT_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        for lg in loggers:
            lg.setLevel(max(lg.level, logging.WARNING))
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)
