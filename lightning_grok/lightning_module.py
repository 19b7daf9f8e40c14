"""GrokkingModule: the LightningModule that trains any model family on the paper's objective.

Objective (Eq. 1): L_n(theta; lambda) = (1/2n) sum_i ||N(x_i; theta) - y_i||^2 + (lambda/2) ||theta||^2,
or mean cross-entropy for classification with index targets. Optimizers (``optim.name``):

* ``gd``: full-batch gradient descent, theta <- theta - eta (grad L_n + lambda theta) (Eq. 2);
  ``optim.weight_decay`` is lambda of Eq. (1), coupled into the gradient.
* ``sgd``: the same update with heavy-ball momentum ``optim.momentum`` (and mini-batches if set).
* ``adamw``: AdamW; ``optim.weight_decay`` is decoupled, theta <- (1 - eta lambda) theta - eta * adam_step.

One ``training_step`` runs ``steps_per_call`` optimizer steps (one Lightning epoch holds one such call),
so every time in this framework is a count of optimizer steps. The module owns the step counter
``gd_step`` and the divergence check (``diverged_at``) and puts them in checkpoints; it returns each call's
per-step records to the callbacks (``training_step``'s output ``{"chunk": Chunk}``) and never stops the run
itself: ``callbacks.control.RunControl`` is the one place that does, between chunks, by the rule of
``run_end`` (a signal, divergence, the transitions done, ``trainer.max_steps``). A Trainer that drives this
module needs that callback (``experiment.make_trainer``'s callbacks hold it).

The autograd path steps through Lightning's optimizer (``self.optimizers()``), so the precision plugin
applies: with ``16-mixed`` the GradScaler scales the loss, unscales the gradients, skips steps with inf/NaN
gradients and updates its scale. The fused GD loops do their own arithmetic in the parameters' dtype, so they
serve the ``*-true`` precisions; mixed precision trains on the autograd path.

GD loops (the gd_loops package): the run's ``plan.RunPlan`` chooses the loop (``plan.loop``), K (``steps_per_call``),
s (``eval_every``) and the logged steps (``log_steps``); the module builds what the plan says. Full-batch ``gd`` on the
squared loss runs a fused GD loop, the linear one (row-space or parameter-space) for models linear in their
parameters, ``TwoLayerGDLoop`` for the two-layer network; everything else (sgd, adamw, mini-batches,
cross-entropy, mixed precision) runs the autograd loop, one member only. The linear GD loops train on the features
Phi of the members' theory (``theory.problem.LinearProblem``: one Phi for training and theory). The fused GD loops
evaluate a test-set population loss sparsely, every s-th step (``trainer.eval_every``, 0 = automatic), with t1 and
t2 still exact to the step (gd_loops.sparse_eval).
"""

from __future__ import annotations

import dataclasses

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from lightning_grok.data.base import RunData
from lightning_grok.gd_loops import (
    AutogradLoop,
    Chunk,
    EvalSpec,
    LinearGDLoop,
    RowSpaceGDLoop,
    TwoLayerGDLoop,
)
from lightning_grok.plan import (  # noqa: F401 - auto_two_layer_steps_per_call: re-exported (benchmarks)
    GDLoop,
    RunPlan,
    auto_two_layer_steps_per_call,
)
from lightning_grok.rundir import fingerprint
from lightning_grok.seeding import generator
from lightning_grok.theory.exact import LinearProblem
from lightning_grok.theory.two_layer_population import TwoLayerPopulation

# A run diverges when its training loss becomes non-finite, or exceeds both DIVERGENCE_GROWTH times its
# minimum so far and its value at step 0: a blow-up, not the rounding noise of a loss near 1e-30.
DIVERGENCE_GROWTH = 1e6


