"""Vectorized seeds: K independent runs batched in one process equal K sequential runs, member by member."""

from __future__ import annotations

import pytest
import torch
from conftest import fit, load

from lightning_grok.config import ConfigError

ARGS = ("optim.weight_decay=1e-3", "trainer.max_steps=3000", "model.width=400", "data.n_train=60")


@pytest.mark.parametrize("kernel", ["parameter", "rowspace"])
def test_members_equal_sequential_runs(tmp_path, kernel):
    _, ens = fit("ridge.yaml", tmp_path / "ens", *ARGS, "seeds=4", f"trainer.kernel={kernel}")
    assert len(ens["members"]) == 4
    for i, member in enumerate(ens["members"]):
        _, single = fit("ridge.yaml", tmp_path / f"s{i}", *ARGS, f"seed={i}", "trainer.kernel=parameter")
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
    _, p = fit("ridge.yaml", tmp_path / "p", *args, "trainer.kernel=parameter")
    _, r = fit("ridge.yaml", tmp_path / "r", *args, "trainer.kernel=rowspace")
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
    _, p = fit("random_features.yaml", tmp_path / "p", *args, "trainer.kernel=parameter")
    _, r = fit("random_features.yaml", tmp_path / "r", *args, "trainer.kernel=rowspace")
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
