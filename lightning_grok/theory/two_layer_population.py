"""The two-layer network's population loss in closed form, batched in torch (``data.population=exact``).

For N(x) = sum_j a_j relu(<w_j, x>) (Sec. 5.3; W (m, d), a (m, k)) and a teacher f*(x) that is zero, linear
(f*(x) = V^T x, V (d, k)) or a sum of ReLU units (f*(x) = sum_l c_l relu(<u_l, x>), U (p, d), c (p, k)), the
population loss of the test side (no 1/2, as the test loss (1/N) sum_i ||N(x_i) - y_i||^2 it replaces) is

    L(W, a) = E_x ||N(x) - f*(x)||^2
            = sum_k [ a_k^T K(W, W) a_k - 2 a_k^T K(W, U) c_k ] - s2 <a, W V>_F + E||f*(x)||^2,

with K the degree-1 arc-cosine kernel (Cho & Saul 2009) for x ~ N(0, s2 I_d), t the angle between u and v:

    K(u, v) = E[relu(<u, x>) relu(<v, x>)] = s2 ||u|| ||v|| (sin t + (pi - t) cos t) / (2 pi),

E[relu(<w, x>) <v, x>] = s2 <w, v> / 2 (hence the linear cross term -2 sum_jk a_jk s2 (W V)_jk / 2) and
E||V^T x||^2 = s2 ||V||_F^2. s2 = 1 (``gaussian``), 1/d (``gaussian_scaled``); the uniform law on the unit sphere
(``sphere``) has the moments of N(0, I_d / d) exactly, since every product above is 2-homogeneous in x and the
radius of a Gaussian vector is independent of its direction (theory/population.py). This is the torch twin of
``theory.population.two_layer_population_loss`` (numpy, tested against Monte Carlo), batched over members.

Precision: the evaluation runs in float64 whatever the run's dtype (W and a are cast, an (m, d) copy), and the
value is stored in the run's dtype. A float32 run thus records L to its own rounding (6e-8 relative), and a float64
run records the closed form to ~1e-15 (tests/test_two_layer_exact.py asserts 1e-9 against the numpy form).
Evaluating in float32 throughout would be about twice as fast and, measured, close enough for float32 runs: the
quadratic form cancels (K > 0 entrywise, a of both signs), yet at Fig. 1 right's iterates just past t2 (L ~ 0.008)
float32 differs from float64 by 5e-8 to 6e-7 relative, against L's relative decrease of ~5e-5 a step there
(benchmarks/bench_exact_two_layer.py measures it at the initialization and after the timed steps). float64 is
kept so that the recorded L never depends on how much the sum cancels. Written as f(c) = sqrt(1 - c^2) +
(pi - acos c) c of the clamped cosine c, the kernel is well conditioned (|f'(c)| = pi - acos c <= pi): the
rounding of c near the diagonal cancels between the two terms.

Cost of one evaluation (G members): on the m (m + b) / 2 entries of the upper block triangle of K(W, W) (row
blocks of b = ``ROW_BLOCK``; K is symmetric, so each off-diagonal block counts twice) the Gram entries W W^T,
d multiply-adds each, and the kernel's elementwise work (a division, a square root, an arccosine and ~8 more
passes); then K a, m^2 k, and G m p (d + k) for a ReLU teacher of p units. ``ELEMENT_COST`` weighs one kernel
entry in multiply-adds for the sparse-evaluation cost model (gd_loops.TwoLayerGDLoop).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from lightning_grok.resources import KERNEL_BLOCK_ELEMENTS, KERNEL_ROW_BLOCK
from lightning_grok.theory.population import input_variance

if TYPE_CHECKING:
    from lightning_grok.data.regression import TeacherSpec

ACCUMULATE = torch.float64
# rows of K(W, W) computed at a time: temporaries of (G, ROW_BLOCK, m) numbers, and the block-triangular saving
# (m (m + ROW_BLOCK) / 2 entries instead of m^2); fewer when G ROW_BLOCK m would exceed BLOCK_ELEMENTS
ROW_BLOCK = KERNEL_ROW_BLOCK
BLOCK_ELEMENTS = KERNEL_BLOCK_ELEMENTS
# one kernel entry in multiply-adds of the run's step (float32 at the defaults): the arccosine, square root and
# division in float64 and ~10 more passes over the block. benchmarks/bench_exact_two_layer.py fits it from the
# measured evaluation / step time ratio: 220-570 on a shared 2-core CPU (load 5-8; 30-68 steps an evaluation at
# m = 1000, d = n = 50); 250 gives 33 steps there, s = 133
ELEMENT_COST = 250


def evaluation_cost(m: int, d: int, k: int, teacher_units: int = 0, members: int = 1) -> float:
    """Multiply-adds of one exact evaluation (module docstring): G (E (d + ELEMENT_COST) + m^2 k + m p (d + k +
    ELEMENT_COST)) with E = m (m + b) / 2 the entries of the upper block triangle of K(W, W), b = min(m, ROW_BLOCK)
    (its Gram entries d multiply-adds each), m^2 k for K a, and p teacher units."""
    entries = m * (m + min(m, ROW_BLOCK)) / 2
    per = entries * (d + ELEMENT_COST) + m * m * k + teacher_units * m * (d + k + ELEMENT_COST)
    return members * per


def _arccos_kernel(gram: torch.Tensor, nu: torch.Tensor, nv: torch.Tensor) -> torch.Tensor:
    """||u|| ||v|| (sin t + (pi - t) cos t) from <u, v> (G, p, q) and the norms (G, p), (G, q), in place of
    ``gram`` (without s2 / (2 pi)). Zero vectors give 0 (their Gram entries are 0)."""
    outer = nu[:, :, None] * nv[:, None, :]
    cos = gram.div_(outer.clamp(min=torch.finfo(gram.dtype).tiny)).clamp_(-1.0, 1.0)
    out = torch.acos(cos).neg_().add_(math.pi).mul_(cos)  # (pi - t) cos t
    out.add_(cos.square_().neg_().add_(1.0).clamp_(min=0.0).sqrt_())  # + sin t
    return out.mul_(outer)


@dataclass
class TwoLayerPopulation:
    """The teachers of B members and their input law: ``loss(W, a)`` is L of the module docstring, (G,).

    ``relu_units`` (B, p, d) and ``relu_coef`` (B, p, k): a ReLU teacher; ``linear`` (B, d, k): a linear one;
    neither: the zero teacher. ``target_second_moment`` (B,): E||f*(x)||^2. Tensors in float64 on the run's
    device."""

    s2: float
    target_second_moment: torch.Tensor
    relu_units: torch.Tensor | None = None
    relu_coef: torch.Tensor | None = None
    linear: torch.Tensor | None = None
    dist: str = "gaussian"

    @property
    def teacher_units(self) -> int:
        return 0 if self.relu_units is None else self.relu_units.shape[1]

    @classmethod
    def from_teachers(
        cls, teachers: list[TeacherSpec], dist: str, d: int, k: int = 1, device: torch.device | str = "cpu"
    ) -> TwoLayerPopulation:
        """One member per ``TeacherSpec`` (data.regression.draw_teacher), all of one kind (zero, linear, relu)."""
        kinds = {t.kind for t in teachers}
        if len(kinds) != 1 or not kinds <= {"zero", "linear", "relu"}:
            raise ValueError(f"exact two-layer population loss: teachers {sorted(kinds)} (allowed: zero, linear, relu)")
        kind = kinds.pop()
        s2 = input_variance(dist, d)
        opts = {"dtype": ACCUMULATE, "device": device}
        b = len(teachers)
        if kind == "zero":
            return cls(s2, torch.zeros(b, **opts), dist=dist)
        weights = torch.stack([t.weight.to(**opts) * t.scale for t in teachers])  # (B, d, 1)
        if kind == "linear":
            v = weights.expand(b, d, k).contiguous()  # the same teacher on every output
            return cls(s2, s2 * v.square().sum(dim=(1, 2)), linear=v, dist=dist)
        units = weights.transpose(1, 2).contiguous()  # (B, 1, d): one ReLU unit u = w*, coefficient 1
        coef = torch.ones(b, 1, k, **opts)
        pop = cls(s2, torch.zeros(b, **opts), relu_units=units, relu_coef=coef, dist=dist)
        kuu = pop._kernel(units, units)  # (B, p, p)
        pop.target_second_moment = (coef * torch.bmm(kuu, coef)).sum(dim=(1, 2))
        return pop

    def _kernel(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """K(u_i, v_j) for u (G, p, d), v (G, q, d): (G, p, q)."""
        gram = torch.bmm(u, v.transpose(1, 2))
        return _arccos_kernel(gram, u.norm(dim=2), v.norm(dim=2)).mul_(self.s2 / (2 * math.pi))

    def _quadratic(self, w: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """sum_k a_k^T K(W, W) a_k, (G,), by row blocks of the upper block triangle: block rows R = [r0, r1)
        against columns [r0, m); the diagonal block once, the blocks right of it twice (K is symmetric)."""
        g, m, _ = w.shape
        rows = max(1, min(ROW_BLOCK, BLOCK_ELEMENTS // max(1, g * m)))
        norms = w.norm(dim=2)
        total = torch.zeros(g, dtype=w.dtype, device=w.device)
        scale = self.s2 / (2 * math.pi)
        for r0 in range(0, m, rows):
            r1 = min(m, r0 + rows)
            gram = torch.bmm(w[:, r0:r1], w[:, r0:].transpose(1, 2))  # (G, r, m - r0)
            k = _arccos_kernel(gram, norms[:, r0:r1], norms[:, r0:])
            ka = torch.bmm(k[:, :, : r1 - r0], a[:, r0:r1])
            if r1 < m:
                ka.add_(torch.bmm(k[:, :, r1 - r0 :], a[:, r1:]), alpha=2.0)
            total.add_((a[:, r0:r1] * ka).sum(dim=(1, 2)))
        return total.mul_(scale)

    def loss(self, w: torch.Tensor, a: torch.Tensor, members: slice = slice(None)) -> torch.Tensor:
        """L(W, a) for W (G, m, d), a (G, m, k) of the members ``members`` of this population, in float64: (G,)."""
        w, a = w.to(ACCUMULATE), a.to(ACCUMULATE)
        out = self._quadratic(w, a) + self.target_second_moment[members]
        if self.relu_units is not None:
            kwu = self._kernel(w, self.relu_units[members])  # (G, m, p)
            out -= 2 * (a * torch.bmm(kwu, self.relu_coef[members])).sum(dim=(1, 2))
        if self.linear is not None:
            out -= self.s2 * (a * torch.bmm(w, self.linear[members])).sum(dim=(1, 2))
        return out

    def to(self, device: torch.device | str) -> TwoLayerPopulation:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return TwoLayerPopulation(
            self.s2,
            move(self.target_second_moment),
            move(self.relu_units),
            move(self.relu_coef),
            move(self.linear),
            self.dist,
        )
