"""The fused two-layer GD kernel (Eq. 2 on both layers) and sparse evaluation of the population loss.

* the fused GD loop follows torch.optim.SGD on the autograd gradient to 1e-10 (float64), weight decay on both layers;
* t1 and t2 with sparse evaluation equal those of every-step evaluation, on runs whose t2 falls strictly inside a
  block between two evaluated steps (two-layer zero and ReLU teachers, random features with a test set, both
  linear GD loops);
* K vectorized two-layer seeds equal K sequential runs member by member; a resumed run ends bit-identical;
* under DDP (2 gloo processes) the fused GD loop, replays included, follows the single-process run.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from _two_layer_ddp import ddp_problem, ddp_worker
from conftest import load

from lightning_grok.experiment import build
from lightning_grok.experiment import fit as experiment_fit
from lightning_grok.gd_loops import AutogradLoop, EvalSpec, TwoLayerGDLoop, auto_eval_every, eval_points
from lightning_grok.models.two_layer import TwoLayerModel

SMALL = ("model.width=64", "data.n_test=200", "trainer.precision=64-true")
ZERO = (*SMALL, "data.teacher=zero", "optim.lr=0.05", "optim.weight_decay=0.1", "trainer.max_steps=1200")
# a ReLU teacher in d = 5 that the network learns: test loss <= c = 0.01 after about 2,000 steps
RELU = (
    *SMALL,
    "data.teacher=relu",
    "data.input_dim=5",
    "data.n_train=100",
    "optim.lr=0.05",
    "optim.weight_decay=1e-3",
    "trainer.max_steps=3000",
)
FEW_LOG_POINTS = "phases.log_points=8"  # so that logged steps do not fill the blocks around t2


@pytest.fixture(autouse=True)
def _one_thread():
    """These problems are small: with a second busy process on a 2-core machine, two-thread ops wait for time
    slices (10-50x slower). One thread keeps the tests fast; results do not depend on it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _fit(name: str, tmp_path: Path, *overrides: str, eval_every: int | None = None):
    """experiment.fit on a build whose module evaluates every ``eval_every``-th step (None: the config's)."""
    cfg = load(name, f"output_dir={tmp_path}", *overrides)
    built = build(cfg)
    if eval_every is not None:
        built.module.eval_every = eval_every
    status, res = experiment_fit(cfg, Path(name).stem, built=built)
    assert status == 0
    return res, built.module


def _inside_a_block(module, t: int) -> bool:
    """Neither step t nor step t - 1 is a regularly evaluated step of its call: a replay had to find t."""
    k = module.steps_per_call
    start = (t // k) * k
    steps = min(k, module.max_steps - start)
    points = set(eval_points(start, steps, module._loop.every, module.log_steps).tolist())
    return module._loop.every > 2 and t - start not in points and t - 1 - start not in points


# ---- the fused GD loop is Eq. (2) -----------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 3])
def test_fused_kernel_equals_autograd_sgd_with_decay_on_both_layers(k):
    gen = torch.Generator().manual_seed(1)
    n, d, m, n_test, lr, lam, steps = 40, 12, 48, 60, 0.05, 0.1, 300
    f64 = torch.float64
    x, y = torch.randn(n, d, generator=gen, dtype=f64), torch.randn(n, k, generator=gen, dtype=f64)
    x_test, y_test = torch.randn(n_test, d, generator=gen, dtype=f64), torch.randn(n_test, k, generator=gen, dtype=f64)
    model = TwoLayerModel(d, m, 1.0, k, gen)
    w, a = model.weight.detach().clone()[None], model.a.detach().clone()[None]
    ev = EvalSpec(x_test=x_test[None], y_test=y_test[None], c=0.01, surrogate_eps=0.01)
    fused = TwoLayerGDLoop(x[None].contiguous(), y[None], m, lr, lam, n, ev, steps, eval_every=1).run(w, a, 0, steps)
    opt = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=lam)  # Eq. (2): coupled weight decay
    ref = AutogradLoop(model, opt, x, y, n, EvalSpec(x_test=x_test, y_test=y_test, surrogate_eps=0.01))
    ref = ref.run(0, steps)
    torch.testing.assert_close(w[0], model.weight.detach(), rtol=1e-10, atol=0)
    torch.testing.assert_close(a[0], model.a.detach(), rtol=1e-10, atol=0)
    torch.testing.assert_close(fused.train_loss, ref.train_loss, rtol=1e-10, atol=0)
    torch.testing.assert_close(fused.test_loss, ref.test_loss, rtol=1e-10, atol=0)
    assert torch.equal(fused.extras["test_surrogate_acc"], ref.extras["test_surrogate_acc"])
    assert fused.evaluated is None  # eval_every=1: every row is real
    # weight decay really acts on both layers: without it both end elsewhere
    w2, a2 = model.weight.detach().clone()[None], model.a.detach().clone()[None]
    TwoLayerGDLoop(x[None].contiguous(), y[None], m, lr, 0.0, n, ev, 5, eval_every=1).run(w2, a2, 0, 5)
    TwoLayerGDLoop(x[None].contiguous(), y[None], m, lr, lam, n, ev, 5, eval_every=1).run(w, a, 0, 5)
    assert not torch.allclose(w, w2, rtol=1e-6) and not torch.allclose(a, a2, rtol=1e-6)


