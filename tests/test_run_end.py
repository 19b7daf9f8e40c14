"""One place ends a run: ``run_end``'s rule, applied by ``RunControl`` (fit) and by ``batch`` (batched points).
The module and the phase callback only report (step count, divergence, transitions done); a Trainer without
``RunControl`` is told so instead of spinning past ``trainer.max_steps``."""

from __future__ import annotations

import signal

import numpy as np
import pytest
from conftest import fit, load

from lightning_grok.run_end import EndReason, run_end

SMALL = ("model.width=200", "data.n_train=20", "optim.weight_decay=1e-3")


def test_the_rule_and_its_precedence():
    assert run_end(99, 100) is None
    assert run_end(100, 100).reason is EndReason.MAX_STEPS
    assert run_end(50, 100, transitions_done=True).reason is EndReason.TRANSITIONS_DONE
    diverged = run_end(50, 100, diverged_at=17, transitions_done=True)
    assert diverged.reason is EndReason.DIVERGED and diverged.status == "diverged"
    stopped = run_end(100, 100, diverged_at=3, transitions_done=True, stop_signal=signal.SIGINT)
    assert stopped.reason is EndReason.SIGNAL and stopped.signal == signal.SIGINT
    assert stopped.status == "interrupted" and run_end(100, 100).status == "completed"


def _module_and_trainer(tmp_path, callbacks, *overrides):
    from lightning_grok.experiment import build, make_trainer

    cfg = load("ridge.yaml", *SMALL, f"output_dir={tmp_path}", "wandb.mode=disabled", *overrides)
    built = build(cfg)
    return built, make_trainer(cfg, tmp_path, callbacks, None)


def test_a_trainer_without_run_control_is_told_instead_of_running_on(tmp_path):
    built, trainer = _module_and_trainer(tmp_path, [], "trainer.max_steps=300", "trainer.steps_per_call=100")
    with pytest.raises(RuntimeError, match="RunControl"):
        trainer.fit(built.module, datamodule=built.datamodule)
    assert built.module.gd_step == 300  # every planned step ran; the error came at the call after the last


def test_run_control_ends_at_max_steps_and_at_the_transitions(tmp_path):
    from lightning_grok.callbacks.control import RunControl
    from lightning_grok.experiment import phase_callback

    control = RunControl()
    args = ("trainer.max_steps=450", "trainer.steps_per_call=100")
    built, trainer = _module_and_trainer(tmp_path / "max", [control], *args)
    trainer.fit(built.module, datamodule=built.datamodule)
    assert built.module.gd_step == 450 and control.end.reason is EndReason.MAX_STEPS and control.end.gd_step == 450

    # with the phase callback and a stop margin, the end comes from the transitions, at the step a whole fit ends
    args = ("trainer.max_steps=100000", "phases.stop_margin=0.1")
    status, whole = fit("ridge.yaml", tmp_path / "fit", *SMALL, *args)
    assert status == 0 and whole["steps_run"] < 100000
    cfg = load("ridge.yaml", *SMALL, *args, f"output_dir={tmp_path / 'parts'}", "wandb.mode=disabled")
    from lightning_grok.experiment import build, make_trainer

    built = build(cfg)
    phases = phase_callback(cfg, built, tmp_path / "parts", {})
    control = RunControl(phases=phases)
    trainer = make_trainer(cfg, tmp_path / "parts", [phases, control], None)
    trainer.fit(built.module, datamodule=built.datamodule)
    assert control.end.reason is EndReason.TRANSITIONS_DONE and phases.transitions_done()
    assert built.module.gd_step == whole["steps_run"] == control.end.gd_step
    t1, t2 = phases.members[0].transition_times()
    assert (t1, t2) == (whole["t_overfit"], whole["t_generalize"])


def test_the_phase_callback_reads_the_module_and_never_writes_it(tmp_path):
    from lightning_grok.callbacks.control import RunControl
    from lightning_grok.experiment import phase_callback

    built, _ = _module_and_trainer(tmp_path, [], "trainer.max_steps=600")
    module = built.module
    phases = phase_callback(built.cfg, built, tmp_path, {})
    from lightning_grok.experiment import make_trainer

    trainer = make_trainer(built.cfg, tmp_path, [phases, RunControl(phases=phases)], None)

    def public():
        return {k for k in vars(module) if not k.startswith("_")}  # Lightning adds private ones (_hparams)

    before = public()
    trainer.fit(module, datamodule=built.datamodule)
    assert public() == before and "last_chunk" not in before  # nothing added: the records come as outputs
    assert module.log_steps is module.plan.log_steps
    assert np.array_equal(phases.schedule, module.plan.log_steps)
    assert phases.curves["step"] == [int(s) for s in module.plan.log_steps if s < 600]
