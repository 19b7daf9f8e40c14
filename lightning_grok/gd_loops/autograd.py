"""``AutogradLoop``: steps of any torch optimizer (gd, sgd with momentum, adamw; full batch or mini-batches) by
autograd, the test side evaluated at every step."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.classification import multiclass_accuracy

from lightning_grok.gd_loops.records import Chunk, EvalSpec, Reduce, _identity


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
        evaluation: EvalSpec,
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