def test_lightning_path_selects_the_fused_kernel_only_for_full_batch_gd():
    assert build(load("two_layer.yaml", *ZERO)).module.uses_two_layer_loop
    assert not build(load("two_layer.yaml", *ZERO, "optim.name=adamw")).module.uses_two_layer_loop
    assert not build(load("two_layer.yaml", *ZERO, "optim.batch_size=10")).module.uses_two_layer_loop
    assert not build(load("two_layer.yaml", *ZERO, "trainer.precision=bf16-mixed")).module.uses_two_layer_loop
    assert not build(load("modular/two_layer_add.yaml", "optim.name=gd")).module.uses_two_layer_loop  # CE


def test_auto_eval_every_and_points():
    # the paper's defaults: step n m (2d + 3k), evaluation N m (d + k)
    assert auto_eval_every(50 * 1000 * 103, 500 * 1000 * 51) == 20
    assert auto_eval_every(100, 20) == 1  # cheap evaluation (ridge's closed form): every step
    pts = eval_points(1000, 100, 20, wanted=np.array([3, 1005, 1031, 1100]))
    assert pts.tolist() == [0, 5, 20, 31, 40, 60, 80, 99]
    assert eval_points(0, 10, 1).tolist() == list(range(10))


# ---- sparse evaluation keeps t1 and t2 exact ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "every"),
    [(ZERO, 0), (ZERO, 37), (RELU, 0), (RELU, 53)],
    ids=["zero-auto", "zero-37", "relu-auto", "relu-53"],
)
def test_two_layer_sparse_phase_times_equal_every_step(tmp_path, args, every):
    dense, _ = _fit("two_layer.yaml", tmp_path / "dense", *args, FEW_LOG_POINTS, eval_every=1)
    sparse, module = _fit("two_layer.yaml", tmp_path / "sparse", *args, FEW_LOG_POINTS, eval_every=every)
    assert dense["t_generalize"] is not None and dense["t_overfit"] is not None
    assert _inside_a_block(module, dense["t_generalize"])  # the crossing was found by a replay
    for key in ("t_overfit", "t_generalize", "grokking_time", "final"):
        assert sparse[key] == dense[key], key


