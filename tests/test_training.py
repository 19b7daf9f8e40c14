"""Lightning GD runs against the closed form and the paper's bounds (float64, the ridge defaults)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import fit, load

from lightning_grok.experiment import build


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("lam", [1e-3, 1e-4])
def test_measured_phase_times_equal_exact_dynamics(tmp_path, seed, lam):
    built = build(load("ridge.yaml", f"seed={seed}", f"optim.weight_decay={lam}"))
    t2_exact = built.theory.exact_t_generalize
    status, res = fit(
        "ridge.yaml", tmp_path, f"seed={seed}", f"optim.weight_decay={lam}", f"trainer.max_steps={t2_exact + 200}"
    )
    assert status == 0
    assert res["t_overfit"] == res["exact"]["t_overfit"] == built.theory.exact_t_overfit
    assert res["t_generalize"] == res["exact"]["t_generalize"] == t2_exact
    assert res["grokking_time"] == t2_exact - res["t_overfit"] > 0
    if lam == 1e-4:  # the paper's defaults: every bound's hypotheses hold and so does every bound
        verdicts = {name: b["verdict"] for name, b in res["bounds"].items()}
        assert set(verdicts.values()) == {"holds"}, verdicts


def test_hypothesis_not_met_is_reported_as_such(tmp_path):
    """nu^2 = 0.01: m - n = 900 < 8c/(lambda_min(Sigma) nu^2) = 8000, so Thm 4.5 / Eq. (7) do not apply."""
    status, res = fit("ridge.yaml", tmp_path, "model.init_scale=0.01", "trainer.max_steps=3000")
    assert status == 0
    b = res["bounds"]["eq7_t_generalize_lower"]
    assert b["verdict"] == "hypothesis not met"
    failed = [h["statement"] for h in b["hypotheses"] if h["required"] and not h["met"]]
    assert any("lambda_min(Sigma)" in s for s in failed)
    assert b["value"] is not None  # the formula is still evaluated and reported beside the verdict


def test_label_noise_makes_bounds_inapplicable_but_exact_dynamics_still_exact(tmp_path):
    status, res = fit(
        "ridge.yaml", tmp_path, "data.label_noise_std=0.05", "optim.weight_decay=1e-3", "trainer.max_steps=4000"
    )
    assert status == 0
    assert {b["verdict"] for b in res["bounds"].values()} == {"hypothesis not met"}
    assert res["t_generalize"] == res["exact"]["t_generalize"]


def test_zero_teacher_envelopes_of_theorem_4_1_hold(tmp_path):
    """Long enough (12000 steps) that the training-loss envelope falls far below float64's rounding floor."""
    status, res = fit("ridge.yaml", tmp_path, "data.teacher=zero", "optim.weight_decay=1e-3", "trainer.max_steps=12000")
    assert status == 0
    env = res["envelopes"]
    assert set(env) == {"thm41_train_upper", "thm41_test_lower", "thm41_norm_upper"}
    assert all(e["verdict"] == "holds" for e in env.values()), env
    # and a real violation is caught: the same start judged against an envelope 10^4 times too tight
    from lightning_grok.experiment import build
    from lightning_grok.member_phases import MemberPhases

    built = build(load("ridge.yaml", "data.teacher=zero", "optim.weight_decay=1e-3"))
    member = MemberPhases(0.01, 0.01, 0.99, built.theory)
    tight = built.theory.envelopes.train_upper
    built.theory.envelopes.train_upper = lambda t: tight(t) / 1e4
    member.update(
        0, {"train/loss": np.array([float(built.theory.exact.train_loss(0)[0])]), "test/loss": np.array([1.0])}
    )
    assert member.envelope_ratios["thm41_train_upper"] > 1