class GrokkingModule(L.LightningModule):
    """Trains one run, or B independent runs (``seeds=B``, full-batch ``gd``) batched in one fused GD loop.

    ``models[0]`` is ``self.model``; further ensemble members live in ``self.ensemble`` (their own data,
    initialization and teacher), so a single run's checkpoint keys stay ``model.*``.
    """

    def __init__(
        self,
        cfg: DictConfig,
        models: list[nn.Module],
        tensors: list[RunData],
        problems: list[LinearProblem | None] | None = None,
        member_optim: tuple[list[float], list[float]] | None = None,
        plan: RunPlan | None = None,
    ):
        """``problems``: per member, its ``theory.problem.LinearProblem`` (None where no closed form applies). The
        linear GD loops train on their features Phi and measure their test side (the test set's features, or the
        closed-form population rows of random features with ``data.population=exact``), so training and theory
        share one Phi. ``member_optim``: (eta per member, lambda per member) for the linear GD loops, in place of
        ``cfg.optim``'s lr and weight_decay (batched sweep points, ``lightning_grok.batch``). ``plan``: the run's
        plan (``RunPlan.from_config(cfg)`` for ``len(models)`` members when None)."""
        super().__init__()
        self.plan = plan or RunPlan.from_config(cfg, members=len(models))
        if self.plan.members != len(models):
            raise ValueError(f"GrokkingModule: {len(models)} models for a plan of {self.plan.members} members")
        self.problems = problems
        self.member_optim = member_optim
        self.automatic_optimization = False
        self.cfg = cfg
        self.model = models[0]
        self.ensemble = nn.ModuleList(models[1:])
        self.tensors = tensors
        self._check_plan()
        self.gd_step = 0  # optimizer steps taken; the time axis of every measurement
        self.diverged_at: int | None = None
        self.loss_min: torch.Tensor | None = None  # (B,) smallest training loss so far, per member
        self.loss_start: torch.Tensor | None = None  # (B,) training loss at step 0
        self.config_fingerprint = fingerprint(OmegaConf.to_container(cfg, resolve=True))
        self._loop = None
        self._run_call = None  # the call of the plan's GD loop on the members' parameters (``_build_loop``)
        self._batch_gen = generator(cfg.seed, "batches")

    @property
    def members(self) -> list[nn.Module]:
        return [self.model, *self.ensemble]

    # ---- what the plan says (read, never re-decided) -----------------------------------------------------------
    @property
    def max_steps(self) -> int:
        return self.plan.max_steps

    @property
    def steps_per_call(self) -> int:
        """K: GD steps per call of the loop (``RunPlan.call_steps`` gives each call's)."""
        return self.plan.steps_per_call

    @property
    def log_steps(self) -> np.ndarray:
        """The logged steps: the phase callback logs their curves, every GD loop evaluates their test side."""
        return self.plan.log_steps

    @property
    def eval_every(self) -> int:
        """s of sparse evaluation asked for (0 = automatic, 1 = every step)."""
        return self.plan.eval_every

    @eval_every.setter
    def eval_every(self, every: int) -> None:
        # before the loop is built (benchmarks and tests compare s): a new plan, the loop reads it when built
        self.plan = dataclasses.replace(self.plan, eval_every=int(every))

    def _check_plan(self) -> None:
        """The plan's sizes are those of the tensors and models the loop will get (n rows, m features)."""
        n, plan = self.tensors[0].n_train, self.plan
        m = None
        if plan.loop.linear:
            m = self.model.trainable.shape[0]
        elif plan.loop is GDLoop.TWO_LAYER:
            m = self.model.weight.shape[0]
        if n != plan.n or (m is not None and m != plan.m):
            raise ValueError(f"GrokkingModule: data and model (n={n}, m={m}) differ from the plan's (n={plan.n}, "
                             f"m={plan.m})")  # fmt: skip

    @property
    def rowspace(self) -> bool:
        """The row-space GD loop (``plan.GDLoop.ROWSPACE``): O(n) a step instead of O(n m) when n < m."""
        return self.plan.rowspace

    @property
    def uses_linear_loop(self) -> bool:
        return self.plan.loop.linear

    @property
    def uses_two_layer_loop(self) -> bool:
        return self.plan.loop is GDLoop.TWO_LAYER

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

    def _build_loop(self) -> None:
        """The GD loop the plan says (``plan.loop``, in this run's world size), on the module's device."""
        rank, world = self._world()
        self.plan = self.plan.for_world(world)
        first = self.tensors[0]
        ev = EvalSpec(
            sigma_scale=first.sigma_scale,
            surrogate_eps=None if first.is_classification else float(self.cfg.phases.eps),
            cross_entropy=first.cross_entropy,
            c=float(self.cfg.phases.c),
            tau=float(self.cfg.phases.acc_threshold) if first.is_classification else None,
        )
        build, run_call = {
            GDLoop.PARAMETER: (self._linear_loop, self._linear_call),
            GDLoop.ROWSPACE: (self._linear_loop, self._linear_call),
            GDLoop.TWO_LAYER: (self._two_layer_loop, self._two_layer_call),
            GDLoop.AUTOGRAD: (self._autograd_loop, self._autograd_call),
        }[self.plan.loop]
        self._loop = build(ev, slice(rank, None, world), {"reduce": self._reduce_sum} if world > 1 else {})
        self._run_call = run_call

    def _cast(self, v: torch.Tensor | None) -> torch.Tensor | None:
        """``v`` on the module's device; floating point in the parameters' dtype."""
        if v is None:
            return None
        return v.to(self.device, next(self.model.parameters()).dtype if v.is_floating_point() else v.dtype)

    def _stacked(self, get) -> torch.Tensor | None:
        """(B, ...) stack of ``get(t)`` over the members' tensors (cast), or None."""
        vals = [get(t) for t in self.tensors]
        return None if vals[0] is None else torch.stack([self._cast(v) for v in vals])

    def _labels(self, ev: EvalSpec, rows: slice) -> None:
        ev.test_labels = self._stacked(lambda t: t.test_labels)
        ev.train_labels = self._stacked(lambda t: None if t.train_labels is None else t.train_labels[rows])

    def _two_layer_loop(self, ev: EvalSpec, rows: slice, reduce: dict) -> TwoLayerGDLoop:
        first = self.tensors[0]
        if self.plan.two_layer_exact:
            # the closed-form population loss E||N(x) - f*(x)||^2 (arc-cosine kernel, float64): t2 without
            # sampling error. No test points, so no surrogate accuracy (a fraction of test points, Fig. 5)
            d, k = self.model.weight.shape[1], self.model.a.shape[1]
            teachers = [t.teacher for t in self.tensors]
            ev.two_layer = TwoLayerPopulation.from_teachers(
                teachers, self.cfg.data.input_dist, d, k, device=self.device
            )
            ev.surrogate_eps = None
        else:
            ev.x_test, ev.y_test = self._stacked(lambda t: t.x_test), self._stacked(lambda t: t.y_test)
        self._labels(ev, rows)
        x, y = self._stacked(lambda t: t.x_train[rows]), self._stacked(lambda t: t.y_train[rows])
        lr, wd = self.cfg.optim.lr, self.cfg.optim.weight_decay
        width = self.model.weight.shape[0]
        return TwoLayerGDLoop(
            x.contiguous(), y, width, lr, wd, first.n_train, ev, self.steps_per_call, **reduce,
            eval_every=self.eval_every,
        )  # fmt: skip

    def _linear_loop(self, ev: EvalSpec, rows: slice, reduce: dict) -> LinearGDLoop | RowSpaceGDLoop:
        """The members' Phi and Y (their ``LinearProblem``: the very numbers the theory uses), their test side."""
        problems = self.problems
        if problems is None or any(p is None for p in problems):
            raise ValueError("GrokkingModule: the linear GD loops need every member's LinearProblem (problems=...)")

        def stacked(get) -> torch.Tensor | None:
            vals = [get(p) for p in problems]
            return None if vals[0] is None else torch.stack([self._cast(torch.from_numpy(v)) for v in vals])

        with torch.no_grad():
            phi, y = stacked(lambda p: p.phi[rows]), stacked(lambda p: p.y[rows])
            # the test set's features, or (random features, data.population=exact) rows whose mean squared error is
            # the population loss: t2 without sampling error. The rows are no points of input space, so the
            # surrogate accuracy (a fraction of test points, Fig. 5) is not defined on them
            ev.x_test, ev.y_test = stacked(lambda p: p.phi_test), stacked(lambda p: p.y_test)
        if self.plan.closed_form_features:
            ev.surrogate_eps = None
        ev.theta_star = self._stacked(lambda t: t.theta_star)
        self._labels(ev, rows)
        lr, wd = self.member_optim or (self.cfg.optim.lr, self.cfg.optim.weight_decay)
        if self.plan.loop is GDLoop.ROWSPACE:  # all training rows in one process (``RunPlan.for_world``)
            return RowSpaceGDLoop(
                phi.contiguous(), y, lr, wd, self.tensors[0].n_train, ev, self.steps_per_call,
                eval_every=self.eval_every,
            )  # fmt: skip
        return LinearGDLoop(
            phi.contiguous(), y, lr, wd, self.tensors[0].n_train, ev, self.steps_per_call, **reduce,
            eval_every=self.eval_every,
        )  # fmt: skip

    def _autograd_loop(self, ev: EvalSpec, rows: slice, reduce: dict) -> AutogradLoop:
        first, cast = self.tensors[0], self._cast
        ev.x_test, ev.y_test, ev.test_labels = cast(first.x_test), cast(first.y_test), cast(first.test_labels)
        ev.train_labels = None if first.train_labels is None else first.train_labels[rows].to(self.device)
        return AutogradLoop(
            self.model,
            self.optimizers(),  # Lightning's optimizer: its step runs the precision plugin (GradScaler)
            cast(first.x_train[rows]),
            cast(first.y_train[rows]),
            first.n_train,
            ev,
            self.cfg.optim.batch_size,
            self._batch_gen,
            backward=self.manual_backward,
            **reduce,
        )

    def on_fit_start(self) -> None:
        self._build_loop()

    # ---- the training loop -------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> dict[str, Chunk]:
        """One call of the plan's GD loop: ``plan.call_steps(gd_step)`` GD steps. Returns their per-step records as
        ``{"chunk": Chunk}`` (Lightning hands it to the callbacks' ``on_train_batch_end`` as ``outputs``)."""
        steps = self.plan.call_steps(self.gd_step)
        if steps <= 0:
            raise RuntimeError(
                f"GrokkingModule: trainer.max_steps={self.max_steps} reached at GD step {self.gd_step} but the Trainer "
                "went on: add callbacks.control.RunControl to its callbacks (it ends runs; experiment.make_trainer)"
            )
        chunk = self.run_call(steps)
        self.gd_step += steps
        self._check_divergence(chunk)
        return {"chunk": chunk}

    def run_call(self, steps: int) -> Chunk:
        """``steps`` GD steps of the built loop from ``gd_step`` on every member's parameters, their per-step records;
        the step counter and the divergence check are the caller's (``training_step``, ``batch``)."""
        return self._run_call(steps)

    # One function per kind of loop (``_build_loop`` picks it from the plan). The models' parameters stay the state
    # between calls (checkpoints, resume): the members' are stacked for the loop and copied back after it.
    def _linear_call(self, steps: int) -> Chunk:
        theta = torch.stack([m.trainable.data for m in self.members])
        chunk = self._loop.run(theta, self.gd_step, steps, self.log_steps)
        for m, th in zip(self.members, theta, strict=True):
            m.trainable.data.copy_(th)
        return chunk

    def _two_layer_call(self, steps: int) -> Chunk:
        w = torch.stack([m.weight.data for m in self.members])
        a = torch.stack([m.a.data for m in self.members])
        chunk = self._loop.run(w, a, self.gd_step, steps, self.log_steps)
        for m, wi, ai in zip(self.members, w, a, strict=True):
            m.weight.data.copy_(wi)
            m.a.data.copy_(ai)
        return chunk

    def _autograd_call(self, steps: int) -> Chunk:
        return self._loop.run(self.gd_step, steps)

    def _check_divergence(self, chunk: Chunk) -> None:
        """Sets ``diverged_at`` to the first step whose loss is non-finite or has blown up (DIVERGENCE_GROWTH)."""
        loss = chunk.train_loss  # (K, B)
        if self.loss_min is None:
            self.loss_min, self.loss_start = loss[0].clone(), loss[0].clone()
        self.loss_min, self.loss_start = self.loss_min.to(loss), self.loss_start.to(loss)  # restored on the CPU
        running_min = torch.minimum(torch.cummin(loss, dim=0).values, self.loss_min)
        test_bad = ~torch.isfinite(chunk.test_loss)
        if chunk.evaluated is not None:  # sparse evaluation: NaN marks what was not evaluated
            test_bad &= chunk.evaluated
        bad = ~torch.isfinite(loss) | test_bad
        bad |= (loss > DIVERGENCE_GROWTH * running_min) & (loss > self.loss_start)
        self.loss_min = torch.where(torch.isfinite(running_min[-1]), running_min[-1], self.loss_min)
        rows = torch.nonzero(bad.any(dim=1))  # one host sync per call, not per step
        if len(rows):
            self.diverged_at = chunk.start + int(rows[0])
        elif any(not torch.isfinite(p).all() for p in self.parameters()):
            self.diverged_at = chunk.start + len(chunk)

    # ---- checkpoints ---------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["grok"] = {
            "gd_step": self.gd_step,
            "diverged_at": self.diverged_at,
            "loss_min": self.loss_min,
            "loss_start": self.loss_start,
            "batch_generator": self._batch_gen.get_state(),
            "config_fingerprint": self.config_fingerprint,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("grok", {})
        self.gd_step = int(state.get("gd_step", 0))
        self.diverged_at = state.get("diverged_at")
        self.loss_min, self.loss_start = state.get("loss_min"), state.get("loss_start")
        if "batch_generator" in state:
            self._batch_gen.set_state(state["batch_generator"])