@pytest.mark.parametrize("kernel", ["rowspace", "parameter"])
def test_random_features_sparse_phase_times_equal_every_step_and_exact(tmp_path, kernel):
    args = (
        "model.width=500",
        "data.input_dim=30",
        "data.population=sampled",  # sparse evaluation pays off on a test set of N points
        "data.n_test=400",
        "data.n_sigma_samples=800",
        "data.teacher=student",
        "optim.weight_decay=2e-3",
        "trainer.max_steps=3000",
        f"trainer.gd_loop={kernel}",
        FEW_LOG_POINTS,
    )
    dense, _ = _fit("random_features.yaml", tmp_path / "dense", *args, eval_every=1)
    sparse, module = _fit("random_features.yaml", tmp_path / "sparse", *args, eval_every=0)
    t2 = dense["t_generalize"]
    assert t2 is not None and t2 == dense["exact"]["t_generalize"]
    assert _inside_a_block(module, t2)
    for key in ("t_overfit", "t_generalize", "grokking_time"):
        assert sparse[key] == dense[key], key
    assert sparse["exact"]["t_generalize_matches"] is True
    assert sparse["final"]["test/loss"] == pytest.approx(dense["final"]["test/loss"], rel=1e-12)


def test_accuracy_t2_is_exact_with_sparse_evaluation():
    """Classification on the fused GD loop (one-hot targets, squared loss): the test-accuracy crossing is replayed."""
    gen = torch.Generator().manual_seed(3)
    n, d, m, k, n_test, steps = 200, 5, 64, 3, 300, 400
    teacher = torch.randn(d, k, generator=gen, dtype=torch.float64)
    x, x_test = torch.randn(n, d, generator=gen, dtype=torch.float64), torch.randn(n_test, d, generator=gen)
    x_test = x_test.double()
    labels, test_labels = (x @ teacher).argmax(1), (x_test @ teacher).argmax(1)
    y = torch.nn.functional.one_hot(labels, k).double()
    model = TwoLayerModel(d, m, 1.0, k, gen)
    times = {}
    for every in (1, 41):
        ev = EvalSpec(
            x_test=x_test[None], y_test=torch.nn.functional.one_hot(test_labels, k).double()[None], c=1e-9, tau=0.8
        )
        ev.test_labels, ev.train_labels = test_labels[None], labels[None]
        w, a = model.weight.detach().clone()[None], model.a.detach().clone()[None]
        chunk = TwoLayerGDLoop(x[None], y[None], m, 0.2, 1e-3, n, ev, steps, eval_every=every).run(w, a, 0, steps)
        acc = chunk.extras["test_acc"][:, 0].numpy()
        times[every] = int(np.nonzero(acc >= 0.8)[0][0])
        assert chunk.extras["train_acc"].shape == (steps, 1)
    assert times[41] == times[1] and times[1] % 41 not in (0, 1)


# ---- vectorized seeds, resume --------------------------------------------------------------------------------------
def test_vectorized_two_layer_seeds_equal_sequential_runs(tmp_path):
    """Needs config.validate to accept seeds > 1 for two_layer with full-batch gd."""
    ens, module = _fit("two_layer.yaml", tmp_path / "ens", *ZERO, FEW_LOG_POINTS, "seeds=3")
    assert module.uses_two_layer_loop and len(ens["members"]) == 3
    for i, member in enumerate(ens["members"]):
        single, _ = _fit("two_layer.yaml", tmp_path / f"s{i}", *ZERO, FEW_LOG_POINTS, f"seed={i}")
        assert (member["t_overfit"], member["t_generalize"]) == (single["t_overfit"], single["t_generalize"])
        assert member["t_generalize"] is not None
        for key in ("train/loss", "test/loss"):
            assert member["final"][key] == pytest.approx(single["final"][key], rel=1e-9)
    assert len({m["t_generalize"] for m in ens["members"]}) > 1  # independent seeds, not copies


