"""GD loops: K optimizer steps per call, every step's losses recorded into preallocated buffers.

Lightning's per-call overhead is paid once per K steps (``trainer.steps_per_call``), so a call of a
GD loop is the unit of work of one ``training_step``. The GD loops, one module per family:

* ``LinearGDLoop`` (``linear``): full-batch GD (Eq. 2) for models linear in their parameters, fused into two
  BLAS calls per step:  R_t = Phi theta_t - Y,  theta_{t+1} = (1 - eta lambda) theta_t - (eta/n) Phi^T R_t.
  This is exactly ``torch.optim.SGD(lr=eta, weight_decay=lambda)`` on the gradient (1/n) Phi^T R_t.
  Losses are evaluated afterwards for the whole block of K iterates at once (BLAS-3).
  ``RowSpaceGDLoop`` (``linear``): the same iterates in the row space of Phi, in the eigenbasis of the step: O(n) a step
  when n < m.
* ``TwoLayerGDLoop`` (``two_layer``): full-batch GD (Eq. 2 on both layers) for the two-layer ReLU network of Sec. 5.3,
  with hand-written gradients: four batched matrix products a step, the training loss from the forward pass.
* ``AutogradLoop`` (``autograd``): any model and any torch optimizer (gd, sgd with momentum, adamw), full batch
  or mini-batches, with the losses of theta_t recorded before each update. It evaluates the test side at
  every step: a replay would have to restore optimizer moments, mini-batch generators and the GradScaler.

What they share: ``records`` (``EvalSpec``, what a loop needs to measure a step: the test set or exact
population, the training and test labels, the thresholds c, tau and eps; ``Chunk``, the per-step records of
a call) and ``sparse_eval`` (which steps to evaluate, threshold crossings, below). Every name importers used
when this was one module is re-exported here.

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

from lightning_grok.gd_loops.autograd import AutogradLoop
from lightning_grok.gd_loops.linear import RECORD_BLOCK_ELEMENTS, LinearGDLoop, RowSpaceGDLoop, Scalars, decay_and_scale
from lightning_grok.gd_loops.records import Chunk, EvalSpec, Reduce
from lightning_grok.gd_loops.sparse_eval import EVAL_SHARE, MAX_EVAL_EVERY, auto_eval_every, eval_points
from lightning_grok.gd_loops.sparse_eval import _blocks_to_fill as _blocks_to_fill  # private; batch.py imports it here
from lightning_grok.gd_loops.two_layer import CPU_GROUP_BYTES, TwoLayerGDLoop
from lightning_grok.gd_loops.two_layer import (  # private; benchmarks/bench_exact_two_layer.py imports it here
    _two_layer_eval_cost as _two_layer_eval_cost,
)

# Deprecated: the name of EvalSpec before the rename, kept for importers from before it (lightning_module.py).
PopulationSide = EvalSpec

__all__ = [
    "CPU_GROUP_BYTES",
    "EVAL_SHARE",
    "MAX_EVAL_EVERY",
    "RECORD_BLOCK_ELEMENTS",
    "AutogradLoop",
    "Chunk",
    "EvalSpec",
    "LinearGDLoop",
    "PopulationSide",
    "Reduce",
    "RowSpaceGDLoop",
    "Scalars",
    "TwoLayerGDLoop",
    "auto_eval_every",
    "decay_and_scale",
    "eval_points",
]
