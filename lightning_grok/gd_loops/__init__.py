"""GD loops: K optimizer steps per call, every step's losses recorded into preallocated buffers.

Lightning's per-call overhead is paid once per K steps (``trainer.steps_per_call``), so a call of a
GD loop is the unit of work of one ``training_step``. The GD loops:

* ``LinearGDLoop``: full-batch GD (Eq. 2) for models linear in their parameters, fused into two
  BLAS calls per step:  R_t = Phi theta_t - Y,  theta_{t+1} = (1 - eta lambda) theta_t - (eta/n) Phi^T R_t.
  This is exactly ``torch.optim.SGD(lr=eta, weight_decay=lambda)`` on the gradient (1/n) Phi^T R_t.
  Losses are evaluated afterwards for the whole block of K iterates at once (BLAS-3).
  ``RowSpaceGDLoop``: the same iterates in the row space of Phi, in the eigenbasis of the step: O(n) a step
  when n < m.
* ``TwoLayerGDLoop``: full-batch GD (Eq. 2 on both layers) for the two-layer ReLU network of Sec. 5.3,
  with hand-written gradients: four batched matrix products a step, the training loss from the forward pass.
* ``AutogradLoop``: any model and any torch optimizer (gd, sgd with momentum, adamw), full batch
  or mini-batches, with the losses of theta_t recorded before each update. It evaluates the test side at
  every step: a replay would have to restore optimizer moments, mini-batch generators and the GradScaler.

Under DDP each rank holds a shard of the training rows; the gradient (a sum over rows) and the training
loss are all-reduced, so every rank follows the single-process trajectory.

Sparse evaluation. When the population loss comes from a test set of N points it can cost several training
steps (N m (d + k) multiply-adds for the two-layer network against n m (2d + 3k) for its step). The GD loops
then evaluate the test side (test loss, test accuracy or surrogate accuracy) only at every s-th step
(absolute multiples of s), at the first and last step of each call, and at the steps the loggers want
(``wanted``); the other rows of ``Chunk.test_loss`` hold NaN and ``Chunk.evaluated`` says which are real.
Wherever a phase threshold is crossed between two consecutive evaluated steps (test loss above c, then <= c;
test accuracy below tau, then >= tau) every step in between is evaluated too (the two-layer GD loop replays
that block of GD from its stored start; the linear GD loops keep every iterate of a call). So t2 = min{t :
L(theta_t) <= c} is exact to the step, assuming the curve does not dip below c and climb back above it
within one block of s steps whose two ends are both above c. t1 needs nothing: the training loss is
recorded at every step. ``eval_every``: s; 0 picks it from the cost ratio (``auto_eval_every``), 1 evaluates
every step. The closed-form population loss of ridge (Sigma = I/m) is cheap and always evaluated every step.
The two-layer network's closed-form population loss (``data.population=exact``, arc-cosine kernel,
theory/two_layer_population.py) is not: about m^2 d / 2 multiply-adds and m^2 / 2 arccosines in float64, 30-70
steps at the paper's defaults (against 1-3 for a 500-point test set), so it is evaluated sparsely like a test set.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.classification import multiclass_accuracy

from lightning_grok.resources import TEST_BLOCK_ELEMENTS
from lightning_grok.theory.two_layer_population import TwoLayerPopulation, evaluation_cost

Reduce = Callable[[torch.Tensor], torch.Tensor]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


Scalars = float | Sequence[float] | torch.Tensor  # one value for every member, or one per member (B,)


def _values(value: Scalars, members: int, name: str) -> list[float]:
    """``value`` as B Python floats (a scalar repeated)."""
    if isinstance(value, int | float):
        return [float(value)] * members
    vals = [float(v) for v in (value.reshape(-1).tolist() if isinstance(value, torch.Tensor) else value)]
    if len(vals) == 1:
        return vals * members
    if len(vals) != members:
        raise ValueError(f"{name}: {len(vals)} values for {members} members")
    return vals


def decay_and_scale(
    lr: Scalars, weight_decay: Scalars, n_global: int, like: torch.Tensor
) -> tuple[float | torch.Tensor, float | torch.Tensor]:
    """(1 - eta lambda, -eta / n) of Eq. (2) for the B = ``like.shape[0]`` members: Python floats when every member
    has the same eta and lambda (the scalar fast path), else (B, 1, 1) tensors whose entries are the very floats
    each member's own run computes. Per-member eta and lambda let sweep points that differ only in them train as
    members of one GD loop (``lightning_grok.batch``)."""
    b = like.shape[0]
    lrs, wds = _values(lr, b, "lr"), _values(weight_decay, b, "weight_decay")
    decays = [1.0 - e * w for e, w in zip(lrs, wds, strict=True)]
    scales = [-e / n_global for e in lrs]
    if all(d == decays[0] for d in decays) and all(s == scales[0] for s in scales):
        return decays[0], scales[0]
    opts = {"dtype": like.dtype, "device": like.device}
    return torch.tensor(decays, **opts).view(b, 1, 1), torch.tensor(scales, **opts).view(b, 1, 1)


@dataclass
class Chunk:
    """Per-step records of one GD-loop call, shape (K, B): row i is GD step ``start + i`` (theta before update i),
    column b is ensemble member b (B = 1 for a single run)."""

    start: int
    train_loss: torch.Tensor
    test_loss: torch.Tensor  # NaN where not evaluated (sparse evaluation)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    # (K, B) bool: entries whose test-side records (test_loss, test_* extras) were evaluated; None: all of them
    evaluated: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.train_loss.shape[0]

    @property
    def members(self) -> int:
        return self.train_loss.shape[1]


@dataclass
class PopulationSide:
    """Population side of a run, on the run's device: a test set, or an exact Sigma = sigma I with theta*."""

    x_test: torch.Tensor | None = None  # inputs (network loops) or features (linear GD loop)
    y_test: torch.Tensor | None = None
    theta_star: torch.Tensor | None = None
    sigma_scale: float | None = None
    test_labels: torch.Tensor | None = None
    train_labels: torch.Tensor | None = None
    surrogate_eps: float | None = None  # regression: fraction of test points with error <= eps (Fig. 5)
    cross_entropy: bool = False
    c: float | None = None  # t2 threshold on the test loss; sparse evaluation needs it to find crossings
    tau: float | None = None  # t2 threshold on the test accuracy (classification)
    # two-layer network, data.population=exact: the members' teachers and input law; the test loss is then the
    # closed-form population loss (theory/two_layer_population.py) instead of a test set's mean
    two_layer: TwoLayerPopulation | None = None

    @property
    def exact(self) -> bool:
        return self.sigma_scale is not None and self.theta_star is not None


