"""Mixed precision on the autograd path goes through Lightning's precision plugin: with 16-mixed the
GradScaler unscales every gradient before the GD step, skips steps whose gradients overflow, and updates
its scale. CPU autocast in float16 with a CPU GradScaler is what Lightning builds for CUDA, minus the GPU."""

from __future__ import annotations

import pytest
import torch
from conftest import load
from lightning.pytorch.plugins.precision import MixedPrecision

STEPS = 5
# the two-layer network of Sec. 5.3, shrunk; trained by autograd (no fused GD loop for mixed precision)
SMALL = ("model.width=200", f"trainer.max_steps={STEPS}", f"trainer.steps_per_call={STEPS}", "data.teacher=relu")


def _train(tmp_path, precision: str, scaler: torch.amp.GradScaler | None = None):
    from lightning_grok.callbacks.control import RunControl
    from lightning_grok.experiment import build, make_trainer

    cfg = load("two_layer.yaml", f"trainer.precision={precision}", *SMALL)
    built = build(cfg)
    before = [p.detach().clone() for p in built.module.model.parameters()]
    plugins = [MixedPrecision("16-mixed", "cpu", scaler=scaler)] if scaler is not None else None
    trainer = make_trainer(cfg, tmp_path, [RunControl()], None, plugins=plugins)  # RunControl ends the run
    trainer.fit(built.module, datamodule=built.datamodule)
    assert not built.module.uses_linear_loop and built.module.gd_step == STEPS
    after = [p.detach().clone() for p in built.module.model.parameters()]
    return before, after


def test_16_mixed_gd_steps_equal_32_true_steps_and_the_scale_grows(tmp_path):
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1)
    b32, a32 = _train(tmp_path / "f32", "32-true")
    b16, a16 = _train(tmp_path / "f16", "16-mixed", scaler)
    for p0, p1, q0, q1 in zip(b32, a32, b16, a16, strict=True):
        assert torch.equal(p0, q0)  # one seed, one initialization
        step32, step16 = p1 - p0, q1 - q0
        assert step32.norm() > 0
        # float16 forward passes round to ~1e-3; an unscaled step would be 2**10 times too long
        assert (step16 - step32).norm() <= 2e-2 * step32.norm()
    assert scaler.get_scale() == 2.0 ** (10 + STEPS)  # grown once per successful step


def test_16_mixed_skips_steps_whose_scaled_gradients_overflow(tmp_path):
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**80, growth_interval=1000)
    before, after = _train(tmp_path, "16-mixed", scaler)
    assert all(torch.equal(p0, p1) for p0, p1 in zip(before, after, strict=True))  # every step skipped
    assert scaler.get_scale() == pytest.approx(2.0 ** (80 - STEPS))  # backed off once per overflow
