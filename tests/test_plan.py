"""RunPlan: the one place that chooses the GD loop, K and the logged steps, and the memory estimate it carries."""

from __future__ import annotations

from conftest import load

from lightning_grok.plan import GDLoop, RunPlan
from lightning_grok.resources import estimate_memory


def plan(name: str, *overrides: str) -> RunPlan:
    return RunPlan.from_config(load(name, *overrides))


def test_rowspace_iff_n_below_m_with_auto():
    assert plan("ridge.yaml").loop is GDLoop.ROWSPACE  # n = 100 < m = 1000
    assert plan("ridge.yaml", "data.n_train=2000").loop is GDLoop.PARAMETER
    assert plan("ridge.yaml", "trainer.gd_loop=parameter").loop is GDLoop.PARAMETER
    assert plan("ridge.yaml").for_world(2).loop is GDLoop.PARAMETER  # the row space needs every row in one process


def test_two_layer_and_autograd_loops():
    assert plan("two_layer.yaml").loop is GDLoop.TWO_LAYER
    assert plan("two_layer.yaml", "optim.name=adamw").loop is GDLoop.AUTOGRAD
    assert plan("modular/transformer_add.yaml").loop is GDLoop.AUTOGRAD
    assert plan("ridge.yaml", "trainer.precision=bf16-mixed").loop is GDLoop.AUTOGRAD
    assert plan("ridge.yaml", "trainer.precision=bf16-mixed").theory  # the theory still applies


def test_plan_steps_and_schedule():
    p = plan("ridge.yaml", "trainer.max_steps=5000", "phases.log_points=50")
    assert p.steps_per_call <= 5000 and p.ramp_up and p.call_steps(0) == 64
    assert p.log_steps[0] == 0 and p.log_steps[-1] == 4999 and len(p.log_steps) <= 51
    assert plan("ridge.yaml", "trainer.steps_per_call=300").call_steps(0) == 300


def test_memory_is_the_plans():
    for name in ("ridge.yaml", "random_features.yaml", "two_layer.yaml", "modular/ridge_add.yaml"):
        cfg = load(name)
        assert estimate_memory(cfg) == RunPlan.from_config(cfg).memory("fit")
        assert estimate_memory(cfg, verb="theory") == RunPlan.from_config(cfg).memory("theory")


def test_the_seeds_rule_is_the_plans():
    """Validation and the module both get the rule from the plan: several seeds iff a fused GD loop."""
    import pytest

    from lightning_grok.config import ConfigError

    n = int(load("ridge.yaml").data.n_train)
    # a mini-batch as large as the training set is full batch: the plan fuses it, so the seeds are accepted
    assert plan("ridge.yaml", "seeds=3", f"optim.batch_size={n}").loop is GDLoop.ROWSPACE
    with pytest.raises(ConfigError, match=f"'seeds': 3 with optim.name='gd', optim.batch_size={n - 1}"):
        load("ridge.yaml", "seeds=3", f"optim.batch_size={n - 1}")
    single = plan("ridge.yaml", "optim.name=adamw")
    assert single.loop is GDLoop.AUTOGRAD
    with pytest.raises(ConfigError, match="'seeds': 2 .*trainer.precision='64-true'"):
        single.with_members(2)
