"""GrokkingModule: the LightningModule that trains any model family on the paper's objective.

Objective (Eq. 1): L_n(theta; lambda) = (1/2n) sum_i ||N(x_i; theta) - y_i||^2 + (lambda/2) ||theta||^2,
or mean cross-entropy for classification with index targets. Optimizers (``optim.name``):

* ``gd``: full-batch gradient descent, theta <- theta - eta (grad L_n + lambda theta) (Eq. 2);
  ``optim.weight_decay`` is lambda of Eq. (1), coupled into the gradient.
* ``sgd``: the same update with heavy-ball momentum ``optim.momentum`` (and mini-batches if set).
* ``adamw``: AdamW; ``optim.weight_decay`` is decoupled, theta <- (1 - eta lambda) theta - eta * adam_step.

One ``training_step`` runs ``steps_per_call`` optimizer steps (one Lightning epoch holds one such call),
so every time in this framework is a count of optimizer steps. The module owns the step counter
``gd_step`` and puts it in checkpoints; a chunk is committed atomically with respect to SLURM's
requeue signal (which makes Lightning checkpoint from inside a signal handler).
"""

from __future__ import annotations

import math
import signal

import lightning as L
import torch
from omegaconf import DictConfig
from torch import nn

from lightning_grok.data.base import Tensors
from lightning_grok.kernels import AutogradKernel, Chunk, Evaluation, LinearGDKernel
from lightning_grok.seeding import generator

_DEFERRED_SIGNALS = {signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM}


def auto_steps_per_call(model: nn.Module, n: int) -> int:
    """Enough steps that Lightning's per-call cost is small, few enough that the iterate buffer stays ~32 MB."""
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if getattr(model, "linear_in_parameters", False):
        return int(max(64, min(4096, (4 << 20) // max(1, n_params))))
    return 256


class GrokkingModule(L.LightningModule):
    def __init__(self, cfg: DictConfig, model: nn.Module, tensors: Tensors):
        super().__init__()
        self.automatic_optimization = False
        self.cfg = cfg
        self.model = model
        self.tensors = tensors
        self.gd_step = 0  # optimizer steps taken; the time axis of every measurement
        self.max_steps = int(cfg.trainer.max_steps)
        per_call = cfg.trainer.steps_per_call or auto_steps_per_call(model, tensors.n_train)
        self.steps_per_call = int(min(per_call, self.max_steps))
        self.last_chunk: Chunk | None = None
        self.diverged_at: int | None = None
        self.stop_requested = False
        self._kernel = None
        self._batch_gen = generator(cfg.seed, "batches")

    # ---- optimizer ---------------------------------------------------------------------------
    @property
    def uses_linear_kernel(self) -> bool:
        o = self.cfg.optim
        return (
            getattr(self.model, "linear_in_parameters", False)
            and o.name == "gd"
            and (o.batch_size is None or o.batch_size >= self.tensors.n_train)
            and not self.tensors.cross_entropy
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        o = self.cfg.optim
        params = [p for p in self.model.parameters() if p.requires_grad]
        if o.name == "gd":
            return torch.optim.SGD(params, lr=o.lr, momentum=0.0, weight_decay=o.weight_decay)
        if o.name == "sgd":
            return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        return torch.optim.AdamW(params, lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)

    # ---- data on the device, sharded under DDP -------------------------------------------------
    def _world(self) -> tuple[int, int]:
        if self._trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def _reduce_sum(self, x: torch.Tensor) -> torch.Tensor:
        torch.distributed.all_reduce(x, op=torch.distributed.ReduceOp.SUM)
        return x

    def _build_kernel(self) -> None:
        t, dev = self.tensors, self.device
        dtype = next(self.model.parameters()).dtype
        rank, world = self._world()
        rows = slice(rank, None, world)  # rank r trains on rows r, r + W, r + 2W, ...
        x, y = t.x_train[rows].to(dev, dtype), t.y_train[rows].to(dev, dtype)
        reduce = self._reduce_sum if world > 1 else None
        cast = lambda v: None if v is None else v.to(dev, dtype if v.is_floating_point() else v.dtype)  # noqa: E731
        ev = Evaluation(
            y_test=cast(t.y_test),
            theta_star=cast(t.theta_star),
            sigma_scale=t.sigma_scale,
            test_labels=cast(t.test_labels),
            train_labels=None if t.train_labels is None else t.train_labels[rows].to(dev),
            surrogate_eps=None if t.is_classification else float(self.cfg.phases.eps),
            cross_entropy=t.cross_entropy,
        )
        kwargs = {"reduce": reduce} if reduce else {}
        if self.uses_linear_kernel:
            with torch.no_grad():
                phi = self.model.features(x).contiguous()
                ev.x_test = None if t.x_test is None else self.model.features(cast(t.x_test)).contiguous()
            self._kernel = LinearGDKernel(
                phi, y, self.cfg.optim.lr, self.cfg.optim.weight_decay, t.n_train, ev, self.steps_per_call, **kwargs
            )
        else:
            ev.x_test = cast(t.x_test)
            optimizer = self.optimizers().optimizer
            self._kernel = AutogradKernel(
                self.model,
                optimizer,
                x,
                y,
                t.n_train,
                ev,
                self.cfg.optim.batch_size,
                self._batch_gen,
                backward=self.manual_backward,
                **kwargs,
            )

    def on_fit_start(self) -> None:
        self._build_kernel()

    # ---- the training loop -------------------------------------------------------------------
    def on_train_batch_start(self, batch, batch_idx: int) -> int | None:
        if self.gd_step >= self.max_steps or self.stop_requested:
            self.trainer.should_stop = True
            return -1  # skip the rest of this epoch; the fit loop ends on should_stop
        # Lightning saves the requeue checkpoint inside the signal handler: hold signals until the chunk,
        # the step counter and the phase callback's state are all updated (released in on_train_batch_end).
        signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED_SIGNALS)
        return None

    def training_step(self, batch, batch_idx: int) -> None:
        steps = min(self.steps_per_call, self.max_steps - self.gd_step)
        if self.uses_linear_kernel:
            chunk = self._kernel.run(self.model.trainable.data, self.gd_step, steps)
        else:
            chunk = self._kernel.run(self.gd_step, steps)
        self.last_chunk = chunk
        self.gd_step += steps
        last = float(chunk.train_loss[-1]) + float(chunk.test_loss[-1])
        if not math.isfinite(last) or any(not torch.isfinite(p).all() for p in self.model.parameters()):
            bad = torch.nonzero(~torch.isfinite(chunk.train_loss) | ~torch.isfinite(chunk.test_loss))
            self.diverged_at = chunk.start + (int(bad[0]) if len(bad) else len(chunk))
            self.stop_requested = True
        if self.gd_step >= self.max_steps or self.stop_requested:
            self.trainer.should_stop = True

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _DEFERRED_SIGNALS)

    # ---- checkpoints ---------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["grok"] = {
            "gd_step": self.gd_step,
            "diverged_at": self.diverged_at,
            "batch_generator": self._batch_gen.get_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("grok", {})
        self.gd_step = int(state.get("gd_step", 0))
        self.diverged_at = state.get("diverged_at")
        if "batch_generator" in state:
            self._batch_gen.set_state(state["batch_generator"])
