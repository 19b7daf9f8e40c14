"""The GD loops for models linear in their parameters (Eq. 2 on theta, B members batched):
``LinearGDLoop`` (parameter space, two BLAS calls a step) and ``RowSpaceGDLoop`` (the row space of Phi, in the
eigenbasis of the step: O(n) a step), with per-member eta and lambda (``decay_and_scale``) and their test-set
and exact population losses (``_linear_population``, ``_test_set_losses``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lightning_grok.gd_loops.records import Chunk, EvalSpec, Reduce, _identity
from lightning_grok.gd_loops.sparse_eval import _every, _sparse_records, eval_points
from lightning_grok.resources import TEST_BLOCK_ELEMENTS

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
        evaluation: EvalSpec,
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
        evaluation: EvalSpec,
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


def _linear_population(thetas: torch.Tensor, ev: EvalSpec, points: torch.Tensor):
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
    ev: EvalSpec,
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