# ---- sparse evaluation of the test side -------------------------------------------------------------------------
# PopulationSide may take about this share of the steps' multiply-adds; in time it takes less, since it runs as one
# large matrix product while a step is several small ones.
EVAL_SHARE = 0.25
MAX_EVAL_EVERY = 256


def auto_eval_every(step_cost: float, eval_cost: float, share: float = EVAL_SHARE, cap: int = MAX_EVAL_EVERY) -> int:
    """s, the steps between test-side evaluations, from the multiply-adds of one step and of one evaluation:
    1 when evaluating costs at most ``share`` of a step, else the smallest s with eval_cost / s <= share * step_cost
    (at most ``cap``). Two-layer defaults (n = d = 50, m = 1000, N = 500): ratio 4.95, s = 20."""
    if eval_cost <= share * step_cost:
        return 1
    return int(min(cap, math.ceil(eval_cost / (share * step_cost))))


def eval_points(start: int, steps: int, every: int, wanted: Sequence[int] | np.ndarray | None = None) -> torch.Tensor:
    """Indices i in [0, steps) of the iterates theta_{start+i} whose test side a call evaluates (sorted, int64):
    the absolute steps that are multiples of ``every``, the call's first and last steps, and ``wanted`` steps."""
    if every <= 1 or steps <= 2:
        return torch.arange(steps)
    parts = [np.arange((-start) % every, steps, every), np.array([0, steps - 1])]
    if wanted is not None:
        w = np.asarray(wanted, dtype=np.int64)
        parts.append(w[(w >= start) & (w < start + steps)] - start)
    return torch.from_numpy(np.unique(np.concatenate(parts)).astype(np.int64))


def _crossed(prev: dict[str, torch.Tensor], now: dict[str, torch.Tensor], ev: PopulationSide) -> torch.Tensor:
    """Where a t2 threshold is crossed into its reached side between two evaluated iterates: test loss > c then
    <= c (Sec. 2's t2), or test accuracy < tau then >= tau (the accuracy t2). NaN (a diverged run) never crosses."""
    loss0, loss1 = prev["loss"], now["loss"]
    out = (loss0 > ev.c) & (loss1 <= ev.c)
    if ev.tau is not None and "test_acc" in now:
        out |= (prev["test_acc"] < ev.tau) & (now["test_acc"] >= ev.tau)
    return out


def _blocks_to_fill(points: torch.Tensor, values: dict[str, torch.Tensor], ev: PopulationSide) -> torch.Tensor | None:
    """The un-evaluated indices strictly between consecutive ``points`` (E,) whose values (E, B) cross a threshold
    for any member; None when no block does."""
    if len(points) < 2:
        return None
    prev = {key: v[:-1] for key, v in values.items()}
    now = {key: v[1:] for key, v in values.items()}
    blocks = torch.nonzero(_crossed(prev, now, ev).any(dim=1)).flatten().tolist()  # one host sync per call
    pts = points.tolist()
    fill = [torch.arange(pts[j] + 1, pts[j + 1]) for j in blocks if pts[j + 1] > pts[j] + 1]
    return torch.cat(fill) if fill else None


def _sparse_records(
    evaluate: Callable[[torch.Tensor], dict[str, torch.Tensor]], steps: int, points: torch.Tensor, ev: PopulationSide
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None]:
    """Test-side records of a call of ``steps`` stored iterates, evaluated at ``points`` and inside every block
    where a threshold is crossed. ``evaluate(idx)`` gives {"loss": (E, B), extra name: (E, B)} for the iterates
    ``idx``. Returns (test loss (K, B), extras (K, B) each, evaluated mask (K, B) or None when every row was)."""
    values = evaluate(points)
    if len(points) == steps:
        return values.pop("loss"), values, None
    fill = _blocks_to_fill(points, values, ev)
    if fill is not None:
        more = evaluate(fill)
        points = torch.cat([points, fill])
        values = {key: torch.cat([v, more[key]]) for key, v in values.items()}
    loss = values["loss"]
    rows = points.to(loss.device)

    def scatter(v: torch.Tensor) -> torch.Tensor:
        return torch.full((steps, v.shape[1]), math.nan, dtype=v.dtype, device=v.device).index_copy_(0, rows, v)

    evaluated = torch.zeros(steps, loss.shape[1], dtype=torch.bool, device=loss.device).index_fill_(0, rows, True)
    return scatter(values.pop("loss")), {key: scatter(v) for key, v in values.items()}, evaluated


