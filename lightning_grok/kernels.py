"""Training kernels: K optimizer steps per call, every step's losses recorded into preallocated buffers.

Lightning's per-call overhead is paid once per K steps (``trainer.steps_per_call``), so a call of a
kernel is the unit of work of one ``training_step``. Two kernels:

* ``LinearGDKernel``: full-batch GD (Eq. 2) for models linear in their parameters, fused into two
  BLAS calls per step:  R_t = Phi theta_t - Y,  theta_{t+1} = (1 - eta lambda) theta_t - (eta/n) Phi^T R_t.
  This is exactly ``torch.optim.SGD(lr=eta, weight_decay=lambda)`` on the gradient (1/n) Phi^T R_t.
  Losses are evaluated afterwards for the whole block of K iterates at once (BLAS-3).
* ``AutogradKernel``: any model and any torch optimizer (gd, sgd with momentum, adamw), full batch
  or mini-batches, with the losses of theta_t recorded before each update.

Under DDP each rank holds a shard of the training rows; the gradient (a sum over rows) and the training
loss are all-reduced, so every rank follows the single-process trajectory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.classification import multiclass_accuracy

Reduce = Callable[[torch.Tensor], torch.Tensor]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclass
class Chunk:
    """Per-step records of one kernel call, shape (K, B): row i is GD step ``start + i`` (theta before update i),
    column b is ensemble member b (B = 1 for a single run)."""

    start: int
    train_loss: torch.Tensor
    test_loss: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.train_loss.shape[0]

    @property
    def members(self) -> int:
        return self.train_loss.shape[1]


@dataclass
class Evaluation:
    """Population side of a run, on the run's device: a test set, or an exact Sigma = sigma I with theta*."""

    x_test: torch.Tensor | None = None  # inputs (network kernels) or features (linear kernel)
    y_test: torch.Tensor | None = None
    theta_star: torch.Tensor | None = None
    sigma_scale: float | None = None
    test_labels: torch.Tensor | None = None
    train_labels: torch.Tensor | None = None
    surrogate_eps: float | None = None  # regression: fraction of test points with error <= eps (Fig. 5)
    cross_entropy: bool = False

    @property
    def exact(self) -> bool:
        return self.sigma_scale is not None and self.theta_star is not None


class LinearGDKernel:
    """Fused full-batch GD for B independent members at once (B = 1 for a single run), batched over members:
    phi (B, n, m), y (B, n, k), theta (B, m, k). Records of a call have shape (K, B)."""

    def __init__(
        self,
        phi: torch.Tensor,
        y: torch.Tensor,
        lr: float,
        weight_decay: float,
        n_global: int,
        evaluation: Evaluation,
        max_steps_per_call: int,
        reduce: Reduce = _identity,
    ):
        self.phi, self.phi_t, self.y, self.neg_y = phi, phi.transpose(1, 2), y, -y
        self.decay = 1.0 - lr * weight_decay
        self.step_scale = -lr / n_global
        self.n_global = n_global
        self.ev = evaluation
        self.reduce = reduce
        self.distributed = reduce is not _identity
        b, m, k = phi.shape[0], phi.shape[2], y.shape[2]
        opts = {"dtype": phi.dtype, "device": phi.device}
        self.thetas = torch.empty(max_steps_per_call + 1, b, m, k, **opts)
        self.residuals = torch.empty(max_steps_per_call, *y.shape, **opts)
        self.grad = torch.empty(b, m, k, **opts)

    @torch.no_grad()
    def run(self, theta: torch.Tensor, start: int, steps: int) -> Chunk:
        """Advance ``theta`` (B, m, k) in place by ``steps`` GD steps; records belong to theta_start..."""
        thetas, res, phi, phi_t = self.thetas, self.residuals, self.phi, self.phi_t
        thetas[0].copy_(theta)
        ths, rs = thetas.unbind(0), res.unbind(0)  # views made once per call, not twice per step
        neg_y, decay, scale = self.neg_y, self.decay, self.step_scale
        for i in range(steps):
            torch.baddbmm(neg_y, phi, ths[i], out=rs[i])
            if self.distributed:
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
        test, more = _linear_population(block, self.ev)
        extras.update(more)
        return Chunk(start, train, test, extras)


