"""Vectorized seeds: K independent runs batched in one process equal K sequential runs, member by member."""

from __future__ import annotations

import pytest
import torch
from conftest import fit, load

from lightning_grok.config import ConfigError

ARGS = ("optim.weight_decay=1e-3", "trainer.max_steps=3000", "model.width=400", "data.n_train=60")


@pytest.mark.parametrize("kernel", ["parameter", "rowspace"])
def test_members_equal_sequential_runs(tmp_path, kernel):
    _, ens = fit("ridge.yaml", tmp_path / "ens", *ARGS, "seeds=4", f"trainer.gd_loop={kernel}")
    assert len(ens["members"]) == 4
    for i, member in enumerate(ens["members"]):
        _, single = fit("ridge.yaml", tmp_path / f"s{i}", *ARGS, f"seed={i}", "trainer.gd_loop=parameter")
        assert (member["t_overfit"], member["t_generalize"]) == (single["t_overfit"], single["t_generalize"])
        assert member["exact"]["t_generalize"] == single["exact"]["t_generalize"] == single["t_generalize"]
        assert member["final"]["test/loss"] == pytest.approx(single["final"]["test/loss"], rel=1e-9)
    t2 = [m["t_generalize"] for m in ens["members"]]
    assert len(set(t2)) > 1  # independent data and initializations, not copies
    assert ens["aggregate"]["t_generalize"]["mean"] == pytest.approx(sum(t2) / 4)
    assert ens["t_generalize"] == ens["aggregate"]["t_generalize"]["mean"]
    assert ens["aggregate"]["t_generalize_matches_exact"] is True


def test_rowspace_kernel_follows_the_parameter_space_trajectory(tmp_path):
    args = (*ARGS, "data.teacher=zero")
    _, p = fit("ridge.yaml", tmp_path / "p", *args, "trainer.gd_loop=parameter")
    _, r = fit("ridge.yaml", tmp_path / "r", *args, "trainer.gd_loop=rowspace")
    tp = torch.load(tmp_path / "p" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]["model.theta"]
    tr = torch.load(tmp_path / "r" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]["model.theta"]
    torch.testing.assert_close(tr, tp, rtol=1e-10, atol=1e-12)
    assert (r["t_overfit"], r["t_generalize"]) == (p["t_overfit"], p["t_generalize"])
    assert {e["verdict"] for e in r["envelopes"].values()} == {"holds"}  # Thm 4.1 checked on every step


def test_rowspace_kernel_with_a_test_set_and_random_features(tmp_path):
    args = (
        "model.width=500",
        "data.input_dim=30",
        "data.population=sampled",  # a test set: the surrogate accuracy is measured on its points
        "data.n_test=200",
        "data.n_sigma_samples=800",
        "data.teacher=student",
        "optim.weight_decay=2e-3",
        "trainer.max_steps=2500",
    )
    _, p = fit("random_features.yaml", tmp_path / "p", *args, "trainer.gd_loop=parameter")
    _, r = fit("random_features.yaml", tmp_path / "r", *args, "trainer.gd_loop=rowspace")
    assert (r["t_overfit"], r["t_generalize"]) == (p["t_overfit"], p["t_generalize"])
    assert r["final"]["test/loss"] == pytest.approx(p["final"]["test/loss"], rel=1e-9)
    assert r["final"]["test/surrogate_acc"] == p["final"]["test/surrogate_acc"]


def test_seeds_need_full_batch_gd_on_a_fused_kernel():
    """Several seeds are batched by the fused GD loops (linear families and the two-layer network)."""
    assert load("two_layer.yaml", "seeds=4").seeds == 4
    with pytest.raises(ConfigError, match="seeds"):
        load("two_layer.yaml", "seeds=4", "optim.name=adamw")
    with pytest.raises(ConfigError, match="seeds"):
        load("ridge.yaml", "seeds=4", "optim.name=adamw")
    with pytest.raises(ConfigError, match="seeds"):
        load("ridge.yaml", "seeds=4", "trainer.precision=16-mixed")


def _members(b: int, n: int, m: int, k: int, seed: int = 0, duplicate: bool = False):
    """B random linear problems (Phi rows ~ N(0, I/m)); ``duplicate``: member 0 has two equal rows, so its Phi has
    a zero singular value, with different labels on them (a residual GD cannot fit)."""
    gen = torch.Generator().manual_seed(seed)
    phi = torch.randn(b, n, m, generator=gen, dtype=torch.float64) / m**0.5
    y = torch.randn(b, n, k, generator=gen, dtype=torch.float64)
    if duplicate:
        phi[0, 1] = phi[0, 0]
    theta0 = torch.randn(b, m, k, generator=gen, dtype=torch.float64)
    theta_star = torch.randn(b, m, k, generator=gen, dtype=torch.float64)
    return phi, y, theta0, theta_star, gen


@pytest.mark.parametrize("population", ["exact", "test set"])
def test_rowspace_loop_records_every_step_as_the_parameter_space_loop(population):
    """The row-space GD loop steps in the eigenbasis of its step matrix (one elementwise multiply-add a step) and
    computes its records from mode coordinates, a few steps at a time; every per-step record and the final theta
    equal the parameter-space loop's (Eq. 2 as written) to rounding, over calls of several lengths, for a batch of
    members one of which has a rank-deficient Phi and one-hot-like targets (training accuracy), and when theta is
    changed between calls."""
    from lightning_grok.gd_loops import EvalSpec, LinearGDLoop, RowSpaceGDLoop

    b, n, m, k, lr, wd = 3, 40, 300, 3, 1.0, 1e-3
    phi, y, theta0, theta_star, gen = _members(b, n, m, k, duplicate=True)
    if population == "exact":
        ev = EvalSpec(theta_star=theta_star, sigma_scale=1.0 / m, c=0.01)
    else:
        x_test = torch.randn(b, 200, m, generator=gen, dtype=torch.float64) / m**0.5
        ev = EvalSpec(x_test=x_test, y_test=x_test @ theta_star, c=0.01, surrogate_eps=0.01)
        ev.test_labels = (x_test @ theta_star).argmax(dim=2)
    ev.train_labels = y.argmax(dim=2)
    per_call = 700  # records of 3 members of 40 x 3 coefficients: several record blocks per call
    loops = [cls(phi, y, lr, wd, n, ev, per_call, eval_every=1) for cls in (LinearGDLoop, RowSpaceGDLoop)]
    thetas = [theta0.clone(), theta0.clone()]
    start = 0
    for steps in (64, 700, 5, 700, 331):
        if steps == 5:  # theta changed between calls (as by a restored checkpoint): the loops must follow it
            for th in thetas:
                th.mul_(0.5)
        chunks = [loop.run(th, start, steps) for loop, th in zip(loops, thetas, strict=True)]
        ref, row = chunks
        torch.testing.assert_close(row.train_loss, ref.train_loss, rtol=1e-9, atol=1e-14)
        torch.testing.assert_close(row.test_loss, ref.test_loss, rtol=1e-9, atol=1e-14)
        assert set(row.extras) == set(ref.extras)
        for key, val in ref.extras.items():
            torch.testing.assert_close(row.extras[key], val, rtol=1e-9, atol=1e-14)
        start += steps
    torch.testing.assert_close(thetas[1], thetas[0], rtol=1e-10, atol=1e-12)
    assert ref.train_loss[-1, 0] > 1e-3  # member 0 keeps the residual of its inconsistent duplicate rows
