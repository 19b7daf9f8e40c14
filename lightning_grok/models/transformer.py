"""Decoder-only transformer on modular arithmetic (Power et al. 2022; Nanda et al. 2023): the classic grokking model.

An example (a, b) is the token sequence "a op b =" (``data.modular.pair_tokens``: tokens 0..p-1 are the residues,
p is the operation, p + 1 is "="). The model embeds each token (learned token and position embeddings of width
d_model, initialized N(0, 1/d_model)), runs ``n_layers`` pre-LayerNorm blocks of causal multi-head self-attention
and a ReLU MLP (4 d_model hidden units; ``torch.nn.TransformerEncoderLayer`` with a causal mask, no dropout), and
reads the p logits of a op b mod p off the last position, "=". Position i attends to positions <= i only, so a
logit at position i depends on the first i + 1 tokens alone.

Not linear in its parameters: no closed form or bound of the paper applies (``theory.problem.linear_problem``
says so in phases.json); t1 and t2 are measured.
"""

from __future__ import annotations

import torch
from torch import nn

from lightning_grok.data.modular import SEQUENCE_LENGTH, pair_tokens, vocabulary_size


class ModularTransformer(nn.Module):
    """Logits (N, p) of a op b mod p from one-hot pairs (N, 2p) (the run's input tensors) or tokens (N, 4)."""

    linear_in_parameters = False

    def __init__(
        self,
        modulus: int,
        n_layers: int = 1,
        d_model: int = 128,
        n_heads: int = 4,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"model.d_model={d_model} must be a multiple of model.n_heads={n_heads}")
        self.modulus = modulus
        # torch's layers draw their initialization from the global generator: draw it from the run's own stream
        # instead (seeding.py), without disturbing the global state
        seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if generator is not None else None
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            self.token = nn.Embedding(vocabulary_size(modulus), d_model)
            self.position = nn.Embedding(SEQUENCE_LENGTH, d_model)
            self.blocks = nn.ModuleList(
                nn.TransformerEncoderLayer(
                    d_model,
                    n_heads,
                    dim_feedforward=4 * d_model,
                    dropout=0.0,
                    activation="relu",
                    batch_first=True,
                    norm_first=True,
                )
                for _ in range(n_layers)
            )
            self.norm = nn.LayerNorm(d_model)
            self.readout = nn.Linear(d_model, modulus)
            # embeddings N(0, 1/d_model) (Nanda et al.), not torch's N(0, 1): with unit-variance embeddings the
            # residual stream starts sqrt(d_model) times larger than the blocks' outputs, and full-batch AdamW
            # fits the table through loss spikes instead of smoothly
            for emb in (self.token, self.position):
                nn.init.normal_(emb.weight, std=d_model**-0.5)
        # True above the diagonal: position i may not attend to j > i. Boolean, so .to(dtype) leaves it alone.
        mask = torch.triu(torch.ones(SEQUENCE_LENGTH, SEQUENCE_LENGTH, dtype=torch.bool), diagonal=1)
        self.register_buffer("causal_mask", mask, persistent=False)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Token ids (N, 4): ``x`` itself when it holds integers, else the tokens of one-hot pairs (N, 2p)."""
        if x.is_floating_point():
            return pair_tokens(x, self.modulus)
        return x.long()

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The final (LayerNormed) residual stream at every position, (N, 4, d_model)."""
        tok = self.tokens(x)
        positions = torch.arange(tok.shape[1], device=tok.device)
        h = self.token(tok) + self.position(positions)
        mask = self.causal_mask[: tok.shape[1], : tok.shape[1]]
        for block in self.blocks:
            h = block(h, src_mask=mask, is_causal=True)
        return self.norm(h)

    def logits_per_position(self, x: torch.Tensor) -> torch.Tensor:
        """The readout at every position, (N, 4, p); the model's output is the last position's."""
        return self.readout(self.hidden(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.hidden(x)[:, -1])
