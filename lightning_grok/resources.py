"""The memory a run needs, estimated from its config alone, and the memory the machine has.

``estimate_memory(cfg)`` mirrors what a run allocates (in bytes, by component), so that a run too big for
the machine is refused (exit 2) before a single tensor exists, instead of dying in the allocator minutes
later. It imports neither torch nor Lightning: ``lightning_grok.config`` calls it while validating.

The sizes follow the code that allocates them:

* data (``data/regression.py``, ``data/modular.py``): float64 on the CPU, one set per ensemble member;
* parameters (``models/*.py``): created in float64, then cast to the ``trainer.precision`` dtype;
* the linear GD loops (``gd_loops.py``): stacked features of every member, the row-space basis, and the
  per-call buffers of K = ``trainer.steps_per_call`` iterates (``auto_steps_per_call`` when 0);
* the autograd loop: the hidden activations of the forward and backward passes (networks);
* the theory (``theory/*.py``): float64 copies of the features, SVDs, and the loss curves on a step grid.

Components that exist one member at a time (the modular table while it is split, the theory's SVD
workspace) are counted once; everything else is multiplied by the number of members (``seeds``). The sum
of components is the estimate, a mild over-estimate of the peak: the check is meant to catch runs that
need several times the machine, not to squeeze the last GiB. GPU runs hold the GD loop's buffers in device
memory; they are counted against host memory too (the data and theory live there first), which errs on
the side of refusing.
"""

from __future__ import annotations

import math
import os
from typing import Any

from lightning_grok.theory.grid import HORIZON_EFOLDS, MAX_HORIZON_STEPS, grid_length

F64 = 8  # bytes of a float64 / int64: data, labels and the theory are always float64
FRAMEWORK_BYTES = 512 << 20  # resident size of Python + torch + Lightning + numpy (measured about 400 MiB)
# gd_loops._test_set_losses evaluates test predictions in blocks of this many numbers (128 MB of float64)
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

# the iterate buffer of one GD-loop call holds about this many numbers (32 MB of float64): large enough that a
# call's fixed costs vanish, small enough to stay in the caches' neighbourhood and to react to signals quickly
ITERATE_BUFFER_FLOATS = 4 << 20
# multiply-adds of one fused two-layer call: about a second on one core, so a signal waits at most that long
TWO_LAYER_CALL_MACS = 1 << 34

MEMORY_ENV = "LG_MEMORY_AVAILABLE"  # bytes; overrides the machine's figure (tests, or a shared node)

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


def run_shape(cfg: Any, members: int | None = None) -> dict[str, Any]:
    """The sizes a run allocates by: members B, training rows n, test rows N, Sigma rows, input dim d,
    feature count m, outputs k, table size, whether the fused linear GD loop (row-space form) runs, whether
    the theory is computed, and K, the GD steps per GD-loop call."""
    data, model, optim, trainer = cfg.data, cfg.model, cfg.optim, cfg.trainer
    b = int(cfg.seeds if members is None else members)
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
    full_batch = optim.batch_size is None or optim.batch_size >= n
    cross_entropy = data.kind == "modular" and data.target == "index"
    theory = family != "two_layer" and optim.name == "gd" and full_batch and not cross_entropy
    linear_loop = theory and "mixed" not in str(trainer.precision)
    rowspace = linear_loop and trainer.gd_loop != "parameter" and n < m
    floats = b * (n if rowspace else m) * k if linear_loop else None
    per_call = int(trainer.steps_per_call) or auto_steps_per_call(floats)
    return {
        "members": b,
        "n": n,
        "n_test": n_test,
        "n_sigma": n_sigma,
        "d": d,
        "m": m,
        "k": k,
        "table": table,
        "theory": theory,
        "linear_loop": linear_loop,
        "rowspace": rowspace,
        "steps_per_call": min(per_call, int(trainer.max_steps)),
        "batch": None if full_batch else int(optim.batch_size),
    }


