"""One run's pieces without Lightning: data tensors, the model, and (for linear models) the theory.

``build_member(cfg)`` is seeded: two calls with one config give bit-identical tensors. A run of several seeds
(``seeds`` = K) is K members, member i the run of seed ``seed + i``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from lightning_grok.data.base import RunData
from lightning_grok.models import build_model
from lightning_grok.plan import RunPlan
from lightning_grok.seeding import generator
from lightning_grok.theory.exact import LinearProblem
from lightning_grok.theory.problem import linear_problem, param_dtype
from lightning_grok.theory.run_theory import RunTheory


@dataclass
class Member:
    """One run's pieces: a run of ``seeds`` > 1 has one Member per seed."""

    model: torch.nn.Module
    tensors: RunData
    problem: LinearProblem | None
    theory: RunTheory | None
    theory_note: str


def build_member(cfg: DictConfig, plan: RunPlan | None = None) -> Member:
    """The pieces of the run of ``cfg.seed`` (one member: one seed of the run); ``plan``: the run's (that of
    ``cfg`` if None)."""
    init_gen = generator(cfg.seed, "init")
    if cfg.data.kind == "regression":
        from lightning_grok.data.regression import input_dim, regression_tensors

        model = build_model(cfg, input_dim(cfg), 1, init_gen)
        tensors = regression_tensors(cfg, feature_map=getattr(model, "features", None))
    else:
        from lightning_grok.data.modular import modular_tensors

        tensors = modular_tensors(cfg)
        model = build_model(cfg, tensors.x_train.shape[1], tensors.out_dim, init_gen)
    model = model.to(param_dtype(cfg))
    problem, note = linear_problem(cfg, model, tensors, plan)
    theory = None
    if problem is not None:
        theory = RunTheory.from_problem(problem, cfg.phases.eps, cfg.phases.c, cfg.phases.delta)
    return Member(model, tensors, problem, theory, note)


def describe_population(cfg: DictConfig, member: Member, plan: RunPlan | None = None) -> dict:
    """How the run's population loss L was measured, with its standard error at the current parameters.

    ``test_loss_stderr`` (units of L) is std_i(e_i) / sqrt(N) over the N test points' squared errors
    e_i = ||N(x_i) - y_i||^2 when L is a sample mean, and 0 where L is exact: closed-form moments (random
    features, ``data.population=exact``), the arc-cosine closed form (two-layer network, ``data.population=exact``,
    trained by the fused GD loop: ``RunPlan.two_layer_exact``), Sigma known in closed form (ridge), or the whole
    held-out part of a finite table (modular arithmetic). ``plan``: the run's (that of ``cfg`` if None)."""
    from lightning_grok.theory.population import standard_error

    plan = plan or RunPlan.from_config(cfg)
    t = member.tensors
    if plan.closed_form_features and member.problem is not None:
        return {"source": "closed form (theory/population.py)", "test_loss_stderr": 0.0}
    if plan.two_layer_exact:
        return {
            "source": "closed form (arc-cosine kernel, theory/two_layer_population.py)",
            "test_loss_stderr": 0.0,
        }
    if cfg.data.kind == "regression" and cfg.model.family == "ridge":
        return {"source": "exact (Sigma in closed form)", "test_loss_stderr": 0.0}
    if t.finite_population or t.x_test is None:
        return {"source": "exact (the whole held-out table)", "test_loss_stderr": 0.0}
    dtype = next(member.model.parameters()).dtype
    with torch.no_grad():
        err = ((member.model(t.x_test.to(dtype)) - t.y_test.to(dtype)) ** 2).sum(dim=-1)
    return {"source": f"test set of {len(err)} points (data.n_test)", "test_loss_stderr": standard_error(err.numpy())}