class LinearGDLoop:
    """Fused full-batch GD for B independent members at once (B = 1 for a single run), batched over members:
    phi (B, n, m), y (B, n, k), theta (B, m, k). Records of a call have shape (K, B). ``lr`` and ``weight_decay``:
    one eta and lambda for all, or one per member (``decay_and_scale``)."""

    def __init__(
        self,
        phi: torch.Tensor,
        y: torch.Tensor,
        lr: Scalars,
        weight_decay: Scalars,
        n_global: int,
        evaluation: PopulationSide,
        max_steps_per_call: int,
        reduce: Reduce = _identity,
        eval_every: int = 0,
    ):
        self.phi, self.phi_t, self.y, self.neg_y = phi, phi.transpose(1, 2), y, -y
        # floats, or (B, 1, 1) per member (``decay_and_scale``)
        self.decay, self.step_scale = decay_and_scale(lr, weight_decay, n_global, phi)
        self.n_global = n_global
        self.ev = evaluation
        self.reduce = reduce
        self.distributed = reduce is not _identity
        b, m, k = phi.shape[0], phi.shape[2], y.shape[2]
        # a step: Phi theta and Phi^T R (2 n m k); an evaluation on a test set: N m k. The global n, so that
        # every DDP world size evaluates the same steps
        n_test = 0 if evaluation.exact or evaluation.x_test is None else evaluation.x_test.shape[1]
        self.every = _every(eval_every, evaluation, 2 * n_global * m * k, n_test * m * k)
        opts = {"dtype": phi.dtype, "device": phi.device}
        self.thetas = torch.empty(max_steps_per_call + 1, b, m, k, **opts)
        self.residuals = torch.empty(max_steps_per_call, *y.shape, **opts)
        self.grad = torch.empty(b, m, k, **opts)

    @torch.no_grad()
    def run(self, theta: torch.Tensor, start: int, steps: int, wanted: np.ndarray | None = None) -> Chunk:
        """Advance ``theta`` (B, m, k) in place by ``steps`` GD steps; records belong to theta_start...
        ``wanted``: absolute steps whose test side must be evaluated (the loggers' schedule)."""
        thetas, res, phi, phi_t = self.thetas, self.residuals, self.phi, self.phi_t
        thetas[0].copy_(theta)
        ths, rs = thetas.unbind(0), res.unbind(0)  # views made once per call, not twice per step
        neg_y, decay, scale = self.neg_y, self.decay, self.step_scale
        for i in range(steps):
            torch.baddbmm(neg_y, phi, ths[i], out=rs[i])
            if isinstance(decay, torch.Tensor):  # per-member eta and lambda: theta decay + (-eta/n) Phi^T R
                torch.bmm(phi_t, rs[i], out=self.grad)
                self.reduce(self.grad)
                torch.addcmul(self.grad.mul_(scale), ths[i], decay, out=ths[i + 1])
            elif self.distributed:
                torch.bmm(phi_t, rs[i], out=self.grad)
                self.reduce(self.grad)
                torch.add(ths[i] * decay, self.grad, alpha=scale, out=ths[i + 1])
            else:
                torch.baddbmm(ths[i], phi_t, rs[i], beta=decay, alpha=scale, out=ths[i + 1])
        theta.copy_(thetas[steps])
        block = thetas[:steps]
        train = self.reduce(res[:steps].square().sum(dim=(2, 3))) / (2 * self.n_global)
        extras = {"param_norm2": block.square().sum(dim=(2, 3))}
        if self.ev.train_labels is not None:
            correct = ((res[:steps] + self.y).argmax(dim=3) == self.ev.train_labels).sum(dim=2)
            extras["train_acc"] = self.reduce(correct.to(phi.dtype)) / self.n_global
        test, more, evaluated = _linear_population(block, self.ev, eval_points(start, steps, self.every, wanted))
        extras.update(more)
        return Chunk(start, train, test, extras, evaluated)


def _every(eval_every: int, ev: PopulationSide, step_cost: float, eval_cost: float) -> int:
    """s of a GD loop: 1 for the closed-form population loss, for no threshold to watch, or when asked;
    ``eval_every`` if set; else ``auto_eval_every``."""
    if ev.exact or ev.c is None or eval_cost == 0:
        return 1
    return int(eval_every) if eval_every > 0 else auto_eval_every(step_cost, eval_cost)


def _two_layer_eval_cost(ev: PopulationSide, m: int, d: int, k: int) -> float:
    """Multiply-adds of one member's test-side evaluation in the two-layer GD loop: N m (d + k) on a test set of
    N points; with the closed form ``theory.two_layer_population.evaluation_cost`` (d for the Gram entry and
    ELEMENT_COST for the kernel, per entry of K(W, W)'s upper block triangle, plus K a and the teacher's columns)."""
    if ev.two_layer is not None:
        return evaluation_cost(m, d, k, ev.two_layer.teacher_units)
    n_test = 0 if ev.x_test is None else ev.x_test.shape[1]
    return n_test * m * (d + k)