class RowSpaceGDKernel:
    """The same GD (Eq. 2) in the row space of Phi, for n < m. With Phi^T = V R (thin QR, V in R^{m x n})
    theta_t = V c_t + (1 - eta lambda)^t theta_perp, and one GD step is one affine map of c in R^{n x k}:

        c_{t+1} = M c_t + b,   M = (1 - eta lambda) I - (eta/n) R R^T,   b = (eta/n) R Y,

    O(n^2) instead of O(n m) per step: the iterates of ``LinearGDKernel`` up to rounding (~1e-15).
    Coefficients are kept as rows (C = c^T, shape (B, k, n)) because batched row-times-matrix products
    are several times faster on CPUs than batched matrix-times-column ones. Losses, residuals and test
    predictions of a whole call are computed afterwards with one batched matrix product per member.
    Single process only; members batched over the leading dimension.
    """

    def __init__(
        self,
        phi: torch.Tensor,
        y: torch.Tensor,
        lr: float,
        weight_decay: float,
        n_global: int,
        evaluation: Evaluation,
        max_steps_per_call: int,
    ):
        v, r = torch.linalg.qr(phi.transpose(1, 2))  # (B, m, n), (B, n, n)
        n = phi.shape[1]
        self.decay = 1.0 - lr * weight_decay
        eye = torch.eye(n, dtype=phi.dtype, device=phi.device)
        step = lr / n_global
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
        self.coefs = torch.empty(max_steps_per_call + 1, b, k, n, dtype=phi.dtype, device=phi.device)

    def _per_member(self, block: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """block (S, B, k, n) times right (B, n, p) -> (S, B, k, p), as one matrix product per member."""
        s, b, k, n = block.shape
        rows = block.permute(1, 0, 2, 3).reshape(b, s * k, n)
        return torch.bmm(rows, right).reshape(b, s, k, -1).permute(1, 0, 2, 3)

    @torch.no_grad()
    def run(self, theta: torch.Tensor, start: int, steps: int) -> Chunk:
        v, coefs = self.v, self.coefs
        coefs[0] = (v.transpose(1, 2) @ theta).transpose(1, 2)
        perp = theta - v @ coefs[0].transpose(1, 2)  # decays by (1 - eta lambda) per step, untouched by data
        cs, m_t, b_t = coefs.unbind(0), self.m_t, self.b_t
        for i in range(steps):
            torch.baddbmm(b_t, cs[i], m_t, out=cs[i + 1])
        powers = self.decay ** torch.arange(steps, dtype=theta.dtype, device=theta.device)  # (K,)
        theta.copy_(v @ coefs[steps].transpose(1, 2) + self.decay**steps * perp)
        block = coefs[:steps]
        res_t = self._per_member(block, self.r) - self.y_t  # (K, B, k, n): residuals Phi theta_t - Y, transposed
        train = res_t.square().sum(dim=(2, 3)) / (2 * self.n_global)
        perp2 = perp.square().sum(dim=(1, 2))  # (B,)
        extras = {"param_norm2": block.square().sum(dim=(2, 3)) + powers[:, None] ** 2 * perp2}
        ev = self.ev
        if ev.train_labels is not None:
            correct = ((res_t + self.y_t).argmax(dim=2) == ev.train_labels).sum(dim=2)
            extras["train_acc"] = correct.to(theta.dtype) / self.n_global
        if ev.exact:
            row = (block - self.c_star).square().sum(dim=(2, 3))
            cross = (perp * self.star_perp).sum(dim=(1, 2))
            null = powers[:, None] ** 2 * perp2 - 2 * powers[:, None] * cross + self.star_perp.square().sum(dim=(1, 2))
            return Chunk(start, train, ev.sigma_scale * (row + null), extras)
        h = ev.x_test @ perp  # (B, N, k)

        def predict(s: int, e: int) -> torch.Tensor:
            return self._per_member(block[s:e], self.test_v_t).transpose(2, 3) + powers[s:e, None, None, None] * h

        test, more = _test_set_losses(predict, steps, ev)
        extras.update(more)
        return Chunk(start, train, test, extras)


def _linear_population(thetas: torch.Tensor, ev: Evaluation):
    """Population loss of each iterate in ``thetas`` (K, B, m, k) -> (K, B)."""
    if ev.exact:
        return ev.sigma_scale * (thetas - ev.theta_star).square().sum(dim=(2, 3)), {}
    return _test_set_losses(lambda s, e: torch.matmul(ev.x_test, thetas[s:e]), thetas.shape[0], ev)


def _test_set_losses(predict, steps: int, ev: Evaluation, budget: int = 1 << 24):
    """Test loss (and accuracy or surrogate accuracy) of ``steps`` iterates; ``predict(s, e)`` gives the
    predictions (e - s, B, N, k) of iterates s..e-1, evaluated in blocks that keep memory bounded."""
    b, n_test, k = ev.y_test.shape
    block = max(1, budget // (b * n_test * k))
    losses, accs, surrogate = [], [], []
    for s in range(0, steps, block):
        pred = predict(s, min(steps, s + block))  # (S, B, N, k)
        err = (pred - ev.y_test).square().sum(dim=3)  # (S, B, N)
        losses.append(err.mean(dim=2))
        if ev.test_labels is not None:
            accs.append((pred.argmax(dim=3) == ev.test_labels).to(pred.dtype).mean(dim=2))
        elif ev.surrogate_eps is not None:
            surrogate.append((err <= ev.surrogate_eps).to(pred.dtype).mean(dim=2))
    extras = {}
    if accs:
        extras["test_acc"] = torch.cat(accs)
    if surrogate:
        extras["test_surrogate_acc"] = torch.cat(surrogate)
    return torch.cat(losses), extras


def _accuracy(out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Top-1 accuracy of logits or one-hot regressions, by torchmetrics (no per-step argument checks: the
    kernel fixes the shapes)."""
    return multiclass_accuracy(out, labels, num_classes=out.shape[1], average="micro", validate_args=False)


class AutogradKernel:
    """Steps of a torch optimizer on the Eq. (1) objective (or cross-entropy), losses of theta_t recorded."""

    def __init__(
        self,
        model: nn.Module,
        optimizer,  # Lightning's optimizer (its step runs the precision plugin), or a torch one
        x: torch.Tensor,
        y: torch.Tensor,
        n_global: int,
        evaluation: Evaluation,
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
