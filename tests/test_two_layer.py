"""Fully trained two-layer networks (Sec. 5.3): GD on both layers, measured times, no bound claimed."""

from __future__ import annotations

import json

import torch
from conftest import fit, load

from lightning_grok.experiment import build

SMALL = ("model.width=64", "data.n_test=200", "trainer.precision=64-true")


def test_gd_is_eq2_on_both_layers(tmp_path):
    """Lightning's path equals theta <- theta - eta (grad L_n + lambda theta) written out by hand."""
    lr, lam, steps = 0.05, 0.1, 40
    args = (*SMALL, "data.teacher=relu", f"optim.lr={lr}", f"optim.weight_decay={lam}", f"trainer.max_steps={steps}")
    built = build(load("two_layer.yaml", *args))
    w, a = built.model.weight.detach().clone(), built.model.a.detach().clone()
    t = built.datamodule.tensors
    losses = []
    for _ in range(steps):
        w.requires_grad_(True)
        a.requires_grad_(True)
        loss = 0.5 * (torch.relu(t.x_train @ w.T) @ a - t.y_train).square().sum() / t.n_train  # Eq. (1) L_n
        losses.append(float(loss.detach()))
        gw, ga = torch.autograd.grad(loss, (w, a))
        with torch.no_grad():
            w = w - lr * (gw + lam * w)
            a = a - lr * (ga + lam * a)
    _, res = fit("two_layer.yaml", tmp_path, *args)
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    torch.testing.assert_close(state["model.weight"], w, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(state["model.a"], a, rtol=1e-12, atol=1e-14)
    assert abs(res["final"]["train/loss"] - losses[-1]) <= 1e-12 * max(1.0, losses[-1])


def test_zero_teacher_run_reports_measured_times_and_no_bound(tmp_path):
    status, res = fit(
        "two_layer.yaml", tmp_path, *SMALL, "optim.lr=0.02", "optim.weight_decay=0.05", "trainer.max_steps=3000"
    )
    assert status == 0
    assert res["exact"] is None and res["bounds"] == {}
    assert "no closed form" in res["theory_note"] or "not linear" in res["theory_note"]
    assert res["t_overfit"] is not None and res["t_generalize"] is not None
    assert res["t_generalize"] >= res["t_overfit"]
    on_disk = json.loads((tmp_path / "phases.json").read_text())
    assert on_disk["t_generalize"] == res["t_generalize"]


def test_minibatch_sgd_is_seeded(tmp_path):
    args = (
        *SMALL,
        "data.teacher=relu",
        "optim.name=sgd",
        "optim.lr=0.05",
        "optim.batch_size=10",
        "trainer.max_steps=200",
    )
    _, a = fit("two_layer.yaml", tmp_path / "a", *args)
    _, b = fit("two_layer.yaml", tmp_path / "b", *args)
    assert a["final"] == b["final"]
    _, c = fit("two_layer.yaml", tmp_path / "c", *args, "seed=1")
    assert c["final"] != a["final"]