def estimate_memory(cfg: Any, *, verb: str = "fit") -> dict[str, int]:
    """Bytes a run of ``cfg`` needs, by component (keys of ``COMPONENT_KEYS``; zero components left out).

    ``verb`` ``"fit"``: a training run (every member, the GD loops); ``"theory"``: what ``lightning-grok
    theory`` builds, member 0's data, model and theory only.
    """
    theory_only = verb == "theory"
    sh = run_shape(cfg, members=1 if theory_only else None)
    b, n, nt, ns, d, m, k = (sh[x] for x in ("members", "n", "n_test", "n_sigma", "d", "m", "k"))
    s = itemsize(cfg.trainer.precision)
    family = cfg.model.family
    out = {"framework": FRAMEWORK_BYTES}

    # data: float64 inputs and targets per member (data/base.py RunData); class labels as int64 (modular)
    per_row = F64 * (d + k + (1 if sh["table"] else 0))
    out["training_data"] = b * per_row * n
    out["test_data"] = b * per_row * nt
    out["sigma_sample"] = b * F64 * ns * d
    if sh["table"]:
        # operation_table and the one-hot encoding: all pairs as float64 before the split, index tensors, eye(p)
        p = k
        out["modular_table"] = F64 * (sh["table"] * (d + k) + 6 * sh["table"] + p * p)

    # parameters: built in float64 (theta and theta_init; or frozen W, b and a, a_init), then cast
    if family == "ridge":
        params = 2 * m * k
    elif family == "random_features":
        params = m * d + m + 2 * m * k
    elif family == "transformer":
        params = transformer_parameters(k, int(cfg.model.n_layers), int(cfg.model.d_model))
    else:
        params = m * d + m * k
    out["parameters"] = b * F64 * params
    if not sh["linear_loop"] and not theory_only:
        # gradients of the trained tensors and the optimizer's state (momentum; AdamW's two moments); a fused
        # two-layer gd loop keeps a gradient, a kept copy and a scratch copy of both layers
        trained = {"two_layer": m * d + m * k, "transformer": params}.get(family, m * k)
        states = {"gd": 3 if family == "two_layer" else 1, "sgd": 2, "adamw": 3}.get(cfg.optim.name, 3)
        out["parameters"] += b * states * s * trained

    if sh["theory"]:
        out["theory"] = _theory_bytes(cfg, sh)

    if theory_only:
        return {key: v for key, v in out.items() if v}

    kk = sh["steps_per_call"]
    if sh["linear_loop"]:
        # features of every member, cast to the parameters' dtype: the per-member list, the stacked copy, and
        # one member's intermediate (the pre-activation of random features); ridge in float64 uses the data
        # tensors themselves as features, so only the stacked copy is new
        copies = b if family == "ridge" and s == F64 else 2 * b + 1
        out["training_features"] = s * (copies * n * m + 2 * b * n * k)
        out["test_features"] = s * (copies * nt * m + 2 * b * nt * k)
        # test predictions are evaluated in blocks of whole iterates, about TEST_BLOCK_ELEMENTS numbers each:
        # the prediction, its error and the squared error
        per_iterate = b * nt * k
        block = min(kk, max(1, TEST_BLOCK_ELEMENTS // per_iterate)) * per_iterate if nt else 0
        if sh["rowspace"]:
            # thin QR of Phi^T: the basis V (B, m, n) and LAPACK's copy; R, M, R R^T (B, n, n); test set x V. The
            # eigenbasis of M: Q, W^T and diag(s) W^T (B, n, n), the test set in its coordinates; theta and its
            # null-space part kept between calls (B, m, k)
            out["rowspace_basis"] = s * (2 * b * m * n + 6 * b * n * n + 2 * b * m * k)
            out["test_features"] += 2 * s * b * n * nt
            # coefficients (K + 1, B, k, n); the residuals with the reshaped copy and the product they come
            # from; norms and population losses square the block
            out["iterate_buffers"] = s * ((4 * kk + 1) * b * k * n + 3 * block)
        else:
            # iterates (K + 1, B, m, k) and residuals (K, B, n, k), each with the temporaries of their losses
            out["iterate_buffers"] = s * ((3 * kk + 1) * b * m * k + 2 * kk * b * n * k + 3 * block)
    else:
        # autograd loop: the inputs cast to the parameters' dtype, and the hidden activations of the full-batch
        # forward (pre-activation and ReLU, kept for backward, and their gradients), a mini-batch forward and the
        # test forward; ridge has no hidden layer
        out["training_data"] += s * n * (d + k)
        out["test_data"] += s * nt * (d + k)
        rows = 4 * (n + (sh["batch"] or 0)) + 2 * nt
        if family == "transformer":
            # ``rows`` counts a training example 4 times: here its 4 tokens. Per token and block about 24 numbers per
            # model dimension are kept for backward (q, k, v, attention output, LayerNorms, the 4 d_model MLP, and
            # their gradients); 4 more for the embeddings and the final LayerNorm
            per_row = int(cfg.model.d_model) * (24 * int(cfg.model.n_layers) + 4)
        else:
            per_row = k if family == "ridge" else m
        out["activations"] = b * s * rows * per_row
        # three (K, B) records a call, a 0-d tensor per step and test metric, and (fused two-layer GD loop) the
        # network's outputs on the training set at every step of the call
        out["iterate_buffers"] = kk * b * (3 * s + 512 + (s * n * k if family == "two_layer" else 0))
        if family == "two_layer" and cfg.data.kind == "regression" and cfg.data.population == "exact":
            # the closed-form evaluation's float64 temporaries: about four blocks of rows of K(W, W) at a time
            # (theory/two_layer_population.py), at most KERNEL_BLOCK_ELEMENTS numbers each for many members
            rows = min(m, KERNEL_ROW_BLOCK)
            out["population_kernel"] = 4 * F64 * min(b * rows * m, max(KERNEL_BLOCK_ELEMENTS, rows * m))
    return {key: v for key, v in out.items() if v}


def _theory_bytes(cfg: Any, sh: dict[str, Any]) -> int:
    """Float64 bytes of ``theory.problem.linear_problem`` and ``theory.run_theory.RunTheory`` for every member: kept
    per member (features, the SVD's right factor), plus the largest workspace of one member at a time."""
    b, n, nt, ns, m, k = (sh[x] for x in ("members", "n", "n_test", "n_sigma", "m", "k"))
    r = min(n, m)
    # ridge features in float64 are the data tensors themselves (numpy views, no copy)
    shared = cfg.model.family == "ridge" and itemsize(cfg.trainer.precision) == F64
    kept = (0 if shared else n * m + nt * m) + m * r + m * k + ((r + 2) ** 2 if nt else 0)
    # workspaces of the steps, one after another: an SVD of Phi (LAPACK's copy, U and V^T); the test-set
    # quadratic form (Phi_test V, residuals); the loss curves on the step grid (residuals (T, r, k) and
    # squares); lambda_min(Sigma) (features of the Sigma sample, the m x m second moment and eigvalsh's copy);
    # the realizing teacher on a finite table (lstsq on stacked features and targets, with its copy)
    phases = [n * m + n * r + r * m, nt * (r + 2 * k)]
    phases.append(2 * _grid_points(float(cfg.optim.lr), float(cfg.optim.weight_decay)) * r * k)
    if sh["table"] or (ns and m <= SIGMA_ESTIMATE_MAX_WIDTH):
        phases.append(ns * m + 2 * m * m)
    if sh["table"]:
        phases.append(2 * sh["table"] * (m + k))
    work = max(phases)
    return F64 * (b * kept + work)


def available_memory() -> tuple[int, str]:
    """Bytes this process may still allocate, and where the figure comes from: ``LG_MEMORY_AVAILABLE`` if set,
    else ``MemAvailable`` of /proc/meminfo (free pages of ``os.sysconf`` where there is none), lowered to the
    room left under a cgroup memory limit (containers, SLURM jobs). Raises ValueError on a bad override."""
    env = os.environ.get(MEMORY_ENV)
    if env:
        try:
            value = int(float(env))
        except ValueError:
            raise ValueError(f"environment variable {MEMORY_ENV}={env!r} is not a number of bytes") from None
        return value, f"${MEMORY_ENV}"
    avail, source = _meminfo_available()
    limit = _cgroup_room()
    if limit is not None and limit < avail:
        return limit, "room under this cgroup's memory limit"
    return avail, source


def _meminfo_available() -> tuple[int, str]:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free physical pages (sysconf)"
    except (OSError, ValueError, AttributeError):
        # no way to tell (not Linux or BSD): do not refuse anything
        return 1 << 62, "unknown"


def _read_int(path: str) -> int | None:
    try:
        with open(path) as fh:
            text = fh.read().strip()
        return None if text == "max" else int(text)
    except (OSError, ValueError):
        return None


def _inactive_file(stat_file: str) -> int:
    """Reclaimable page cache of a cgroup (bytes): its usage counts it, but the kernel frees it on demand."""
    try:
        with open(stat_file) as fh:
            for line in fh:
                key, _, value = line.partition(" ")
                if key in ("inactive_file", "total_inactive_file"):
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _cgroup_room() -> int | None:
    """limit - usage (less reclaimable cache) of the cgroup memory controller, v2 then v1; None without a limit."""
    for root, limit_file, usage_file in (
        ("/sys/fs/cgroup", "memory.max", "memory.current"),
        ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes"),
    ):
        limit, usage = _read_int(f"{root}/{limit_file}"), _read_int(f"{root}/{usage_file}")
        if limit is not None and limit < 1 << 60:  # v1 writes "no limit" as a huge number
            used = max(0, (usage or 0) - _inactive_file(f"{root}/memory.stat"))
            return max(0, limit - used)
    return None


def gib(nbytes: int) -> str:
    """``nbytes`` as GiB for messages, e.g. '74.5 GiB' (small values as MiB)."""
    if nbytes < 1 << 30:
        return f"{nbytes / (1 << 20):.0f} MiB"
    return f"{nbytes / (1 << 30):.1f} GiB"