def test_seeds_on_two_threads_equal_sequential_runs(tmp_path):
    """The real path with torch on two threads: members of 625 KB (float64, m = 500) are stepped one a group, the
    groups shared between two threads; every member's t1, t2 and final losses equal its single run's (one thread)."""
    args = (*ZERO, "model.width=500", "optim.lr=0.01", "trainer.max_steps=800", FEW_LOG_POINTS)
    torch.set_num_threads(2)
    ens, module = _fit("two_layer.yaml", tmp_path / "ens", *args, "seeds=2")
    assert module._loop.group == 1 and module._loop._workers(torch.device("cpu")) == 2
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)
    for i, member in enumerate(ens["members"]):
        single, _ = _fit("two_layer.yaml", tmp_path / f"s{i}", *args, f"seed={i}")
        assert (member["t_overfit"], member["t_generalize"]) == (single["t_overfit"], single["t_generalize"])
        assert member["t_generalize"] is not None
        assert member["final"] == single["final"]  # bit for bit: the same operations on one intra-op thread


@pytest.mark.parametrize("group", [1, 2, 3])
def test_member_groups_equal_single_runs(group):
    """Members stepped one group at a time (a CPU's cache-sized groups) equal their single runs: group 1 bit for
    bit, larger groups to rounding; each member's sparse t2 equals its single run's (replays per group)."""
    gen = torch.Generator().manual_seed(2)
    b, n, d, m, n_test, steps = 3, 30, 10, 40, 100, 500
    f64 = torch.float64
    x, x_test = torch.randn(b, n, d, generator=gen, dtype=f64), torch.randn(b, n_test, d, generator=gen, dtype=f64)
    scale = torch.tensor([1.0, 1.5, 0.7], dtype=f64)[:, None, None]  # members reach t2 at different steps
    w0 = torch.randn(b, m, d, generator=gen, dtype=f64) / d**0.5 * scale
    a0 = torch.randn(b, m, 1, generator=gen, dtype=f64) / m**0.5

    def run(rows: slice, group: int | None):
        count = len(range(b)[rows])
        ev = EvalSpec(x_test=x_test[rows], y_test=torch.zeros(count, n_test, 1, dtype=f64), c=0.01)
        y = torch.zeros(count, n, 1, dtype=f64)
        kernel = TwoLayerGDLoop(x[rows], y, m, 0.05, 0.1, n, ev, steps, eval_every=17, group=group)
        w, a = w0[rows].clone(), a0[rows].clone()
        return kernel.run(w, a, 0, steps), w, a

    chunk, w, a = run(slice(0, b), group)
    t2s = set()
    for i in range(b):
        single, ws, as_ = run(slice(i, i + 1), None)
        same = torch.equal if group == 1 else lambda u, v: torch.allclose(u, v, rtol=1e-12, atol=0)
        assert same(w[i], ws[0]) and same(a[i], as_[0]) and same(chunk.train_loss[:, i], single.train_loss[:, 0])
        t2 = int(torch.nonzero(single.test_loss[:, 0] <= 0.01)[0])
        assert t2 == int(torch.nonzero(chunk.test_loss[:, i] <= 0.01)[0])
        t2s.add(t2)
    assert len(t2s) == b