def test_gd_converges_to_the_closed_form_ridge_solution(tmp_path):
    lam = 1e-2
    cfg = load(
        "ridge.yaml",
        f"optim.weight_decay={lam}",
        "model.width=300",
        "data.label_noise_std=0.1",
        "trainer.max_steps=6000",
        f"output_dir={tmp_path}",
    )
    from lightning_grok.experiment import fit as run_fit

    built = build(cfg)
    run_fit(cfg, "ridge")
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    theta = ckpt["state_dict"]["model.theta"].numpy()
    p = built.problem
    direct = np.linalg.solve(p.phi.T @ p.phi / p.n + lam * np.eye(p.m), p.phi.T @ p.y / p.n)
    np.testing.assert_allclose(theta, direct, rtol=1e-9, atol=1e-12)


def test_two_runs_with_one_seed_are_bit_identical(tmp_path):
    args = ("seed=7", "optim.weight_decay=1e-3", "trainer.max_steps=2500")
    _, a = fit("ridge.yaml", tmp_path / "a", *args)
    _, b = fit("ridge.yaml", tmp_path / "b", *args)
    ta = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    tb = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert ta.keys() == tb.keys()
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    assert a["final"] == b["final"] and a["t_generalize"] == b["t_generalize"]
    _, c = fit("ridge.yaml", tmp_path / "c", "seed=8", *args[1:])
    assert c["final"] != a["final"]


def test_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    args = ("optim.weight_decay=1e-3", "trainer.steps_per_call=500")
    _, whole = fit("ridge.yaml", tmp_path / "whole", *args, "trainer.max_steps=4000")
    _, first = fit("ridge.yaml", tmp_path / "split", *args, "trainer.max_steps=1500")
    assert first["t_generalize"] is None  # interrupted before t2
    _, resumed = fit("ridge.yaml", tmp_path / "split", *args, "trainer.max_steps=4000")
    assert resumed["steps_run"] == 4000
    for key in ("t_overfit", "t_generalize", "grokking_time", "final"):
        assert resumed[key] == whole[key], key


def test_float32_runs_and_agrees_with_float64_to_a_few_steps(tmp_path):
    _, r32 = fit(
        "ridge.yaml", tmp_path / "f32", "trainer.precision=32-true", "optim.weight_decay=1e-3", "trainer.max_steps=3000"
    )
    assert r32["t_generalize"] is not None
    assert abs(r32["t_generalize"] - r32["exact"]["t_generalize"]) <= 5


def test_periodic_checkpoints_follow_gd_steps(tmp_path):
    """trainer.checkpoint_every: a checkpoint each time the GD step passes a multiple of it, written atomically
    over checkpoints/last.ckpt with the previous one kept as last.prev.ckpt."""
    _, res = fit(
        "ridge.yaml",
        tmp_path,
        "optim.weight_decay=1e-3",
        "trainer.steps_per_call=500",
        "trainer.checkpoint_every=1000",
        "trainer.max_steps=2500",
    )
    previous = torch.load(tmp_path / "checkpoints" / "last.prev.ckpt", weights_only=False)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert previous["grok"]["gd_step"] == 2000
    assert last["grok"]["gd_step"] == res["steps_run"] == 2500
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.ckpt", "last.prev.ckpt"]


def test_checkpoints_by_wall_clock_bound_what_a_kill_can_cost(tmp_path):
    """trainer.checkpoint_minutes: a checkpoint whenever that much time has passed, at a chunk boundary;
    without it a run saves once, at its end (so no last.prev.ckpt)."""
    args = ("trainer.steps_per_call=200", "trainer.max_steps=40000")
    _, res = fit("ridge.yaml", tmp_path / "timed", "trainer.checkpoint_minutes=0.002", *args)  # 0.12 s
    previous = torch.load(tmp_path / "timed" / "checkpoints" / "last.prev.ckpt", weights_only=False)
    assert 0 < previous["grok"]["gd_step"] <= res["steps_run"] == 40000
    assert previous["grok"]["gd_step"] % 200 == 0
    fit("ridge.yaml", tmp_path / "untimed", "trainer.checkpoint_minutes=0", *args)
    assert not (tmp_path / "untimed" / "checkpoints" / "last.prev.ckpt").exists()
