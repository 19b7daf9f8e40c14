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

Reduce = Callable[[torch.Tensor], torch.Tensor]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclass
class Chunk:
    """Per-step records of one kernel call: entry i belongs to GD step ``start + i`` (theta before update i)."""

    start: int
    train_loss: torch.Tensor
    test_loss: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.train_loss.shape[0]


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
        self.phi, self.y, self.neg_y = phi, y, -y
        self.decay = 1.0 - lr * weight_decay
        self.step_scale = -lr / n_global
        self.n_global = n_global
        self.ev = evaluation
        self.reduce = reduce
        self.distributed = reduce is not _identity
        m, k = phi.shape[1], y.shape[1]
        self.thetas = torch.empty(max_steps_per_call + 1, m, k, dtype=phi.dtype, device=phi.device)
        self.residuals = torch.empty(max_steps_per_call, *y.shape, dtype=phi.dtype, device=phi.device)
        self.grad = torch.empty(m, k, dtype=phi.dtype, device=phi.device)

    @torch.no_grad()
    def run(self, theta: torch.Tensor, start: int, steps: int) -> Chunk:
        thetas, res, phi, phi_t = self.thetas, self.residuals, self.phi, self.phi.T
        thetas[0].copy_(theta)
        for i in range(steps):
            torch.addmm(self.neg_y, phi, thetas[i], out=res[i])
            if self.distributed:
                torch.mm(phi_t, res[i], out=self.grad)
                self.reduce(self.grad)
                torch.add(thetas[i] * self.decay, self.grad, alpha=self.step_scale, out=thetas[i + 1])
            else:
                torch.addmm(thetas[i], phi_t, res[i], beta=self.decay, alpha=self.step_scale, out=thetas[i + 1])
        theta.copy_(thetas[steps])
        block = thetas[:steps]
        train = self.reduce(res[:steps].square().sum(dim=(1, 2))) / (2 * self.n_global)
        extras = {"param_norm2": block.square().sum(dim=(1, 2))}
        if self.ev.train_labels is not None:
            correct = ((res[:steps] + self.y).argmax(dim=2) == self.ev.train_labels).sum(dim=1)
            extras["train_acc"] = self.reduce(correct.to(phi.dtype)) / self.n_global
        test, more = _linear_population(block, self.ev)
        extras.update(more)
        return Chunk(start, train, test, extras)


def _linear_population(thetas: torch.Tensor, ev: Evaluation, budget: int = 1 << 24):
    """Population loss of each iterate in ``thetas`` (K, m, k); test-set predictions in blocks of steps."""
    if ev.exact:
        return ev.sigma_scale * (thetas - ev.theta_star).square().sum(dim=(1, 2)), {}
    phi_test, y_test = ev.x_test, ev.y_test
    per_step = phi_test.shape[0] * y_test.shape[1]
    block = max(1, budget // per_step)
    losses, accs, surrogate = [], [], []
    for s in range(0, thetas.shape[0], block):
        pred = torch.matmul(phi_test, thetas[s : s + block])  # (B, N, k)
        err = (pred - y_test).square().sum(dim=2)  # (B, N)
        losses.append(err.mean(dim=1))
        if ev.test_labels is not None:
            accs.append((pred.argmax(dim=2) == ev.test_labels).to(pred.dtype).mean(dim=1))
        elif ev.surrogate_eps is not None:
            surrogate.append((err <= ev.surrogate_eps).to(pred.dtype).mean(dim=1))
    extras = {}
    if accs:
        extras["test_acc"] = torch.cat(accs)
    if surrogate:
        extras["test_surrogate_acc"] = torch.cat(surrogate)
    return torch.cat(losses), extras


class AutogradKernel:
    """Steps of a torch optimizer on the Eq. (1) objective (or cross-entropy), losses of theta_t recorded."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
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
                train_acc[i] = (out.detach().argmax(dim=1) == labels).sum()
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
        extras = {k: torch.stack(v) for k, v in test_extra.items()}
        if train_acc is not None:
            extras["train_acc"] = self.reduce(train_acc) / self.n_global
        return Chunk(start, train, test, extras)

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
            extra["test_acc"] = (out.argmax(dim=1) == self.ev.test_labels).to(dtype).mean()
        return loss, extra