@pytest.mark.parametrize("single_threads", [1, 2])
def test_members_in_threads_equal_single_runs(single_threads):
    """Members shared among two threads (one member a group, one intra-op thread each) at the paper's sizes (n = d
    = 50, m = 1000, float32) equal their single runs: bit for bit against single runs on one thread, to float32
    rounding against single runs on two intra-op threads; t1 (train loss <= eps) and t2 (test loss <= c, sparse
    evaluation with replays inside the threads) exactly. The ensemble runs in calls of 200 steps, the single runs in
    one call of 600, as Lightning's steps per call differ with the members. torch's thread count is kept."""
    gen = torch.Generator().manual_seed(3)
    b, n, d, m, n_test, steps, every, eps, c = 4, 50, 50, 1000, 200, 600, 17, 1e-3, 0.01
    x, x_test = torch.randn(b, n, d, generator=gen), torch.randn(b, n_test, d, generator=gen)
    scale = torch.tensor([1.0, 1.5, 0.7, 1.2])[:, None, None]  # members reach t1, t2 at different steps
    w0 = torch.randn(b, m, d, generator=gen) / d**0.5 * scale
    a0 = torch.randn(b, m, 1, generator=gen) / m**0.5

    def kernel(rows: slice, max_steps: int) -> TwoLayerGDLoop:
        count = len(range(b)[rows])
        ev = EvalSpec(x_test=x_test[rows], y_test=torch.zeros(count, n_test, 1), c=c)
        return TwoLayerGDLoop(x[rows], torch.zeros(count, n, 1), m, 3e-3, 1.0, n, ev, max_steps, eval_every=every)

    def first(values: torch.Tensor, bound: float) -> int:
        return int(torch.nonzero(values <= bound)[0])

    torch.set_num_threads(2)
    ens = kernel(slice(0, b), 200)
    assert ens.group == 1 and ens._workers(x.device) == 2
    w, a = w0.clone(), a0.clone()
    chunks = [ens.run(w, a, start, 200) for start in range(0, steps, 200)]
    assert torch.get_num_threads() == 2
    train = torch.cat([ch.train_loss for ch in chunks])
    test = torch.cat([ch.test_loss for ch in chunks])
    torch.set_num_threads(single_threads)
    t2s = []
    for i in range(b):
        ws, as_ = w0[i : i + 1].clone(), a0[i : i + 1].clone()
        single = kernel(slice(i, i + 1), steps).run(ws, as_, 0, steps)
        if single_threads == 1:
            assert torch.equal(w[i], ws[0]) and torch.equal(a[i], as_[0])
            assert torch.equal(train[:, i], single.train_loss[:, 0])
        torch.testing.assert_close(w[i], ws[0], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(a[i], as_[0], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(train[:, i], single.train_loss[:, 0], rtol=1e-5, atol=0)
        assert first(train[:, i], eps) == first(single.train_loss[:, 0], eps)
        t2s.append(first(single.test_loss[:, 0], c))
        assert first(test[:, i], c) == t2s[-1]
    assert len(set(t2s)) == b and any(t % every for t in t2s)  # distinct; some found by a replay


def test_resumed_two_layer_run_ends_bit_identical(tmp_path):
    args = (*ZERO, "trainer.steps_per_call=250", "trainer.max_steps=1000")
    whole, _ = _fit("two_layer.yaml", tmp_path / "whole", *args)
    first, _ = _fit("two_layer.yaml", tmp_path / "split", *args[:-1], "trainer.max_steps=500")
    assert first["steps_run"] == 500
    resumed, _ = _fit("two_layer.yaml", tmp_path / "split", *args)
    assert resumed["steps_run"] == 1000
    for key in ("t_overfit", "t_generalize", "grokking_time", "final"):
        assert resumed[key] == whole[key], key
    a = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "split" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[key], b[key]) for key in a)


# ---- DDP: shards of rows, all-reduced gradients and replay decisions --------------------------------------------
def test_ddp_two_processes_follow_the_single_process_run(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "ddp.pt")
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.multiprocessing.spawn(ddp_worker, args=(2, port, out), nprocs=2, join=True)
    ddp = torch.load(out)
    single, w, a = ddp_problem(0, 1)
    torch.testing.assert_close(ddp["w"], w, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(ddp["a"], a, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(ddp["train"], single.train_loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(ddp["test"], single.test_loss, rtol=1e-12, atol=0, equal_nan=True)
    t2 = int(torch.nonzero(single.test_loss[:, 0] <= 0.01)[0])
    assert t2 == int(torch.nonzero(ddp["test"][:, 0] <= 0.01)[0])
    assert not bool(torch.isnan(single.test_loss[t2 - 1]))  # found by a replay: the step before was evaluated too
