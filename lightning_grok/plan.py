"""RunPlan: what one run will do, decided once from its config, before a tensor exists. Torch- and Lightning-free.

``RunPlan.from_config(cfg)`` says which GD loop trains the run (``GDLoop``), how many members it batches (the
batch of seeds, ``seeds``), how many GD steps one call of the loop runs (K, ``steps_per_call``), the sparse
evaluation interval asked for (s, ``trainer.eval_every``), the steps whose curves are logged (``log_steps``),
whether the paper's exact theory applies (closed-form dynamics and bounds), the sizes every allocation scales
with, and the memory it all needs (``memory``). Every time here is a count of GD (optimizer) steps.

Who reads it: ``config.check_memory`` through ``resources.estimate_memory``; ``experiment.build``, which hands it
to the members (``members.build_member``: the theory of ``theory.problem.linear_problem``), to the module
(``lightning_module.GrokkingModule``: the loop it builds, K, s, the logged steps) and to the phase callback
(``callbacks.phases``: the same logged steps and the stop margin). Nothing else decides these.

The choice of GD loop (``_choose_loop``, the only place):

* full-batch ``gd`` on the squared loss in a ``*-true`` precision (``fused``) of a model linear in its parameters
  (ridge, random features): ``RowSpaceGDLoop`` when the row space is smaller (n < m) and ``trainer.gd_loop`` is
  ``auto`` or ``rowspace``, else ``LinearGDLoop`` (``parameter``). The row-space form needs every training row in
  one process: a data-parallel run (world size > 1) takes the parameter-space loop (``for_world``).
* the same on the two-layer network: ``TwoLayerGDLoop``;
* everything else (sgd, adamw, mini-batches, cross-entropy, mixed precision, the transformer): ``AutogradLoop``,
  one member only: a plan of several seeds without a fused loop is refused here (``__post_init__``, the one
  statement of the seeds rule; config validation builds the plan to apply it).

Measured on the ridge defaults (n = 100, m = 1000, one seed, the GD loops alone with their records, CPU time, one
thread, load 5): 405,000 steps/s for the row-space loop against 25,700 for the parameter-space loop.

``memory(verb)`` mirrors what a run allocates (bytes, by component), so that a run too big for the machine is
refused (exit 2) before a single tensor exists:

* data (``data/regression.py``, ``data/modular.py``): float64 on the CPU, one set per member;
* parameters (``models/*.py``): created in float64, then cast to the ``trainer.precision`` dtype;
* the linear GD loops (``gd_loops``): stacked features of every member, the row-space basis, and the per-call
  buffers of K iterates;
* the autograd and two-layer loops: the hidden activations of the forward and backward passes (networks);
* the theory (``theory/*.py``): float64 copies of the features, SVDs, and the loss curves on a step grid.

Components that exist one member at a time (the modular table while it is split, the theory's SVD workspace) are
counted once; everything else is multiplied by the number of members. The sum of components is the estimate, a
mild over-estimate of the peak: the check is meant to catch runs that need several times the machine, not to
squeeze the last GiB. GPU runs hold the GD loop's buffers in device memory; they are counted against host memory
too (the data and theory live there first), which errs on the side of refusing.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from lightning_grok.theory.grid import HORIZON_EFOLDS, MAX_HORIZON_STEPS, grid_length

if TYPE_CHECKING:
    import numpy as np


class GDLoop(str, enum.Enum):
    """The GD loop that trains a run (``lightning_grok.gd_loops``)."""

    PARAMETER = "parameter"  # LinearGDLoop: Eq. (2) in parameter space, O(n m k) a step
    ROWSPACE = "rowspace"  # RowSpaceGDLoop: the same iterates in the row space of Phi, O(n k) a step (n < m)
    TWO_LAYER = "two_layer"  # TwoLayerGDLoop: both layers of the two-layer ReLU network, hand-written gradients
    AUTOGRAD = "autograd"  # AutogradLoop: any model and torch optimizer, one member

    @property
    def linear(self) -> bool:
        """A loop for models linear in their parameters (phi (B, n, m), theta (B, m, k))."""
        return self in (GDLoop.PARAMETER, GDLoop.ROWSPACE)


# models linear in their parameters, N(x; theta) = phi(x)^T theta: the paper's closed form and bounds apply
LINEAR_FAMILIES = ("ridge", "random_features")

# ---- steps per call ---------------------------------------------------------------------------------------------
# the iterate buffer of one GD-loop call holds about this many numbers (32 MB of float64): large enough that a
# call's fixed costs vanish, small enough to stay in the caches' neighbourhood and to react to signals quickly
ITERATE_BUFFER_FLOATS = 4 << 20
# multiply-adds of one fused two-layer call: about a second on one core, so a signal waits at most that long
TWO_LAYER_CALL_MACS = 1 << 34
# with an automatic steps_per_call the first call runs this many steps and each call doubles the step count up to
# K, so the progress bar and a SIGINT see t1 (often a few hundred steps) when it happens
FIRST_CALL_STEPS = 64


def auto_steps_per_call(floats_per_step: int | None) -> int:
    """GD steps per GD-loop call when ``trainer.steps_per_call`` is 0: enough that Lightning's per-call cost is
    small, few enough that the iterate buffer (``floats_per_step`` numbers a step; None for the autograd
    loop) stays about 32 MB."""
    if floats_per_step is None:
        return 256
    return int(max(64, min(4096, ITERATE_BUFFER_FLOATS // max(1, floats_per_step))))


def auto_two_layer_steps_per_call(members: int, n: int, m: int, d: int, k: int) -> int:
    """Steps per call of the fused two-layer GD loop: about 2^34 multiply-adds a call (about a second on one CPU
    core, so signals are answered quickly; each call also evaluates its first and last step), between 64 and 4096
    steps, the per-step outputs (B n k numbers a step) under ~32 MB. Defaults (n = d = 50, m = 1000): 3335 steps;
    16 seeds: 208."""
    macs = members * n * m * (2 * d + 3 * k)
    per_step = max(1, members * n * k)
    return int(max(64, min(4096, TWO_LAYER_CALL_MACS // max(1, macs), ITERATE_BUFFER_FLOATS // per_step)))


# ---- memory constants (the code that allocates reads the same numbers) -------------------------------------------
F64 = 8  # bytes of a float64 / int64: data, labels and the theory are always float64
FRAMEWORK_BYTES = 512 << 20  # resident size of Python + torch + Lightning + numpy (measured about 400 MiB)
# gd_loops evaluates test predictions in blocks of this many numbers (128 MB of float64)
TEST_BLOCK_ELEMENTS = 1 << 24
# theory/two_layer_population.py computes K(W, W) of the closed-form two-layer population loss in blocks of rows
# of the upper block triangle: KERNEL_ROW_BLOCK rows (the symmetric saving, m (m + b) / 2 entries instead of m^2;
# 1 MB blocks at m = 1000 stay in cache), fewer when members x rows x m would exceed KERNEL_BLOCK_ELEMENTS (32 MB
# of float64 per temporary)
KERNEL_ROW_BLOCK = 128
KERNEL_BLOCK_ELEMENTS = 1 << 22
# lambda_min(Sigma) of random features is estimated by an eigendecomposition of an m x m matrix per run:
# above this width it takes longer than the run's own set-up, so it is skipped (theory/problem.py)
SIGMA_ESTIMATE_MAX_WIDTH = 3000

# what each component scales with, for the refusal message
COMPONENT_KEYS = {
    "framework": "Python, torch and Lightning themselves",
    "training_data": "seeds x data.n_train x input dim, float64",
    "test_data": "seeds x (data.n_test or test pairs) x input dim, float64",
    "sigma_sample": "seeds x data.n_sigma_samples x input dim, float64",
    "modular_table": "data.modulus^2 pairs x 3 data.modulus, float64",
    "parameters": "seeds x model.width x input dim",
    "training_features": "seeds x data.n_train x model.width",
    "test_features": "seeds x data.n_test x model.width",
    "rowspace_basis": "seeds x data.n_train x model.width",
    "iterate_buffers": "trainer.steps_per_call x seeds x model.width (or data.n_train) x outputs",
    "activations": "seeds x (data.n_train + data.n_test) x model.width",
    "theory": "float64 features, SVD and loss curves of the exact dynamics",
    "population_kernel": "seeds x model.width x min(model.width, 128) float64 (two-layer exact population loss)",
}


def transformer_parameters(p: int, n_layers: int, d_model: int) -> int:
    """Parameters of ``models.transformer.ModularTransformer``: token (p + 2) and position (4) embeddings, per block
    attention (4 d^2 + 4 d), MLP (8 d^2 + 5 d) and two LayerNorms (4 d), the final LayerNorm and the readout."""
    d = d_model
    return (p + 2 + 4) * d + n_layers * (12 * d * d + 13 * d) + 2 * d + d * p + p


def itemsize(precision: str) -> int:
    """Bytes per number of the parameters and the GD-loop buffers: 8 for ``64*`` precisions, else 4."""
    return 8 if str(precision).startswith("64") else 4


def _grid_points(lr: float, weight_decay: float) -> int:
    """Length of the step grid of ``theory.exact.ExactDynamics._grid`` (``theory.exact.step_grid``) up to the
    horizon: HORIZON_EFOLDS e-folds of the slowest mode, 1 - eta lambda, capped at MAX_HORIZON_STEPS."""
    decay = lr * weight_decay
    end = MAX_HORIZON_STEPS
    if 0 < decay < 1:
        end = int(min(end, math.ceil(HORIZON_EFOLDS / -math.log1p(-decay)) + 1))
    return grid_length(end)


# ---- the plan ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunPlan:
    """What a run does (module docstring). Sizes: ``n`` training rows, ``n_test`` test rows (0 with a closed-form
    population), ``n_sigma`` rows of the Sigma sample, ``d`` the model's input dimension, ``m`` its feature count
    (width), ``k`` outputs, ``table`` pairs of a modular table (0 for regression)."""

    family: str
    members: int  # B: the batch of seeds (seeds seed..seed+B-1) trained together by one GD loop
    loop: GDLoop  # the GD loop chosen for one process (``for_world`` for data-parallel runs)
    theory: bool  # the paper's closed-form dynamics and bounds apply (``theory.problem.linear_problem``)
    theory_note: str  # why they do not ('' when they do)
    max_steps: int  # trainer.max_steps
    steps_per_call: int  # K: GD steps per call of the loop (one Lightning training_step), at most max_steps
    ramp_up: bool  # automatic K: the calls run 64, 64, 128, ... steps up to K (FIRST_CALL_STEPS)
    eval_every: int  # s asked for: test side every s-th step (0: the loop picks s from its costs, 1: every step)
    log_points: int  # phases.log_points (formerly wandb.log_points): about this many logged steps (``log_steps``)
    stop_margin: float | None = None  # stop stop_margin * t2 steps after t2 once every member has t1 and t2
    n: int = 0
    n_test: int = 0
    n_sigma: int = 0
    d: int = 0
    m: int = 0
    k: int = 1
    table: int = 0
    batch: int | None = None  # mini-batch size (None: full batch)
    itemsize: int = 8  # bytes per number of the parameters and GD-loop buffers
    precision: str = "64-true"  # trainer.precision
    loss: str = "squared"  # or "cross_entropy" (modular tables with index targets)
    closed_form_features: bool = False  # random features, data.population=exact: theory/population.py moments
    two_layer_exact: bool = False  # fused two-layer loop whose test side is the closed-form population loss
    param_count: int = 0  # parameters of one member's model (trained or frozen)
    optimizer: str = "gd"
    grid_points: int = 0  # theory: length of the exact dynamics' step grid
    data_kind: str = "regression"
    population: str = "sampled"
    d_model: int = 0  # transformer: residual width and blocks (activation estimate)
    n_layers: int = 0

    def __post_init__(self) -> None:
        # the seeds rule, stated here only: config validation builds the plan, and so does every module
        if self.members > 1 and not self.fused:
            # imported here: importing the config package validates through this module (config.rules)
            from lightning_grok.config.schema import ConfigError

            raise ConfigError(
                f"invalid value for 'seeds': {self.members} with optim.name={self.optimizer!r}, "
                f"optim.batch_size={self.batch!r}, model.family={self.family!r}, the {self.loss} loss and "
                f"trainer.precision={self.precision!r} (allowed: 1; several seeds are batched by the fused GD loops "
                "only: full-batch optim.name=gd on the squared loss of ridge, random_features or two_layer, in a "
                "*-true trainer.precision)"
            )

    # ---- construction ----------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: Any, members: int | None = None) -> RunPlan:
        """The plan of ``cfg`` (a validated config). ``members``: B in place of ``cfg.seeds``."""
        data, model, optim, trainer = cfg.data, cfg.model, cfg.optim, cfg.trainer
        b = int(cfg.seeds if members is None else members)
        family = str(model.family)
        sizes = _sizes(cfg)
        n, m, d, k = sizes["n"], sizes["m"], sizes["d"], sizes["k"]
        full_batch = optim.batch_size is None or optim.batch_size >= n
        cross_entropy = data.kind == "modular" and data.target == "index"
        mixed = "mixed" in str(trainer.precision)
        theory, note = _theory_applies(family, optim, full_batch, cross_entropy)
        fused = optim.name == "gd" and full_batch and not cross_entropy and not mixed
        loop = _choose_loop(family, fused, gd_loop_option(cfg), n, m)
        max_steps = int(trainer.max_steps)
        per_call = int(trainer.steps_per_call) or _auto_steps(loop, b, n, m, d, k)
        params = _param_count(cfg, family, m, d, k)
        regression_exact = data.kind == "regression" and data.population == "exact"
        return cls(
            family=family,
            members=b,
            loop=loop,
            theory=theory,
            theory_note=note,
            max_steps=max_steps,
            steps_per_call=int(min(per_call, max_steps)),
            ramp_up=not trainer.steps_per_call,
            eval_every=int(trainer.eval_every),
            log_points=int(cfg.phases.log_points),
            stop_margin=None if cfg.phases.stop_margin is None else float(cfg.phases.stop_margin),
            **sizes,
            batch=None if full_batch else int(optim.batch_size),
            itemsize=itemsize(trainer.precision),
            precision=str(trainer.precision),
            loss="cross_entropy" if cross_entropy else "squared",
            closed_form_features=regression_exact and family == "random_features",
            two_layer_exact=regression_exact and loop is GDLoop.TWO_LAYER,
            param_count=params,
            optimizer=str(optim.name),
            grid_points=_grid_points(float(optim.lr), float(optim.weight_decay)) if theory else 0,
            data_kind=str(data.kind),
            population=str(data.population) if data.kind == "regression" else "sampled",
            d_model=int(model.d_model) if family == "transformer" else 0,
            n_layers=int(model.n_layers) if family == "transformer" else 0,
        )

    def for_world(self, world_size: int) -> RunPlan:
        """The plan in a run of ``world_size`` processes: the row-space loop needs every training row in one process,
        so data-parallel runs take the parameter-space loop. K and the logged steps stay those planned, so every
        world size runs the same chunks of GD steps."""
        loop = _choose_loop_for_world(self.loop, world_size)
        return self if loop is self.loop else dataclasses.replace(self, loop=loop)

    def with_members(self, members: int) -> RunPlan:
        """This plan for a GD loop of ``members`` members that keeps each point's K and logged steps (batched sweep
        points, ``lightning_grok.batch``: every point runs its lone run's chunks)."""
        return dataclasses.replace(self, members=int(members))

    # ---- what the run reads ------------------------------------------------------------------------------------
    @cached_property
    def log_steps(self) -> np.ndarray:
        """The steps whose curves are logged and whose test side every GD loop evaluates: 0, 1, 2, ... then
        geometric up to max_steps - 1 (``member_phases.log_schedule``), computed once per plan (numpy is imported
        here, not when a config is validated)."""
        from lightning_grok.member_phases import log_schedule

        steps = log_schedule(self.max_steps, self.log_points)
        steps.setflags(write=False)
        return steps

    @property
    def fused(self) -> bool:
        """A fused GD loop (LinearGDLoop, RowSpaceGDLoop, TwoLayerGDLoop): it batches members and evaluates sparsely."""
        return self.loop is not GDLoop.AUTOGRAD

    @property
    def rowspace(self) -> bool:
        return self.loop is GDLoop.ROWSPACE

    def call_steps(self, gd_step: int) -> int:
        """GD steps of the call that starts at ``gd_step``: K (fewer at the end); with an automatic K the calls
        ramp up, 64, 64, 128, 256, ... steps, so the first transitions show as they happen."""
        steps = min(self.steps_per_call, self.max_steps - gd_step)
        if self.ramp_up:
            steps = min(steps, max(FIRST_CALL_STEPS, gd_step))
        return steps

    # ---- memory -----------------------------------------------------------------------------------------------
    def memory(self, verb: str = "fit") -> dict[str, int]:
        """Bytes the run needs, by component (keys of ``COMPONENT_KEYS``; zero components left out).

        ``verb`` ``"fit"``: a training run (every member, the GD loops); ``"theory"``: what ``lightning-grok
        theory`` builds, member 0's data, model and theory only."""
        theory_only = verb == "theory"
        b = 1 if theory_only else self.members
        n, nt, ns, d, m, k, s = self.n, self.n_test, self.n_sigma, self.d, self.m, self.k, self.itemsize
        out = {"framework": FRAMEWORK_BYTES}
        # data: float64 inputs and targets per member (data/base.py RunData); class labels as int64 (modular)
        per_row = F64 * (d + k + (1 if self.table else 0))
        out["training_data"] = b * per_row * n
        out["test_data"] = b * per_row * nt
        out["sigma_sample"] = b * F64 * ns * d
        if self.table:
            # operation_table and the one-hot encoding: all pairs as float64 before the split, index tensors, eye(p)
            p = k
            out["modular_table"] = F64 * (self.table * (d + k) + 6 * self.table + p * p)
        # parameters: built in float64 (theta and theta_init; or frozen W, b and a, a_init), then cast
        out["parameters"] = b * F64 * self.param_count
        if not self.loop.linear and not theory_only:
            # gradients of the trained tensors and the optimizer's state (momentum; AdamW's two moments); a fused
            # two-layer gd loop keeps a gradient, a kept copy and a scratch copy of both layers
            trained = {"two_layer": m * d + m * k, "transformer": self.param_count}.get(self.family, m * k)
            states = {"gd": 3 if self.family == "two_layer" else 1, "sgd": 2, "adamw": 3}.get(self.optimizer, 3)
            out["parameters"] += b * states * s * trained
        if self.theory:
            out["theory"] = self._theory_bytes(b)
        if theory_only:
            return {key: v for key, v in out.items() if v}
        if self.loop.linear:
            out.update(self._linear_loop_bytes(out))
        else:
            out.update(self._network_loop_bytes(out))
        return {key: v for key, v in out.items() if v}

    def _linear_loop_bytes(self, out: dict[str, int]) -> dict[str, int]:
        """Features, row-space basis and iterate buffers of the linear GD loops (``gd_loops.linear``)."""
        b, n, nt, m, k, s, kk = self.members, self.n, self.n_test, self.m, self.k, self.itemsize, self.steps_per_call
        # features of every member, cast to the parameters' dtype: the per-member list, the stacked copy, and
        # one member's intermediate (the pre-activation of random features); ridge in float64 uses the data
        # tensors themselves as features, so only the stacked copy is new
        copies = b if self.family == "ridge" and s == F64 else 2 * b + 1
        res = {
            "training_features": s * (copies * n * m + 2 * b * n * k),
            "test_features": s * (copies * nt * m + 2 * b * nt * k),
        }
        # test predictions are evaluated in blocks of whole iterates, about TEST_BLOCK_ELEMENTS numbers each:
        # the prediction, its error and the squared error
        per_iterate = b * nt * k
        block = min(kk, max(1, TEST_BLOCK_ELEMENTS // per_iterate)) * per_iterate if nt else 0
        if self.rowspace:
            # thin QR of Phi^T: the basis V (B, m, n) and LAPACK's copy; R, M, R R^T (B, n, n); test set x V. The
            # eigenbasis of M: Q, W^T and diag(s) W^T (B, n, n), the test set in its coordinates; theta and its
            # null-space part kept between calls (B, m, k)
            res["rowspace_basis"] = s * (2 * b * m * n + 6 * b * n * n + 2 * b * m * k)
            res["test_features"] += 2 * s * b * n * nt
            # coefficients (K + 1, B, k, n); the residuals with the reshaped copy and the product they come
            # from; norms and population losses square the block
            res["iterate_buffers"] = s * ((4 * kk + 1) * b * k * n + 3 * block)
        else:
            # iterates (K + 1, B, m, k) and residuals (K, B, n, k), each with the temporaries of their losses
            res["iterate_buffers"] = s * ((3 * kk + 1) * b * m * k + 2 * kk * b * n * k + 3 * block)
        return res

    def _network_loop_bytes(self, out: dict[str, int]) -> dict[str, int]:
        """Activations and per-call records of the autograd and two-layer GD loops."""
        b, n, nt, d, m, k, s, kk = (self.members, self.n, self.n_test, self.d, self.m, self.k, self.itemsize,
                                    self.steps_per_call)  # fmt: skip
        # the inputs cast to the parameters' dtype, and the hidden activations of the full-batch forward
        # (pre-activation and ReLU, kept for backward, and their gradients), a mini-batch forward and the test
        # forward; ridge has no hidden layer
        res = {
            "training_data": out["training_data"] + s * n * (d + k),
            "test_data": out["test_data"] + s * nt * (d + k),
        }
        rows = 4 * (n + (self.batch or 0)) + 2 * nt
        if self.family == "transformer":
            # ``rows`` counts a training example 4 times: here its 4 tokens. Per token and block about 24 numbers
            # per model dimension are kept for backward (q, k, v, attention output, LayerNorms, the 4 d_model MLP,
            # and their gradients); 4 more for the embeddings and the final LayerNorm
            per_row = self.d_model * (24 * self.n_layers + 4)
        else:
            per_row = k if self.family == "ridge" else m
        res["activations"] = b * s * rows * per_row
        # three (K, B) records a call, a 0-d tensor per step and test metric, and (fused two-layer GD loop) the
        # network's outputs on the training set at every step of the call
        res["iterate_buffers"] = kk * b * (3 * s + 512 + (s * n * k if self.family == "two_layer" else 0))
        if self.family == "two_layer" and self.data_kind == "regression" and self.population == "exact":
            # the closed-form evaluation's float64 temporaries: about four blocks of rows of K(W, W) at a time
            # (theory/two_layer_population.py), at most KERNEL_BLOCK_ELEMENTS numbers each for many members
            r = min(m, KERNEL_ROW_BLOCK)
            res["population_kernel"] = 4 * F64 * min(b * r * m, max(KERNEL_BLOCK_ELEMENTS, r * m))
        return res

    def _theory_bytes(self, b: int) -> int:
        """Float64 bytes of ``theory.problem.linear_problem`` and ``theory.run_theory.RunTheory`` for ``b`` members:
        kept per member (features, the SVD's right factor), plus the largest workspace of one member at a time."""
        n, nt, ns, m, k = self.n, self.n_test, self.n_sigma, self.m, self.k
        r = min(n, m)
        # ridge features in float64 are the data tensors themselves (numpy views, no copy)
        shared = self.family == "ridge" and self.itemsize == F64
        kept = (0 if shared else n * m + nt * m) + m * r + m * k + ((r + 2) ** 2 if nt else 0)
        # workspaces of the steps, one after another: an SVD of Phi (LAPACK's copy, U and V^T); the test-set
        # quadratic form (Phi_test V, residuals); the loss curves on the step grid (residuals (T, r, k) and
        # squares); lambda_min(Sigma) (features of the Sigma sample, the m x m second moment and eigvalsh's copy);
        # the realizing teacher on a finite table (lstsq on stacked features and targets, with its copy)
        phases = [n * m + n * r + r * m, nt * (r + 2 * k)]
        phases.append(2 * self.grid_points * r * k)
        if self.table or (ns and m <= SIGMA_ESTIMATE_MAX_WIDTH):
            phases.append(ns * m + 2 * m * m)
        if self.table:
            phases.append(2 * self.table * (m + k))
        return F64 * (b * kept + max(phases))


def gd_loop_option(cfg: Any) -> str:
    """``trainer.gd_loop`` (formerly ``trainer.kernel``): auto | parameter | rowspace. The one place the key is read."""
    return str(cfg.trainer.gd_loop)


def _choose_loop(family: str, fused: bool, option: str, n: int, m: int) -> GDLoop:
    """The GD loop of a run in one process (module docstring): the only place that chooses."""
    if not fused or family not in (*LINEAR_FAMILIES, "two_layer"):
        return GDLoop.AUTOGRAD
    if family == "two_layer":
        return GDLoop.TWO_LAYER
    return GDLoop.ROWSPACE if option != "parameter" and n < m else GDLoop.PARAMETER


def _choose_loop_for_world(loop: GDLoop, world_size: int) -> GDLoop:
    """The row-space loop needs all training rows in one process: under DDP the parameter-space loop runs."""
    return GDLoop.PARAMETER if loop is GDLoop.ROWSPACE and world_size > 1 else loop


def _theory_applies(family: str, optim: Any, full_batch: bool, cross_entropy: bool) -> tuple[bool, str]:
    """Whether the paper's closed form and bounds apply, else why not."""
    if family not in LINEAR_FAMILIES:
        return False, "the model is not linear in its parameters: no closed form or bound applies"
    if optim.name != "gd" or not full_batch:
        return False, f"optim.name={optim.name} (mini-batch={optim.batch_size}): the theory covers full-batch GD"
    if cross_entropy:
        return False, "cross-entropy objective: the theory covers the squared loss"
    return True, ""


def _auto_steps(loop: GDLoop, b: int, n: int, m: int, d: int, k: int) -> int:
    """K when ``trainer.steps_per_call`` is 0: the iterate buffer of the linear loops (B (n or m) k numbers a step)
    about 32 MB; about a second of multiply-adds a call for the two-layer loop; 256 for the autograd loop."""
    if loop is GDLoop.TWO_LAYER:
        return auto_two_layer_steps_per_call(b, n, m, d, k)
    if loop.linear:
        return auto_steps_per_call(b * (n if loop is GDLoop.ROWSPACE else m) * k)
    return auto_steps_per_call(None)


def _sizes(cfg: Any) -> dict[str, int]:
    """n, n_test, n_sigma, d, m, k and the modular table size of ``cfg`` (as data/ and models/ allocate them)."""
    data, model = cfg.data, cfg.model
    family = model.family
    table = 0
    if data.kind == "modular":
        p = int(data.modulus)
        table = p * (p - 1) if data.operation == "div" else p * p
        n = int(round(data.train_fraction * table))
        n_test = table - n
        n_sigma = n_test  # x_sigma is a copy of the held-out inputs
        d, k = 2 * p, p
        m = d if family == "ridge" else int(model.width)
    else:
        d = int(model.width) if family == "ridge" else int(data.input_dim if data.input_dim is not None else 100)
        n, k, m = int(data.n_train), 1, int(model.width)
        n_test = int(data.n_test) if data.population == "sampled" else 0
        n_sigma = 0 if family == "ridge" else int(data.n_sigma_samples)
    return {"n": n, "n_test": n_test, "n_sigma": n_sigma, "d": d, "m": m, "k": k, "table": table}


def _param_count(cfg: Any, family: str, m: int, d: int, k: int) -> int:
    """Parameters of one member as built in float64 (theta and theta_init; or frozen W, b and a, a_init)."""
    if family == "ridge":
        return 2 * m * k
    if family == "random_features":
        return m * d + m + 2 * m * k
    if family == "transformer":
        return transformer_parameters(k, int(cfg.model.n_layers), int(cfg.model.d_model))
    return m * d + m * k
