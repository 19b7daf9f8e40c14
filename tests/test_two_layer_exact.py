"""The two-layer network's exact population loss during training (``data.population=exact``).

* the torch closed form (theory/two_layer_population.py, batched, float64) equals the numpy one
  (theory.population.two_layer_population_loss) for every teacher and input law, several members at once;
* the test loss recorded by a Lightning fit is the closed form of the trained iterate (1e-9, float64; 1e-6 for a
  float32 run, evaluated in float64) and agrees with a 10^6-sample Monte-Carlo estimate within 5 standard errors;
* t2 with sparse evaluation (a replay finds the crossing) equals t2 evaluated at every step;
* phases.json and the W&B summary say which population loss was used; what has no closed form is refused.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load

from lightning_grok.config import ConfigError
from lightning_grok.data.regression import TeacherSpec
from lightning_grok.experiment import build
from lightning_grok.experiment import fit as experiment_fit
from lightning_grok.gd_loops import eval_points
from lightning_grok.results import flat_summary
from lightning_grok.theory import population as pop
from lightning_grok.theory.two_layer_population import TwoLayerPopulation

MC = 1_000_000  # Monte-Carlo inputs
Z = 5.0  # tolerance in Monte-Carlo standard errors
SMALL = ("model.width=64", "data.population=exact", "trainer.precision=64-true", "phases.log_points=8")
# a ReLU teacher in d = 5 that the network learns (as tests/test_two_layer_kernel.py's RELU)
RELU = (*SMALL, "data.teacher=relu", "data.input_dim=5", "data.n_train=100", "optim.lr=0.05", "optim.weight_decay=1e-3")
ZERO = (*SMALL, "data.teacher=zero", "optim.lr=0.05", "optim.weight_decay=0.1", "trainer.max_steps=1200")


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _fit(tmp_path: Path, *overrides: str, eval_every: int | None = None):
    cfg = load("two_layer.yaml", f"output_dir={tmp_path}", *overrides)
    built = build(cfg)
    if eval_every is not None:
        built.module.eval_every = eval_every
    status, res = experiment_fit(cfg, "two_layer", built=built)
    assert status == 0
    return res, built


def _numpy_teacher(spec: TeacherSpec) -> pop.Teacher:
    if spec.kind == "zero":
        return pop.Teacher(None)
    return pop.Teacher(pop.Units(spec.kind, spec.weight.numpy().T), np.ones(1))


@pytest.mark.parametrize("dist", pop.INPUT_DISTS)
@pytest.mark.parametrize("kind", ["zero", "linear", "relu"])
def test_batched_torch_closed_form_equals_numpy(dist, kind):
    """Three members with their own teachers, m = 300 > ROW_BLOCK (several row blocks, the off-diagonal ones
    counted twice), against the numpy closed form member by member."""
    gen = torch.Generator().manual_seed(11)
    b, m, d = 3, 300, 7
    w = torch.randn(b, m, d, generator=gen, dtype=torch.float64) / math.sqrt(d)
    w[1, 5] = 0.0  # a dead unit: its kernel row is 0, not NaN
    a = torch.randn(b, m, 1, generator=gen, dtype=torch.float64) / math.sqrt(m)
    specs = [TeacherSpec(kind, None if kind == "zero" else torch.randn(d, 1, generator=gen, dtype=torch.float64))]
    specs += [TeacherSpec(kind, None if kind == "zero" else torch.randn(d, 1, generator=gen, dtype=torch.float64))]
    specs += [TeacherSpec(kind, None if kind == "zero" else torch.randn(d, 1, generator=gen, dtype=torch.float64))]
    exact = TwoLayerPopulation.from_teachers(specs, dist, d)
    got = exact.loss(w, a)
    for i, spec in enumerate(specs):
        ref = float(pop.two_layer_population_loss(w[i].numpy(), a[i, :, 0].numpy(), _numpy_teacher(spec), dist))
        assert float(got[i]) == pytest.approx(ref, rel=1e-12)
        assert float(exact.loss(w[i : i + 1], a[i : i + 1], slice(i, i + 1))[0]) == pytest.approx(ref, rel=1e-12)


def _monte_carlo(w: np.ndarray, a: np.ndarray, spec: TeacherSpec, dist: str, seed: int) -> tuple[float, float]:
    """Mean and standard error of (N(x) - N*(x))^2 over MC inputs of ``dist``, in blocks."""
    rng = np.random.default_rng(seed)
    teacher = _numpy_teacher(spec)
    sq = []
    for _ in range(10):
        x = pop.draw_inputs(dist, MC // 10, w.shape[1], lambda n, d: rng.standard_normal((n, d)))
        sq.append((np.maximum(x @ w.T, 0.0) @ a[:, 0] - teacher(x)) ** 2)
    e = np.concatenate(sq)
    return float(e.mean()), pop.standard_error(e)


@pytest.mark.parametrize(
    ("dist", "teacher", "precision", "rtol"),
    [
        ("sphere", "relu", "64-true", 1e-9),
        ("gaussian", "linear", "64-true", 1e-9),
        ("gaussian_scaled", "relu", "32-true", 1e-6),  # a float32 run: evaluated in float64, recorded in float32
    ],
)
def test_recorded_population_loss_is_the_closed_form_of_the_trained_iterate(tmp_path, dist, teacher, precision, rtol):
    """A run to step T (its checkpoint holds theta_T), resumed for one step: the loss it records for step T is
    L(theta_T), which must equal the numpy closed form of theta_T and a 10^6-point Monte-Carlo estimate."""
    steps = 400
    args = (*RELU, f"data.teacher={teacher}", f"data.input_dist={dist}", f"trainer.precision={precision}")
    _fit(tmp_path, *args, f"trainer.max_steps={steps}")
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    w, a = state["model.weight"].double().numpy(), state["model.a"].double().numpy()
    res, built = _fit(tmp_path, *args, f"trainer.max_steps={steps + 1}")
    assert res["steps_run"] == steps + 1
    recorded = res["final"]["test/loss"]  # the record of theta_T, the resumed call's only step
    spec = built.members[0].tensors.teacher
    assert spec.kind == teacher
    closed = float(pop.two_layer_population_loss(w, a[:, 0], _numpy_teacher(spec), dist))
    assert recorded == pytest.approx(closed, rel=rtol)
    mc, se = _monte_carlo(w, a, spec, dist, seed=3)
    assert abs(closed - mc) <= Z * se, f"closed form {closed:.8g} vs Monte Carlo {mc:.8g} +- {se:.2g}"
    assert res["population"]["source"].startswith("closed form (arc-cosine kernel")
    assert res["population"]["test_loss_stderr"] == 0.0


def _inside_a_block(module, t: int) -> bool:
    """Neither step t nor step t - 1 is a regularly evaluated step of its call: a replay had to find t."""
    k = module.steps_per_call
    start = (t // k) * k
    steps = min(k, module.max_steps - start)
    points = set(eval_points(start, steps, module._loop.every, module.log_steps).tolist())
    return module._loop.every > 2 and t - start not in points and t - 1 - start not in points


@pytest.mark.parametrize(
    ("args", "every"),
    [(ZERO, 0), (ZERO, 37), ((*RELU, "trainer.max_steps=3000"), 0)],
    ids=["zero-auto", "zero-37", "relu-auto"],
)
def test_sparse_t2_equals_every_step_t2_with_the_exact_loss(tmp_path, args, every):
    dense, _ = _fit(tmp_path / "dense", *args, eval_every=1)
    sparse, built = _fit(tmp_path / "sparse", *args, eval_every=every)
    module = built.module
    assert module._loop.ev.two_layer is not None and module._loop.ev.x_test is None  # no test set in the loop
    assert dense["t_generalize"] is not None and dense["t_overfit"] is not None
    assert _inside_a_block(module, dense["t_generalize"])  # the crossing was found by a replay
    for key in ("t_overfit", "t_generalize", "grokking_time", "final"):
        assert sparse[key] == dense[key], key


def test_auto_eval_every_follows_the_exact_cost_model(tmp_path):
    """The closed form costs more than a 200-point test set at m = 64 (m^2 (d + ELEMENT_COST) against N m (d + k)):
    evaluated more sparsely, and the training side is the same computation (t1 and the training loss equal)."""
    common = (*ZERO[:-1], "trainer.max_steps=300", "data.n_test=100")
    exact, b_exact = _fit(tmp_path / "exact", *common)
    sampled, b_sampled = _fit(tmp_path / "sampled", *common, "data.population=sampled")
    assert b_exact.module._loop.every > b_sampled.module._loop.every > 1
    assert exact["t_overfit"] == sampled["t_overfit"]
    assert exact["final"]["train/loss"] == sampled["final"]["train/loss"]
    assert exact["final"]["test/loss"] != sampled["final"]["test/loss"]
    assert "test/surrogate_acc" in sampled["final"] and "test/surrogate_acc" not in exact["final"]
    assert sampled["population"]["source"].startswith("test set of 100 points")
    assert flat_summary(exact)["grok/population"].startswith("closed form")
    on_disk = json.loads((tmp_path / "exact" / "phases.json").read_text())
    assert on_disk["population"]["source"] == exact["population"]["source"]


def test_optimizers_without_the_fused_loop_measure_the_test_set(tmp_path):
    res, built = _fit(tmp_path, *ZERO[:-1], "trainer.max_steps=20", "optim.name=adamw", "optim.lr=1e-3")
    assert not built.module.uses_two_layer_loop
    assert res["population"]["source"].startswith("test set of")


def test_teachers_without_a_closed_form_are_refused():
    with pytest.raises(ConfigError, match="'data.population': 'exact' with model.family='two_layer'.*fourier"):
        load("two_layer.yaml", "data.population=exact", "data.teacher=fourier")
    load("two_layer.yaml", "data.population=exact", "data.teacher=relu")  # accepted
