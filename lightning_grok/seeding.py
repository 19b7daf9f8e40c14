"""Independent, reproducible random streams derived from one run seed.

Each component (data, teacher, initialization, split, mini-batches) draws from its own stream, so
changing, say, the width m does not change the training inputs of a run with the same seed.
"""

from __future__ import annotations

import numpy as np
import torch

STREAMS = ("data", "teacher", "init", "test", "sigma", "split", "batches", "noise")


def generator(seed: int, stream: str) -> torch.Generator:
    """A CPU torch.Generator for ``stream``, a pure function of (seed, stream)."""
    if stream not in STREAMS:
        raise KeyError(f"unknown random stream {stream!r}; known: {STREAMS}")
    child = np.random.SeedSequence([seed, STREAMS.index(stream)])
    return torch.Generator().manual_seed(int(child.generate_state(1, dtype=np.uint64)[0]) >> 1)
