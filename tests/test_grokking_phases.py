"""lightning_grok.GrokkingPhases on a LightningModule written here, not taken from the package: its training_step
logs a scripted train metric and its validation_step a scripted val metric, so the steps at which they cross
their thresholds are known, and the callback must report exactly those steps (in optimizer steps).

The script, with the callback's definitions (callbacks/grokking_phases.py; detection.py's t1 and t2):
train metric past its threshold once at step 20 (a dip that does not count), then for good from step 38 on:
t1 = 37, the last logged step not past. Validation every 10 steps; the val metric crosses at step 115, so the
first validation that sees it past is at step 120: t2 = 120, and the crossing lies in (110, 120].
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_grok import GrokkingPhases
from lightning_grok.results import load_run

T1, DIP, T2_CROSS, T2, VAL_EVERY = 37, 20, 115, 120, 10


def loss_train(step: int) -> float:
    """Train loss after ``step`` updates: above 0.01 up to T1 except one dip at DIP, then below."""
    return 0.001 if step == DIP or step > T1 else 1.0 / (1 + step)


def loss_val(step: int) -> float:
    return 0.002 if step >= T2_CROSS else 2.0


def acc_train(step: int) -> float:
    return 1.0 if step == DIP or step > T1 else min(0.98, step / 40)


def acc_val(step: int) -> float:
    return 0.995 if step >= T2_CROSS else 0.1


class Scripted(L.LightningModule):
    """One dummy parameter; logs ``train_fn(step)`` as ``prefix/…`` in training_step (step = the update this batch
    completes, so the value logged is the value after it) and ``val_fn(global_step)`` in validation_step."""

    def __init__(self, train_fn=loss_train, val_fn=loss_val, metric: str = "loss"):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.train_fn, self.val_fn, self.metric = train_fn, val_fn, metric

    def training_step(self, batch, batch_idx):
        self.log(f"train/{self.metric}", self.train_fn(self.global_step + 1))
        return (self.w * batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        self.log(f"val/{self.metric}", self.val_fn(self.global_step))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.ones(10_000, 1)), batch_size=1)

    def val_dataloader(self):
        return DataLoader(TensorDataset(torch.ones(1, 1)), batch_size=1)


def trainer(root: Path, max_steps: int, callback: GrokkingPhases, **kw) -> L.Trainer:
    return L.Trainer(
        max_steps=max_steps,
        val_check_interval=VAL_EVERY,
        check_val_every_n_epoch=None,
        callbacks=[callback],
        logger=kw.pop("logger", False),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(root),
        accelerator="cpu",
        **kw,
    )


def fit(root: Path, max_steps: int = 200, module=None, ckpt: Path | None = None, **cb) -> GrokkingPhases:
    callback = GrokkingPhases(**({"output_dir": root} | cb))
    trainer(root, max_steps, callback).fit(module or Scripted(), ckpt_path=ckpt)
    return callback


def test_loss_phases_are_the_scripted_steps(tmp_path):
    cb = fit(tmp_path, train_threshold=0.01, val_threshold=0.01, mode="min")
    assert (cb.t_overfit, cb.t_generalize) == (T1, T2)
    run = load_run(tmp_path)
    assert run.status == "completed" and run.steps_run == 200
    assert (run.t_overfit, run.t_generalize, run.grokking_time) == (T1, T2, T2 - T1)
    member = run.single
    assert member.t_overfit_status == "reached" and member.t_generalize_status == "reached"
    assert member.final == {"train/loss": pytest.approx(0.001), "val/loss": pytest.approx(0.002)}
    assert member.theory_note and member.exact is None and not member.bounds
    resolution = {"t_overfit": [T1, T1 + 1], "t_generalize": [T2 - VAL_EVERY, T2], "validations": 20}
    assert run.data["resolution"] == resolution
    assert run.config["phases"] == {
        "train_metric": "train/loss",
        "val_metric": "val/loss",
        "train_threshold": 0.01,
        "val_threshold": 0.01,
        "mode": "min",
        "margin": None,
    }


def test_accuracy_phases_are_the_scripted_steps(tmp_path):
    module = Scripted(acc_train, acc_val, metric="acc")
    cb = fit(tmp_path, module=module, train_metric="train/acc", val_metric="val/acc", train_threshold=0.99,
             val_threshold=0.99, mode="max")  # fmt: skip
    run = load_run(tmp_path)
    assert (cb.t_overfit, cb.t_generalize) == (T1, T2) == (run.t_overfit, run.t_generalize)
    assert run.grokking_time == T2 - T1


def test_not_reached_is_said(tmp_path):
    cb = fit(tmp_path, max_steps=100)  # t2 comes at 120
    run = load_run(tmp_path)
    assert cb.t_generalize is None and run.t_overfit == T1 and run.t_generalize is None
    assert run.single.t_generalize_status == "not reached"
    assert any("t_generalize not reached in 100 steps" in note for note in run.single.missing)
    during = fit(tmp_path / "early", max_steps=30)  # after the dip, before t1: the train loss is above again
    assert during.t_overfit is None and load_run(tmp_path / "early").single.t_overfit_status == "not reached"


# the scripted metrics depend on the step alone, so where the dataloader resumes does not matter
@pytest.mark.filterwarnings("ignore:.*dataloader is not resumable")
@pytest.mark.parametrize("stop_at", [20, 30, 80, 120, 125])
def test_resume_equals_an_uninterrupted_run(tmp_path, stop_at):
    """Stop at ``stop_at`` (max_steps), checkpoint, resume in a new Trainer with a new callback to 200 steps."""
    fit(tmp_path / "whole")
    first = tmp_path / "resumed"
    cb = GrokkingPhases(output_dir=first)
    t = trainer(first, stop_at, cb)
    module = Scripted()
    t.fit(module)
    assert load_run(first).steps_run == stop_at
    ckpt = first / "mid.ckpt"
    t.save_checkpoint(ckpt)
    fit(first, max_steps=200, ckpt=ckpt)
    assert load_run(first).data == load_run(tmp_path / "whole").data


def test_a_callback_reused_for_a_new_fit_starts_afresh(tmp_path):
    cb = GrokkingPhases(output_dir=tmp_path, margin=0.25)
    trainer(tmp_path, 1000, cb).fit(Scripted())
    assert (cb.t_overfit, cb.t_generalize) == (T1, T2)
    later = Scripted(val_fn=lambda step: 0.002 if step >= 195 else 2.0)  # t2 = 200 this time
    trainer(tmp_path, 1000, cb).fit(later)  # a new Trainer: global_step starts at 0 again
    run = load_run(tmp_path)
    assert (cb.t_overfit, cb.t_generalize) == (run.t_overfit, run.t_generalize) == (T1, 200)
    assert run.steps_run == 250 and run.data["resolution"]["validations"] == 25


def test_margin_stops_after_t2(tmp_path):
    cb = fit(tmp_path, max_steps=1000, margin=0.25)
    run = load_run(tmp_path)
    stop = T2 + math.ceil(0.25 * T2)  # 150
    assert run.steps_run == stop and run.data["stopped_at"] == stop
    assert (cb.t_overfit, cb.t_generalize) == (T1, T2)


def test_loggers_get_the_summary_and_log_dir_the_file(tmp_path):
    logger = L.pytorch.loggers.CSVLogger(tmp_path, name="csv")
    callback = GrokkingPhases()  # no output_dir: trainer.log_dir
    trainer(tmp_path, 200, callback, logger=logger).fit(Scripted())
    run = load_run(logger.log_dir)
    assert (run.t_overfit, run.t_generalize) == (T1, T2)
    with open(Path(logger.log_dir) / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    summary = next(r for r in rows if r.get("grok/t_generalize"))
    assert float(summary["grok/t_overfit"]) == T1 and float(summary["grok/t_generalize"]) == T2
    assert float(summary["grok/grokking_time"]) == T2 - T1 and float(summary["grok/steps_run"]) == 200


def test_wandb_summary(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = L.pytorch.loggers.WandbLogger(save_dir=str(tmp_path), offline=True, project="grokking_phases_test")
    try:
        trainer(tmp_path, 200, GrokkingPhases(output_dir=tmp_path), logger=logger).fit(Scripted())
        summary = logger.experiment.summary
        assert summary["grok/t_overfit"] == T1 and summary["grok/t_generalize"] == T2
        assert summary["grok/status"] == "completed"
    finally:
        wandb.finish()


def test_interrupted_fit_writes_what_it_measured(tmp_path):
    class Crash(Scripted):
        def training_step(self, batch, batch_idx):
            if self.global_step == 130:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    with pytest.raises(RuntimeError, match="boom"):
        fit(tmp_path, module=Crash())
    run = load_run(tmp_path)
    assert run.status == "interrupted" and (run.t_overfit, run.t_generalize) == (T1, T2) and run.steps_run == 130


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"mode": "maximize"}, ["'mode'", "'maximize'", "'min'", "'max'"]),
        ({"train_threshold": float("nan")}, ["'train_threshold'", "nan", "finite"]),
        ({"val_threshold": "0.1"}, ["'val_threshold'", "'0.1'"]),
        ({"margin": -0.5}, ["'margin'", "-0.5", ">= 0"]),
        ({"train_metric": ""}, ["'train_metric'", "''"]),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, words):
    with pytest.raises(ValueError) as err:
        GrokkingPhases(**kwargs)
    assert all(w in str(err.value) for w in words), str(err.value)


@pytest.mark.parametrize(("kwargs", "name"), [({"val_metric": "val/acc"}, "val/acc"), ({"train_metric": "trn"}, "trn")])
def test_a_metric_that_is_not_logged_is_named_with_those_that_are(tmp_path, kwargs, name):
    with pytest.raises(ValueError) as err:
        fit(tmp_path, **kwargs)
    msg = str(err.value)
    assert f"{name!r}" in msg and "['train/loss', 'val/loss']" in msg and "step 10" in msg, msg
    assert not (tmp_path / "phases.json").exists()


def test_resume_with_other_thresholds_is_refused(tmp_path):
    cb = GrokkingPhases(output_dir=tmp_path)
    t = trainer(tmp_path, 50, cb)
    t.fit(Scripted())
    t.save_checkpoint(tmp_path / "a.ckpt")
    with pytest.raises(ValueError, match="train_threshold=0.01 \\(now 0.1\\)"):
        fit(tmp_path, ckpt=tmp_path / "a.ckpt", train_threshold=0.1)


def test_import_is_cheap_and_lazy():
    import subprocess
    import sys

    code = "import sys, lightning_grok; print(json.dumps(['torch' in sys.modules, 'lightning' in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [False, False]
