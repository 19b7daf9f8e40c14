"""Modular arithmetic (the classic grokking task; not in the paper): the table a op b mod p.

Inputs are two concatenated one-hot vectors (length 2p); targets are one-hot vectors (squared loss,
k = p outputs) or class indices (cross-entropy). The transformer reads the same pairs as the token
sequence "a op b =" (``pair_tokens``: residues 0..p-1, the operation p, "=" p + 1). A seeded split puts
``train_fraction`` of the table in the training set; the test set is the rest of the table, the whole
remaining population, so every population quantity (loss, accuracy, Sigma over held-out inputs) is exact.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from lightning_grok.config import ConfigError
from lightning_grok.data.base import RunData
from lightning_grok.primes import is_prime
from lightning_grok.seeding import generator

FIELD_OPERATIONS = ("div",)  # need b^{-1}, i.e. Z_p a field
SEQUENCE_LENGTH = 4  # "a op b =": the transformer's tokens per example


def vocabulary_size(p: int) -> int:
    """Tokens of the sequence form: the residues 0..p-1, the operation (p) and "=" (p + 1)."""
    return p + 2


def pair_tokens(x: torch.Tensor, p: int) -> torch.Tensor:
    """The token sequences "a op b =" (N, 4), int64, of one-hot pairs ``x`` (N, 2p): [a, p, b, p + 1]."""
    a, b = x[:, :p].argmax(dim=1), x[:, p:].argmax(dim=1)
    op, eq = torch.full_like(a, p), torch.full_like(a, p + 1)
    return torch.stack([a, op, b, eq], dim=1)


def operation_table(p: int, operation: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All (a, b, a op b mod p); for division b ranges over 1..p-1 and a/b = a * b^(p-2) mod p."""
    if operation in FIELD_OPERATIONS and not is_prime(p):
        raise ConfigError(f"invalid value for 'data.modulus': {p} (allowed: a prime, '{operation}' needs a field)")
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    if operation == "div":
        keep = b != 0
        a, b = a[keep], b[keep]
        inv = torch.tensor([pow(int(v), p - 2, p) for v in range(p)])
        c = (a * inv[b]) % p
    elif operation == "add":
        c = (a + b) % p
    elif operation == "sub":
        c = (a - b) % p
    elif operation == "mul":
        c = (a * b) % p
    elif operation == "x2_plus_y2":
        c = (a * a + b * b) % p
    elif operation == "x2_plus_xy_plus_y2":
        c = (a * a + a * b + b * b) % p
    else:
        raise ConfigError(f"invalid value for 'data.operation': {operation!r}")
    return a, b, c


def modular_tensors(cfg: DictConfig) -> RunData:
    """The table a op b mod p, split by a seeded permutation into training and test pairs."""
    d = cfg.data
    p = d.modulus
    a, b, c = operation_table(p, d.operation)
    eye = torch.eye(p, dtype=torch.float64)
    x = torch.cat([eye[a], eye[b]], dim=1)
    y = eye[c]
    order = torch.randperm(len(c), generator=generator(cfg.seed, "split"))
    n_train = int(round(d.train_fraction * len(c)))  # at least one pair on each side: config.rules._validate_split
    tr, te = order[:n_train], order[n_train:]
    return RunData(
        x_train=x[tr],
        y_train=y[tr],
        x_test=x[te],
        y_test=y[te],
        train_labels=c[tr],
        test_labels=c[te],
        cross_entropy=d.target == "index",
        x_sigma=x[te],
        sigma_is_exact=True,
        finite_population=True,
    )