class RowSpaceGDLoop:
    """The same GD (Eq. 2) in the row space of Phi, for n < m. With Phi^T = V R (thin QR, V in R^{m x n})
    theta_t = V c_t + (1 - eta lambda)^t theta_perp, and one GD step is one affine map of c in R^{n x k}:

        c_{t+1} = M c_t + b,   M = (1 - eta lambda) I - (eta/n) R R^T,   b = (eta/n) R Y,

    M is symmetric, so the loop steps in its eigenbasis (``_modes``: the SVD of R, computed once), where the affine
    map is elementwise: O(n) a step instead of O(n m), the iterates of ``LinearGDLoop`` up to rounding (~1e-14).
    Coefficients are kept as rows (C = c^T, shape (B, k, n); ``coefs`` holds their mode coordinates Z = C Q).
    The training loss, parameter norm and exact population loss are O(n) a step in these coordinates, computed
    every few steps while the iterates are in cache; test-set predictions and training accuracy take one batched
    matrix product per member. Single process only; members batched over the leading dimension.
    """

    def __init__(
        self,
        phi: torch.Tensor,
        y: torch.Tensor,
        lr: Scalars,
        weight_decay: Scalars,
        n_global: int,
        evaluation: PopulationSide,
        max_steps_per_call: int,
        eval_every: int = 0,
    ):
        v, r = torch.linalg.qr(phi.transpose(1, 2))  # (B, m, n), (B, n, n)
        n = phi.shape[1]
        # floats, or (B, 1, 1) per member (``decay_and_scale``): the same numbers elementwise
        self.decay, scale = decay_and_scale(lr, weight_decay, n_global, phi)
        eye = torch.eye(n, dtype=phi.dtype, device=phi.device)
        step = -scale
        m_mat = self.decay * eye - step * (r @ r.transpose(1, 2))
        self.m_t = m_mat.transpose(1, 2).contiguous()  # C_{t+1} = C_t M^T + b^T
        self.b_t = (step * (r @ y)).transpose(1, 2).contiguous()  # (B, k, n)
        self.v, self.r = v, r.contiguous()
        self.y, self.y_t = y, y.transpose(1, 2)
        self.n_global = n_global
        self.ev = evaluation
        if evaluation.exact:
            ts = evaluation.theta_star
            self.c_star = (v.transpose(1, 2) @ ts).transpose(1, 2)  # (B, k, n)
            self.star_perp = ts - v @ self.c_star.transpose(1, 2)
        elif evaluation.x_test is not None:
            self.test_v_t = (evaluation.x_test @ v).transpose(1, 2).contiguous()  # (B, n, N)
        b, k = phi.shape[0], y.shape[2]
        # a step: C M^T (n^2 k); an evaluation on a test set: (X_test V) c + the null-space part (N (n + 1) k)
        n_test = 0 if evaluation.exact or evaluation.x_test is None else evaluation.x_test.shape[1]
        self.every = _every(eval_every, evaluation, n * n * k, n_test * (n + 1) * k)
        self.coefs = torch.empty(max_steps_per_call + 1, b, k, n, dtype=phi.dtype, device=phi.device)
        self._mode_cache: _Modes | None = None

    def _per_member(self, block: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """block (S, B, k, n) times right (B, n, p) -> (S, B, k, p), as one matrix product per member."""
        s, b, k, n = block.shape
        rows = block.permute(1, 0, 2, 3).reshape(b, s * k, n)
        return torch.bmm(rows, right).reshape(b, s, k, -1).permute(1, 0, 2, 3)

    def _modes(self) -> _Modes:
        """The eigenbasis of M (computed on the first call): with the SVD R = Q diag(s) W^T, R R^T = Q diag(s^2) Q^T,
        so M = Q diag(mu) Q^T with mu_j = (1 - eta lambda) - (eta/n) s_j^2, and in mode coordinates Z = C Q one GD
        step is elementwise:  Z_{t+1} = Z_t * mu + b^T Q.  The training residual rows C R - Y^T = Z diag(s) W^T - Y^T
        have the norm of Z diag(s) - Y^T W (W is n x n orthogonal), and ||C||, ||C - C*|| are ||Z||, ||Z - Z*||."""
        if self._mode_cache is None:
            q, s, wt = torch.linalg.svd(self.r)  # (B, n, n), (B, n), (B, n, n)
            b, k, n = self.b_t.shape
            eye = torch.eye(n, dtype=q.dtype, device=q.device)
            # (eta/n) s_j^2 = q_j^T (decay I - M) q_j: mu from the matrix the parameter-space step applies
            shrink = torch.einsum("bij,bik,bkj->bj", q, self.decay * eye - self.m_t.transpose(1, 2), q)
            mu = torch.as_tensor(self.decay, dtype=q.dtype, device=q.device).reshape(-1, 1) - shrink  # (B, n)

            def rows(t: torch.Tensor) -> torch.Tensor:  # (B, k, n) or (B, 1, n) -> (B, k n), the layout of a step
                return t.expand(b, k, n).reshape(b, k * n).contiguous()

            z_star = rows(self.c_star @ q) if self.ev.exact else None
            test = (q.transpose(1, 2) @ self.test_v_t).contiguous() if hasattr(self, "test_v_t") else None
            self._mode_cache = _Modes(
                q=q,
                rates=rows(mu[:, None, :]),
                gain=rows(self.b_t @ q),
                scale=rows(s[:, None, :]),
                neg_target=rows(-(wt @ self.y).transpose(1, 2)),
                z_star=z_star,
                predict=s[:, :, None] * wt,  # Z (diag(s) W^T) = C R: the training predictions, transposed
                test=test,
            )
        return self._mode_cache

    def _powers(self, steps: int, like: torch.Tensor) -> torch.Tensor:
        """(K, B): (1 - eta lambda)^i, i < K, of each member (one column repeated when they share it)."""
        i = torch.arange(steps, dtype=like.dtype, device=like.device)
        if isinstance(self.decay, torch.Tensor):
            return self.decay.view(1, -1) ** i[:, None]
        return (self.decay**i)[:, None].expand(steps, like.shape[0])

    def _record_block(self, steps: int, like: torch.Tensor) -> int:
        """Steps whose records are computed together, so that their iterates are still in cache (CPU)."""
        if like.device.type != "cpu":
            return max(1, steps)
        return max(1, min(steps, RECORD_BLOCK_ELEMENTS // like[0].numel()))

    @torch.no_grad()
    def run(self, theta: torch.Tensor, start: int, steps: int, wanted: np.ndarray | None = None) -> Chunk:
        """Advance ``theta`` (B, m, k) in place by ``steps`` GD steps, in mode coordinates (``_modes``): one
        elementwise multiply-add a step. Records of theta_start..., computed every ``_record_block`` steps."""
        modes, v, coefs = self._modes(), self.v, self.coefs
        # products with V as rows times matrix, (B, k, .) @ (B, ., .): several times faster on CPUs than V @ columns
        v_t = v.transpose(1, 2)
        # theta is projected afresh every call, never carried over from the last one: a run resumed from a
        # checkpoint (a new loop) then does the same arithmetic from a chunk boundary as the run that went on
        c0 = theta.transpose(1, 2) @ v  # (B, k, n) = (V^T theta)^T
        perp = theta - (c0 @ v_t).transpose(1, 2)  # decays by (1 - eta lambda) per step, untouched by data
        coefs[0] = c0 @ modes.q
        flat = coefs.flatten(2)  # (K + 1, B, k n)
        zs, rates, gain = flat[: steps + 1].unbind(0), modes.rates, modes.gain  # views of this call's steps only
        powers = self._powers(steps, theta)  # (K, B): (1 - eta lambda)^i of each member
        ev, b = self.ev, theta.shape[0]
        sums = torch.empty(3 if ev.exact else 2, steps, b, dtype=theta.dtype, device=theta.device)
        sub = self._record_block(steps, flat)
        for lo in range(0, steps, sub):
            hi = min(steps, lo + sub)
            for i in range(lo, hi):
                torch.addcmul(gain, zs[i], rates, out=zs[i + 1])
            z = flat[lo:hi]  # (S, B, k n)
            res = torch.addcmul(modes.neg_target, z, modes.scale)  # residuals, rotated by W^T
            torch.linalg.vecdot(res, res, out=sums[0, lo:hi])
            torch.linalg.vecdot(z, z, out=sums[1, lo:hi])
            if ev.exact:
                dz = z - modes.z_star
                torch.linalg.vecdot(dz, dz, out=sums[2, lo:hi])
        perp_end = self.decay**steps * perp
        theta.copy_((coefs[steps] @ modes.q.transpose(1, 2) @ v_t).transpose(1, 2) + perp_end)
        block = coefs[:steps]
        train = sums[0] / (2 * self.n_global)
        perp2 = perp.square().sum(dim=(1, 2))  # (B,)
        extras = {"param_norm2": sums[1] + powers**2 * perp2}
        if ev.train_labels is not None:
            correct = (self._per_member(block, modes.predict).argmax(dim=2) == ev.train_labels).sum(dim=2)
            extras["train_acc"] = correct.to(theta.dtype) / self.n_global
        if ev.exact:
            cross = (perp * self.star_perp).sum(dim=(1, 2))
            null = powers**2 * perp2 - 2 * powers * cross + self.star_perp.square().sum(dim=(1, 2))
            return Chunk(start, train, ev.sigma_scale * (sums[2] + null), extras)
        h = ev.x_test @ perp  # (B, N, k)

        def predict(idx: torch.Tensor) -> torch.Tensor:
            return self._per_member(block[idx], modes.test).transpose(2, 3) + powers[idx][:, :, None, None] * h

        points = eval_points(start, steps, self.every, wanted)
        test, more, evaluated = _sparse_records(lambda idx: _test_set_losses(predict, idx, ev), steps, points, ev)
        extras.update(more)
        return Chunk(start, train, test, extras, evaluated)


# The records of a row-space call (training loss, parameter norm, population loss) are computed every few steps,
# from iterates still in a core's L2 cache: for 16 default ridge members (1600 numbers a step) 18 steps at a time.
# Measured on 25,000 steps (one thread): 0.07 s, against 0.6 s when a whole call's iterates (33 MB) are read back
# from memory. Below ATen's grain size (32768 elements), so no record op starts a parallel region: with two threads
# on a loaded 2-core machine, 1 MB blocks took 3-20 s where these took 0.5-1.3 s.
RECORD_BLOCK_ELEMENTS = 30000


@dataclass
class _Modes:
    """``RowSpaceGDLoop`` in the eigenbasis Q of its step matrix M; (B, k n) tensors in the layout of a step."""

    q: torch.Tensor  # (B, n, n): row-space coefficients C = Z Q^T
    rates: torch.Tensor  # mu_j, the eigenvalues of M
    gain: torch.Tensor  # b^T Q
    scale: torch.Tensor  # s_j, the singular values of R (and of Phi)
    neg_target: torch.Tensor  # -Y^T W
    z_star: torch.Tensor | None  # C* Q (exact Sigma)
    predict: torch.Tensor  # (B, n, n): diag(s) W^T
    test: torch.Tensor | None  # (B, n, N): Q^T (X_test V)^T


def _linear_population(thetas: torch.Tensor, ev: PopulationSide, points: torch.Tensor):
    """Population loss of the iterates ``thetas`` (K, B, m, k): (K, B) loss, (K, B) extras, evaluated mask.
    Closed form at every step; on a test set at ``points`` and in the blocks where a threshold is crossed."""
    if ev.exact:
        return ev.sigma_scale * (thetas - ev.theta_star).square().sum(dim=(2, 3)), {}, None
    steps, b, m, k = thetas.shape

    def predict(idx: torch.Tensor) -> torch.Tensor:
        # one (N x m)(m x E k) product per member: broadcasting X_test over the E iterates would copy it E times
        cols = thetas[idx].permute(1, 2, 0, 3).reshape(b, m, -1)
        return torch.bmm(ev.x_test, cols).reshape(b, -1, len(idx), k).permute(2, 0, 1, 3)

    return _sparse_records(lambda idx: _test_set_losses(predict, idx, ev), steps, points, ev)


def _test_set_losses(
    predict: Callable[[torch.Tensor], torch.Tensor],
    idx: torch.Tensor,
    ev: PopulationSide,
    budget: int = TEST_BLOCK_ELEMENTS,
) -> dict[str, torch.Tensor]:
    """Test loss (and accuracy or surrogate accuracy) of the iterates ``idx`` (E,): {"loss": (E, B), ...};
    ``predict(j)`` gives the predictions (len(j), B, N, k) of iterates j, evaluated in blocks that keep memory
    bounded."""
    b, n_test, k = ev.y_test.shape
    block = max(1, budget // (b * n_test * k))
    idx = idx.to(ev.y_test.device)
    losses, accs, surrogate = [], [], []
    for s in range(0, len(idx), block):
        pred = predict(idx[s : s + block])  # (S, B, N, k)
        err = (pred - ev.y_test).square().sum(dim=3)  # (S, B, N)
        losses.append(err.mean(dim=2))
        if ev.test_labels is not None:
            accs.append((pred.argmax(dim=3) == ev.test_labels).to(pred.dtype).mean(dim=2))
        elif ev.surrogate_eps is not None:
            surrogate.append((err <= ev.surrogate_eps).to(pred.dtype).mean(dim=2))
    out = {"loss": torch.cat(losses)}
    if accs:
        out["test_acc"] = torch.cat(accs)
    if surrogate:
        out["test_surrogate_acc"] = torch.cat(surrogate)
    return out


# A member group's step touches about 2 n m + m d + n d numbers (Z and H share one (n, m) buffer, relu in place;
# the outer product R a^T and its masked copy share the other); on a CPU the group is sized so that these stay in a
# core's L2 cache (1 MiB a core on this machine's AMD EPYC): 16 default-size members batched together run at
# 0.55-0.65x the member-steps/s of one at a time (the (B, n, m) activations no longer fit), and two at 0.6x, so a
# CPU runs one default-size member after another within a call. With the two buffers a default-size member's step
# (0.6 MB) stays in L2; with four (1 MB, as before) it did not, and ran at 0.83-0.93x (one thread).
CPU_GROUP_BYTES = 1 << 20


@dataclass
class _Group:
    """Members g0..g1-1 of a two-layer GD loop: their data and the buffers their steps use (views, no copies).
    ``z`` and ``h`` are one buffer (relu in place), as are ``g`` and ``gz`` (the mask applied in place)."""

    rows: slice
    x: torch.Tensor
    y: torch.Tensor
    ev: PopulationSide
    z: torch.Tensor
    h: torch.Tensor
    g: torch.Tensor
    gz: torch.Tensor
    r: torch.Tensor
    grad: torch.Tensor
    grad_w: torch.Tensor
    grad_a: torch.Tensor
    kept_w: torch.Tensor
    kept_a: torch.Tensor
    scratch_w: torch.Tensor
    scratch_a: torch.Tensor
    scratch_out: torch.Tensor
    test_h: torch.Tensor | None
    test_out: torch.Tensor | None
    test_err: torch.Tensor | None


class TwoLayerGDLoop:
    """Fused full-batch GD for the two-layer ReLU network of Sec. 5.3, N(x) = sum_j a_j relu(<w_j, x>), both layers
    trained, for B independent members at once: x (B, n, d), y (B, n, k), W (B, m, d), a (B, m, k).

    One step of Eq. (2) on theta = (W, a), with Z = X W^T (B, n, m), H = relu(Z), R = H a - Y:

        L_n(theta_t) = ||R||^2 / (2n)                     (Eq. 1's data term; recorded at every step)
        a_{t+1} = (1 - eta lambda) a_t - (eta/n) H^T R
        W_{t+1} = (1 - eta lambda) W_t - (eta/n) ((R a_t^T) * 1[Z > 0])^T X

    which is ``torch.optim.SGD(lr=eta, weight_decay=lambda)`` on the autograd gradient of Eq. (1) (relu'(0) = 0,
    as in torch), equal to it up to rounding. Four batched matrix products a step (n m (2d + 3k) multiply-adds)
    into preallocated buffers. Under DDP each rank holds a shard of the rows: the gradient sums and the training
    loss are all-reduced (one all-reduce a step), so every rank follows the single-process trajectory.

    Members are stepped in groups of ``group`` (None: all of them on a GPU; on a CPU as many as keep a step's
    numbers within ``CPU_GROUP_BYTES``, one at a time at the paper's sizes), each group through the whole call.
    On a CPU (one process, no DDP) the groups are shared among ``workers`` Python threads (None: torch's intra-op
    thread count at each call, ``torch.get_num_threads()``), each stepping its own members with one intra-op thread:
    parallel across members instead of inside the small matrix products of one member, so T threads do not
    oversubscribe T cores. A member's operations are the same in every schedule, so its iterates are bit for bit
    those of its single run with ``group=1`` (matrix products at the paper's sizes give the same bits on 1 and 2
    intra-op threads).

    Test side: (1/N) sum_i ||N(x_i) - y_i||^2 on the test set costs N m (d + k) multiply-adds, about five steps
    at the paper's defaults, so it is evaluated sparsely (module docstring): at the evaluated steps the state is
    kept, and when a threshold is crossed before the next evaluated step, that block is replayed from the kept
    state on scratch buffers with an evaluation at every step (the same operations, so the same iterates).
    Under DDP the decision to replay is all-reduced, so every rank replays (and all-reduces) the same blocks.

    With ``evaluation.two_layer`` (``data.population=exact``) the test side is the closed-form population loss
    E||N(x) - f*(x)||^2 (theory/two_layer_population.py: arc-cosine kernel, float64), no test set: about m^2 d / 2
    multiply-adds plus m^2 / 2 kernel entries (``_two_layer_eval_cost``), 30-70 steps at the defaults, so s is
    larger (133 there, against 20). Every rank computes it from the full parameters, so it needs no all-reduce.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        width: int,
        lr: float,
        weight_decay: float,
        n_global: int,
        evaluation: PopulationSide,
        max_steps_per_call: int,
        reduce: Reduce = _identity,
        eval_every: int = 0,
        group: int | None = None,
        workers: int | None = None,
    ):
        b, n, d = x.shape  # n: this rank's rows
        k, m = y.shape[2], width
        self.y, self.k, self.width = y, k, m
        self.decay = 1.0 - lr * weight_decay
        self.step_scale = -lr / n_global
        self.n_global = n_global
        self.ev = evaluation
        self.reduce = reduce
        self.distributed = reduce is not _identity
        # the global n, so that every DDP world size evaluates the same steps
        self.every = _every(
            eval_every, evaluation, n_global * m * (2 * d + 3 * k), _two_layer_eval_cost(evaluation, m, d, k)
        )
        if group is None:
            per_member = (2 * n * m + m * (d + k) + n * (d + k)) * x.element_size()
            group = b if x.device.type != "cpu" else max(1, CPU_GROUP_BYTES // per_member)
        self.group = g = int(min(max(1, group), b))
        if workers is not None and int(workers) < 1:
            raise ValueError(f"TwoLayerGDLoop: workers must be >= 1 or None (torch's thread count), got {workers!r}")
        self.workers = None if workers is None else int(workers)
        opts = {"dtype": x.dtype, "device": x.device}
        self.outputs = torch.empty(max_steps_per_call, b, n, k, **opts)  # N(x_i; theta_t) of every step
        self._inputs = (x, y, evaluation, opts)
        self.groups = self._make_groups(range(0, b, g))
        self._shares: dict[int, list[list[_Group]]] = {}  # by thread count: each share on its own buffers

    def _make_groups(self, starts: range) -> list[_Group]:
        """The groups of members starting at ``starts`` (``group`` members each, fewer at the end), on one new
        set of step buffers: groups that share a set are stepped one after another, never at once."""
        x, y, evaluation, opts = self._inputs
        b, n, d = x.shape
        k, m, g = y.shape[2], self.width, self.group
        n_test = 0 if evaluation.x_test is None or evaluation.two_layer is not None else evaluation.x_test.shape[1]
        z_h, g_gz = torch.empty(g, n, m, **opts), torch.empty(g, n, m, **opts)
        acts = [z_h, z_h, g_gz, g_gz]  # z, h, g, gz: in-place relu and mask keep a member's step in L2
        r = torch.empty(g, n, k, **opts)
        grad = torch.empty(g * m * (d + k), **opts)  # DDP: both layers' gradient sums, one all-reduce a step
        # kept state at the last evaluated step, and scratch state for replays
        kept_w, scratch_w = torch.empty(g, m, d, **opts), torch.empty(g, m, d, **opts)
        kept_a, scratch_a = torch.empty(g, m, k, **opts), torch.empty(g, m, k, **opts)
        scratch_out = torch.empty(g, n, k, **opts)
        tests = [torch.empty(g, n_test, *shape, **opts) if n_test else None for shape in ((m,), (k,), (k,))]
        groups = []
        for g0 in starts:
            rows = slice(g0, min(b, g0 + g))
            s = rows.stop - g0

            def cut(t: torch.Tensor | None, rows: slice = rows) -> torch.Tensor | None:
                return None if t is None else t[rows]

            grad_s = grad[: s * m * (d + k)]  # [W part of the s members | a part], each contiguous
            ev = dataclasses.replace(evaluation)
            ev.x_test, ev.y_test, ev.test_labels = cut(ev.x_test), cut(ev.y_test), cut(ev.test_labels)
            ev.train_labels = cut(ev.train_labels)
            groups.append(
                _Group(
                    rows,
                    x[rows],
                    y[rows],
                    ev,
                    *(t[:s] for t in acts),
                    r[:s],
                    grad_s,
                    grad_s[: s * m * d].view(s, m, d),
                    grad_s[s * m * d :].view(s, m, k),
                    kept_w[:s],
                    kept_a[:s],
                    scratch_w[:s],
                    scratch_a[:s],
                    scratch_out[:s],
                    *(None if t is None else t[:s] for t in tests),
                )
            )
        return groups

    def _step(self, gr: _Group, w: torch.Tensor, a: torch.Tensor, out: torch.Tensor) -> None:
        """theta_t -> theta_{t+1} in place for one group; ``out`` receives N(X; theta_t)."""
        z, h, g, gz, r, x = gr.z, gr.h, gr.g, gr.gz, gr.r, gr.x
        torch.bmm(x, w.transpose(1, 2), out=z)
        torch.clamp(z, min=0, out=h)  # relu
        torch.bmm(h, a, out=out)
        torch.sub(out, gr.y, out=r)
        if self.k == 1:
            torch.mul(r, a.transpose(1, 2), out=g)  # the outer product R a^T, elementwise (exact products)
        else:
            torch.bmm(r, a.transpose(1, 2), out=g)
        torch.ops.aten.threshold_backward.grad_input(g, h, 0, grad_input=gz)  # * 1[Z > 0], as autograd's relu
        decay, scale = self.decay, self.step_scale
        if self.distributed:
            torch.bmm(h.transpose(1, 2), r, out=gr.grad_a)
            torch.bmm(gz.transpose(1, 2), x, out=gr.grad_w)
            self.reduce(gr.grad)
            a.mul_(decay).add_(gr.grad_a, alpha=scale)
            w.mul_(decay).add_(gr.grad_w, alpha=scale)
        else:
            a.baddbmm_(h.transpose(1, 2), r, beta=decay, alpha=scale)  # uses H and R of theta_t, before W moves
            w.baddbmm_(gz.transpose(1, 2), x, beta=decay, alpha=scale)

    def _evaluate(self, gr: _Group, w: torch.Tensor, a: torch.Tensor) -> dict[str, torch.Tensor]:
        """Test side of one group's (W, a): {"loss": (G,), "test_acc" or "test_surrogate_acc": (G,)}; with the
        closed form (``ev.two_layer``) the population loss L(W, a) alone, computed in float64 and stored in the
        run's dtype (a float32 record holds it to 6e-8 relative)."""
        if self.ev.two_layer is not None:
            return {"loss": self.ev.two_layer.loss(w, a, gr.rows).to(w.dtype)}
        ev, hid, out, err = gr.ev, gr.test_h, gr.test_out, gr.test_err
        torch.bmm(ev.x_test, w.transpose(1, 2), out=hid)
        hid.clamp_(min=0)
        torch.bmm(hid, a, out=out)
        torch.sub(out, ev.y_test, out=err)
        sq = err.square().sum(dim=2)  # (G, N)
        vals = {"loss": sq.mean(dim=1)}
        if ev.test_labels is not None:
            vals["test_acc"] = (out.argmax(dim=2) == ev.test_labels).to(out.dtype).mean(dim=1)
        elif ev.surrogate_eps is not None:
            vals["test_surrogate_acc"] = (sq <= ev.surrogate_eps).to(out.dtype).mean(dim=1)
        return vals

    def _must_replay(self, prev: dict[str, torch.Tensor], now: dict[str, torch.Tensor]) -> bool:
        crossed = _crossed(prev, now, self.ev)
        if self.distributed:  # every rank must take the same branch: replays all-reduce gradients
            crossed = self.reduce(crossed.to(self.outputs.dtype)) > 0
        return bool(crossed.any())  # a host sync once per evaluated step

    def _replay(self, gr: _Group, i0: int, i1: int, record: Callable[[int, dict[str, torch.Tensor]], None]) -> None:
        """Re-run GD from the state kept at call index i0 and evaluate every iterate strictly before i1."""
        w, a = gr.scratch_w, gr.scratch_a
        w.copy_(gr.kept_w)
        a.copy_(gr.kept_a)
        for i in range(i0 + 1, i1):
            self._step(gr, w, a, gr.scratch_out)
            record(i, self._evaluate(gr, w, a))

    @torch.no_grad()
    def run(self, w: torch.Tensor, a: torch.Tensor, start: int, steps: int, wanted: np.ndarray | None = None) -> Chunk:
        """Advance W (B, m, d) and a (B, m, k) in place by ``steps`` GD steps; records of theta_start...
        ``wanted``: absolute steps whose test side must be evaluated (the loggers' schedule)."""
        dtype, dev, b = w.dtype, w.device, w.shape[0]
        points = eval_points(start, steps, self.every, wanted).tolist()
        records: dict[str, torch.Tensor] = {}
        evaluated = torch.zeros(steps, b, dtype=torch.bool)
        lock = threading.Lock()  # guards the creation of ``records`` entries; the writes are to disjoint columns

        def run_groups(groups: list[_Group]) -> None:
            for gr in groups:
                self._run_group(gr, w[gr.rows], a[gr.rows], steps, points, records, evaluated, (dtype, dev, b), lock)

        workers = self._workers(dev)
        if workers <= 1:
            run_groups(self.groups)
        else:
            _one_thread_each(run_groups, self._shares_for(workers))
        res = self.outputs[:steps] - self.y  # (K, B, n, k)
        train = self.reduce(res.square().sum(dim=(2, 3))) / (2 * self.n_global)
        extras = {}
        if self.ev.train_labels is not None:
            correct = (self.outputs[:steps].argmax(dim=3) == self.ev.train_labels).sum(dim=2)
            extras["train_acc"] = self.reduce(correct.to(dtype)) / self.n_global
        test = records.pop("loss")
        extras.update(records)
        return Chunk(start, train, test, extras, None if bool(evaluated.all()) else evaluated.to(dev))

    def _workers(self, device: torch.device) -> int:
        """Threads that share the member groups in this call: 1 on a GPU, under DDP or with one group; else
        ``workers`` (or torch's intra-op thread count), at most one per group."""
        if device.type != "cpu" or self.distributed or len(self.groups) < 2:
            return 1
        want = torch.get_num_threads() if self.workers is None else self.workers
        return max(1, min(want, len(self.groups)))

    def _shares_for(self, workers: int) -> list[list[_Group]]:
        """The groups cut into ``workers`` contiguous shares, as equal as they divide, each share on its own step
        buffers (the first on those of ``self.groups``); made once per thread count."""
        if workers not in self._shares:
            count, g = len(self.groups), self.group
            cut = [i * count // workers for i in range(workers + 1)]
            first = self.groups[: cut[1]]
            rest = [self._make_groups(range(i * g, j * g, g)) for i, j in zip(cut[1:-1], cut[2:], strict=True)]
            self._shares[workers] = [first, *rest]
        return self._shares[workers]

    def _run_group(
        self,
        gr: _Group,
        w: torch.Tensor,
        a: torch.Tensor,
        steps: int,
        points: list[int],
        records: dict[str, torch.Tensor],
        evaluated: torch.Tensor,
        like: tuple[torch.dtype, torch.device, int],
        lock: threading.Lock,
    ) -> None:
        """One group of members through the whole call; test-side values into the (K, B) ``records``."""
        dtype, dev, b = like
        outs = [o[gr.rows] for o in self.outputs.unbind(0)[:steps]]

        def record(i: int, vals: dict[str, torch.Tensor]) -> None:
            for key, v in vals.items():
                if key not in records:
                    with lock:
                        if key not in records:
                            records[key] = torch.full((steps, b), math.nan, dtype=dtype, device=dev)
                records[key][i, gr.rows] = v
            evaluated[i, gr.rows] = True

        sparse = self.every > 1
        nxt, prev, prev_i = 0, None, 0
        for i in range(steps):
            if nxt < len(points) and i == points[nxt]:
                vals = self._evaluate(gr, w, a)
                if prev is not None and i > prev_i + 1 and self._must_replay(prev, vals):
                    self._replay(gr, prev_i, i, record)
                record(i, vals)
                if sparse:
                    gr.kept_w.copy_(w)
                    gr.kept_a.copy_(a)
                    prev, prev_i = vals, i
                nxt += 1
            self._step(gr, w, a, outs[i])


def _one_thread_each(work: Callable[[list], None], shares: list[list]) -> None:
    """``work(share)`` for every share at once, each in its own thread with one torch intra-op thread (the first in
    the calling thread); torch's thread count is restored afterwards. torch ops release the GIL, so the threads'
    matrix products run in parallel. The first exception of any share is raised after all have ended."""
    errors: list[BaseException] = []

    def guarded(share: list) -> None:
        try:
            torch.set_num_threads(1)  # this thread's own OpenMP/MKL setting (set before its first op)
            work(share)
        except BaseException as e:  # re-raised in the calling thread
            errors.append(e)

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # also the default of threads that start now
    try:
        threads = [threading.Thread(target=guarded, args=(s,), name="gd-members") for s in shares[1:]]
        for t in threads:
            t.start()
        guarded(shares[0])
        for t in threads:
            t.join()
    finally:
        torch.set_num_threads(before)
    if errors:
        raise errors[0]


def _accuracy(out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Top-1 accuracy of logits or one-hot regressions, by torchmetrics (no per-step argument checks: the
    loop fixes the shapes)."""
    return multiclass_accuracy(out, labels, num_classes=out.shape[1], average="micro", validate_args=False)


class AutogradLoop:
    """Steps of a torch optimizer on the Eq. (1) objective (or cross-entropy), losses of theta_t recorded."""

    def __init__(
        self,
        model: nn.Module,
        optimizer,  # Lightning's optimizer (its step runs the precision plugin), or a torch one
        x: torch.Tensor,
        y: torch.Tensor,
        n_global: int,
        evaluation: PopulationSide,
        batch_size: int | None = None,
        batch_generator: torch.Generator | None = None,
        reduce: Reduce = _identity,
        backward: Callable[[torch.Tensor], None] | None = None,
    ):
        self.model, self.opt, self.x, self.y = model, optimizer, x, y
        self.n_global, self.ev, self.reduce = n_global, evaluation, reduce
        self.batch_size = batch_size if batch_size is not None and batch_size < x.shape[0] else None
        self.gen = batch_generator
        self.backward = backward or (lambda loss: loss.backward())
        self.params = [p for p in model.parameters() if p.requires_grad]

    def _loss_sum(self, out: torch.Tensor, y: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Sum over rows: 1/2 ||f - y||^2 (so / n gives Eq. 1's L_n), or cross-entropy."""
        if self.ev.cross_entropy:
            return F.cross_entropy(out, labels, reduction="sum")
        return 0.5 * (out - y).square().sum()

    def run(self, start: int, steps: int) -> Chunk:
        dtype, dev = self.x.dtype, self.x.device
        train = torch.empty(steps, dtype=dtype, device=dev)
        test = torch.empty(steps, dtype=dtype, device=dev)
        train_acc = torch.empty(steps, dtype=dtype, device=dev) if self.ev.train_labels is not None else None
        test_extra: dict[str, list[torch.Tensor]] = {}
        labels = self.ev.train_labels
        for i in range(steps):
            out = self.model(self.x)
            loss = self._loss_sum(out, self.y, labels)
            train[i] = loss.detach()
            if train_acc is not None:
                train_acc[i] = _accuracy(out.detach(), labels) * labels.shape[0]  # a count, summed over ranks
            with torch.no_grad():
                t_loss, extra = self._test(dtype)
            test[i] = t_loss
            for key, val in extra.items():
                test_extra.setdefault(key, []).append(val)
            if self.batch_size is not None:
                idx = torch.randint(0, self.x.shape[0], (self.batch_size,), generator=self.gen).to(dev)
                out = self.model(self.x[idx])
                lab = labels[idx] if labels is not None else None
                loss = self._loss_sum(out, self.y[idx], lab) * (self.x.shape[0] / self.batch_size)
            self.opt.zero_grad(set_to_none=False)
            self.backward(loss / self.n_global)
            if self.reduce is not _identity:
                for p in self.params:
                    self.reduce(p.grad)
            self.opt.step()
        train = self.reduce(train) / self.n_global  # the 1/2 is inside _loss_sum: L_n of Eq. (1)
        extras = {k: torch.stack(v)[:, None] for k, v in test_extra.items()}
        if train_acc is not None:
            extras["train_acc"] = (self.reduce(train_acc) / self.n_global)[:, None]
        return Chunk(start, train[:, None], test[:, None], extras)  # one member: (K, 1)

    def _test(self, dtype) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = self.model(self.ev.x_test)
        extra = {}
        if self.ev.cross_entropy:
            loss = F.cross_entropy(out, self.ev.test_labels)
        else:
            err = (out - self.ev.y_test).square().sum(dim=1)
            loss = err.mean()
            if self.ev.surrogate_eps is not None and self.ev.test_labels is None:
                extra["test_surrogate_acc"] = (err <= self.ev.surrogate_eps).to(dtype).mean()
        if self.ev.test_labels is not None:
            extra["test_acc"] = _accuracy(out, self.ev.test_labels).to(dtype)
        return loss, extra
