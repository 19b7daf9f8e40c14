"""GrokkingPhases: the grokking phase times t1 and t2 of any LightningModule, from the metrics it already logs.

Times are optimizer steps, ``trainer.global_step``. The value of a metric at step s is the one the callback reads
from ``trainer.callback_metrics`` (Lightning's public dict of logged metrics) once s optimizer steps are done:

* the train metric after each training batch that advanced ``global_step`` (``on_train_batch_end``): log it in
  ``training_step`` on every step (``self.log(name, value)``, Lightning's default there is ``on_step=True``);
* the val metric after each validation run (``on_validation_end``), at the step where validation ran.

A value is *past* its threshold when ``value <= threshold`` (``mode="min"``, losses) or ``value >= threshold``
(``mode="max"``, accuracies); NaN is never past. With the definitions of ``detection.py`` (Sec. 2 of the paper:
t1 = max{t : L_n(theta_t) >= eps}, t2 = min{t : L(theta_t) <= c}) read on the logged steps:

    t1 = the last logged step at which the train metric is not past its threshold, once every later logged value
         is past it (None, "not reached", while the latest one is not past; None, "never above", when the first
         logged value is already past);
    t2 = the first step at which a validation run found the val metric past its threshold;
    grokking time = t2 - t1.

At the resolution the metrics are logged: the train metric first stays past at the next logged step after t1
(``resolution.t_overfit`` = [t1, that step]), and the val metric crossed somewhere after the previous validation
(``resolution.t_generalize`` = [previous validation step, t2]). Validate every step to make t2 exact. A metric
that ``training_step`` computes from the batch's forward pass describes the parameters before that step's update,
so it lags the clock by one step (immaterial at grokking scales; the framework's own GD loops are exact).

The result is a ``phases.json`` of the package's schema (``results.run_result``; ``results.load_run`` reads it),
written atomically by rank zero to ``output_dir`` (default ``trainer.log_dir``) when training ends, or with
``status: interrupted`` when it ends by an exception. Every logger gets ``grok/t_overfit``, ``grok/t_generalize``,
``grok/grokking_time`` and ``grok/steps_run`` (``log_metrics``), and a W&B run the whole summary
(``results.flat_summary``). With ``margin`` = f, training stops f * t2 steps after t2 once t1 and t2 are both found
(the framework's ``phases.stop_margin``). The state is saved in checkpoints, so a resumed fit ends with the
result of an uninterrupted one; a fit that starts at step 0 starts afresh. Under DDP, log both metrics with
``sync_dist=True`` so that every rank reads the same values (the ranks decide the margin stop together).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn

from lightning_grok.atomic import atomic_write_json, json_safe
from lightning_grok.detection import FirstTrue, LastTrue
from lightning_grok.results import TIMES, flat_summary, parse, run_result

MODES = {"min": "value <= threshold (losses)", "max": "value >= threshold (accuracies)"}
THEORY_NOTE = (
    "GrokkingPhases: times read off the model's own logged metrics; no closed form or bound applies to this run"
)


class GrokkingPhases(Callback):
    """t1 (the train metric crosses ``train_threshold`` for good) and t2 (the val metric crosses ``val_threshold``)
    in optimizer steps, for any LightningModule that logs the two metrics; see the module docstring.

    Args:
        train_metric: name of the train metric as logged (a key of ``trainer.callback_metrics``), e.g. "train/loss".
        val_metric: name of the val metric, e.g. "val/loss".
        train_threshold: threshold of t1 (the paper's eps for a loss, tau for an accuracy).
        val_threshold: threshold of t2 (the paper's c for a loss, tau for an accuracy).
        mode: "min" (a loss: past when value <= threshold) or "max" (an accuracy: past when value >= threshold).
        margin: stop training ``margin * t2`` steps after t2 once t1 and t2 are both found; None never stops.
        output_dir: where phases.json goes; None: ``trainer.log_dir``.
        config: further settings recorded in phases.json under ``config`` (the module's ``hparams`` are added).
    """

    def __init__(
        self,
        train_metric: str = "train/loss",
        val_metric: str = "val/loss",
        train_threshold: float = 0.01,
        val_threshold: float = 0.01,
        mode: str = "min",
        margin: float | None = None,
        output_dir: str | os.PathLike | None = None,
        config: dict | None = None,
    ):
        for arg, name in (("train_metric", train_metric), ("val_metric", val_metric)):
            if not isinstance(name, str) or not name:
                raise ValueError(
                    f"GrokkingPhases: invalid value for '{arg}': {name!r} (allowed: the non-empty name of a metric "
                    "the module logs with self.log, e.g. 'train/loss')"
                )
        if mode not in MODES:
            allowed = "; ".join(f"{m!r}: past when {rule}" for m, rule in MODES.items())
            raise ValueError(f"GrokkingPhases: invalid value for 'mode': {mode!r} (allowed: {allowed})")
        for arg, value in (("train_threshold", train_threshold), ("val_threshold", val_threshold)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"GrokkingPhases: invalid value for '{arg}': {value!r} (allowed: a finite number)")
        if margin is not None and (
            isinstance(margin, bool) or not isinstance(margin, int | float) or not math.isfinite(margin) or margin < 0
        ):
            raise ValueError(
                f"GrokkingPhases: invalid value for 'margin': {margin!r} (allowed: None, never stop, or a number >= 0,"
                " the fraction of t2 to train past t2)"
            )
        self.train_metric, self.val_metric, self.mode = train_metric, val_metric, mode
        self.train_threshold, self.val_threshold = float(train_threshold), float(val_threshold)
        self.margin = None if margin is None else float(margin)
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.extra_config = dict(config or {})
        self._reset()
        self.result: dict | None = None  # the phases.json document, once written
        self._dir: Path | None = None

    def _reset(self) -> None:
        self.overfit = LastTrue()  # predicate: the train metric is not past its threshold
        self.generalize = FirstTrue()  # predicate: the val metric is past its threshold
        self.train_step: int | None = None  # the latest logged step of each metric
        self.val_step: int | None = None
        self.first_past_train: int | None = None  # first logged step of the current run of past train values
        self.t2_previous_val: int | None = None  # the validation step before t2
        self.final: dict[str, float] = {}
        self.val_runs = 0
        self.stopped_at: int | None = None

    # ---- the Callback's identity in checkpoints: one entry per pair of metrics ---------------------------------
    @property
    def state_key(self) -> str:
        return f"GrokkingPhases[train_metric={self.train_metric!r}, val_metric={self.val_metric!r}]"

    @property
    def settings(self) -> dict[str, Any]:
        return {
            "train_metric": self.train_metric,
            "val_metric": self.val_metric,
            "train_threshold": self.train_threshold,
            "val_threshold": self.val_threshold,
            "mode": self.mode,
            "margin": self.margin,
        }

    def _past(self, value: float, threshold: float) -> bool:
        return value <= threshold if self.mode == "min" else value >= threshold  # NaN: False either way

    def _read(self, trainer: L.Trainer, name: str) -> float | None:
        value = trainer.callback_metrics.get(name)
        if value is None:
            return None
        if hasattr(value, "numel") and value.numel() != 1:
            raise ValueError(
                f"GrokkingPhases: metric {name!r} holds {value.numel()} numbers (allowed: a scalar, as self.log logs)"
            )
        return float(value)

    # ---- measuring -------------------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":  # trainer.log_dir broadcasts: every rank asks, rank zero writes
            self._dir = (
                self.output_dir if self.output_dir is not None else Path(trainer.log_dir or trainer.default_root_dir)
            )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step == 0:  # a fresh fit (not resumed): forget what an earlier fit measured
            self._reset()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        # gradient accumulation: no optimizer step since the last reading
        if self.train_step is None or step > self.train_step:
            value = self._read(trainer, self.train_metric)
            if value is not None:  # a missing name is reported at the first validation
                self._record_train(step, value)
        self._maybe_stop(trainer)

    def _record_train(self, step: int, value: float) -> None:
        not_past = not self._past(value, self.train_threshold)
        self.overfit.update(step, np.array([not_past]))
        if not_past:
            self.first_past_train = None
        elif self.first_past_train is None:
            self.first_past_train = step
        self.train_step = step
        self.final[self.train_metric] = value

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        step = trainer.global_step
        value = self._read(trainer, self.val_metric)
        if self.val_step is None:  # the first validation: training_step has logged the train metric by now
            if value is None:
                self._missing_metric(trainer, step, "val_metric")
            if self.train_step is None and step > 0:
                self._missing_metric(trainer, step, "train_metric")
        # skip a value not logged this time, or a validation again at a step already measured (a resumed fit)
        if value is not None and (self.val_step is None or step > self.val_step):
            self._record_val(step, value)
        self._maybe_stop(trainer)

    def _record_val(self, step: int, value: float) -> None:
        self.val_runs += 1
        past = self._past(value, self.val_threshold)
        if past and self.generalize.time is None:
            self.t2_previous_val = self.val_step
        self.generalize.update(step, np.array([past]))
        self.val_step = step
        self.final[self.val_metric] = value

    def _missing_metric(self, trainer: L.Trainer, step: int, arg: str) -> None:
        name, where = (
            (self.val_metric, "validation_step or on_validation_epoch_end")
            if arg == "val_metric"
            else (self.train_metric, "training_step, on every step")
        )
        logged = sorted(trainer.callback_metrics)
        raise ValueError(
            f"GrokkingPhases: invalid value for '{arg}': {name!r} was not logged by the first validation (step {step});"
            f" the logged metrics are {logged} (allowed: one of them, or log {name!r} with self.log in {where})"
        )

    def _maybe_stop(self, trainer: L.Trainer) -> None:
        """Stop ``margin * t2`` steps after t2 once t1 and t2 are known. Every rank calls this at the same points
        and they decide together (a collective under DDP, where unsynced metrics may differ between ranks): one
        rank stopping alone would leave the others waiting."""
        if self.margin is None:
            return
        t1, t2 = self.overfit.time, self.generalize.time
        done = t1 is not None and t2 is not None and trainer.global_step >= t2 + math.ceil(self.margin * t2)
        if trainer.strategy.reduce_boolean_decision(done, all=False) and not trainer.should_stop:
            trainer.should_stop = True
            self.stopped_at = trainer.global_step

    # ---- the result ------------------------------------------------------------------------------------------
    @property
    def t_overfit(self) -> int | None:
        return self.overfit.time

    @property
    def t_generalize(self) -> int | None:
        return self.generalize.time

    def summarize(self, trainer: L.Trainer, pl_module: L.LightningModule, status: str = "completed") -> dict:
        """The phases.json document (``results.run_result``) of what was measured so far."""
        t1, t2 = self.overfit.time, self.generalize.time
        steps = int(trainer.global_step)
        missing = []
        if t1 is None:
            if self.train_step is None:
                missing.append(f"t_overfit: {self.train_metric!r} was never logged in training_step")
            else:
                missing.append(f"t_overfit not reached in {steps} steps ({self.overfit.status})")
        if t2 is None:
            if self.val_runs == 0:
                missing.append("t_generalize: no validation ran (no val_dataloader, or none within the run)")
            else:
                missing.append(f"t_generalize not reached in {steps} steps ({self.val_runs} validations)")
        member = {
            "steps_run": steps,
            "t_overfit": t1,
            "t_generalize": t2,
            "grokking_time": None if t1 is None or t2 is None else t2 - t1,
            "t_overfit_status": self.overfit.status,
            "t_generalize_status": self.generalize.status,
            "final": dict(self.final),
            "missing": missing,
            "exact": None,
            "bounds": {},
            "envelopes": {},
            "theory_note": THEORY_NOTE,
            "resolution": {
                "t_overfit": None if t1 is None else [t1, self.first_past_train],
                "t_generalize": None if t2 is None else [self.t2_previous_val, t2],
                "validations": self.val_runs,
            },
            "stopped_at": self.stopped_at,
        }
        config = {"callback": "lightning_grok.GrokkingPhases", "phases": self.settings}
        hparams = dict(getattr(pl_module, "hparams", {}) or {})
        if hparams:
            config["hparams"] = _plain(hparams)
        if self.extra_config:
            config |= _plain(self.extra_config)
        config["trainer"] = {"max_steps": trainer.max_steps}
        return run_result(status, None, [member], config)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.train_step is None and trainer.global_step > 0:
            rank_zero_warn(
                f"GrokkingPhases: {self.train_metric!r} was never found in trainer.callback_metrics after a training "
                f"step; the logged metrics are {sorted(trainer.callback_metrics)}"
            )
        self._publish(trainer, self.summarize(trainer, pl_module, "completed"), log=True)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # a wrong metric name is the user's to fix: nothing was measured worth keeping
        if isinstance(exception, ValueError) and str(exception).startswith("GrokkingPhases:"):
            return
        if self._dir is not None and (self.train_step is not None or self.val_step is not None):
            self._publish(trainer, self.summarize(trainer, pl_module, "interrupted"), log=False)

    @rank_zero_only
    def _publish(self, trainer: L.Trainer, doc: dict, log: bool) -> None:
        """phases.json (atomic), then the loggers: ``grok/*`` numbers as metrics, the W&B summary."""
        self.result = doc
        path = (self._dir or Path(trainer.default_root_dir)) / "phases.json"
        atomic_write_json(path, doc)
        summary = flat_summary(parse(doc, path))
        t1, t2 = doc["t_overfit"], doc["t_generalize"]
        rank_zero_info(
            f"GrokkingPhases: t1 = {t1}, t2 = {t2}, grokking time = {doc['grokking_time']} steps "
            f"({self.train_metric}, {self.val_metric}, mode {self.mode}); wrote {path}"
        )
        if not log:
            return
        numbers = {k: float(v) for k, v in summary.items() if k.startswith("grok/") and _number(v)}
        keep = {f"grok/{k}" for k in TIMES} | {"grok/steps_run"}
        for logger in trainer.loggers:
            logger.log_metrics({k: v for k, v in numbers.items() if k in keep}, step=trainer.global_step)
            if _is_wandb(logger):
                try:
                    logger.experiment.summary.update({k: v for k, v in summary.items() if v is not None})
                except Exception as exc:  # noqa: BLE001 - the file is written; W&B holds a copy
                    rank_zero_warn(f"GrokkingPhases: the W&B summary was not updated: {exc}")

    # ---- checkpoints ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "overfit": self.overfit.state_dict(),
            "generalize": self.generalize.state_dict(),
            "train_step": self.train_step,
            "val_step": self.val_step,
            "first_past_train": self.first_past_train,
            "t2_previous_val": self.t2_previous_val,
            "final": dict(self.final),
            "val_runs": self.val_runs,
            "stopped_at": self.stopped_at,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("settings", {})
        changed = [
            f"{k}={saved[k]!r} (now {v!r})"
            for k, v in self.settings.items()
            if k in ("train_threshold", "val_threshold", "mode") and k in saved and saved[k] != v
        ]
        if changed:
            raise ValueError(
                "GrokkingPhases: the checkpoint was measured with " + ", ".join(changed) + " (allowed on resume: the "
                "same thresholds and mode; only margin and output_dir may change)"
            )
        self.overfit.load_state_dict(state_dict["overfit"])
        self.generalize.load_state_dict(state_dict["generalize"])
        self.train_step, self.val_step = state_dict["train_step"], state_dict["val_step"]
        self.first_past_train = state_dict["first_past_train"]
        self.t2_previous_val = state_dict["t2_previous_val"]
        self.final = dict(state_dict["final"])
        self.val_runs = state_dict["val_runs"]
        self.stopped_at = state_dict["stopped_at"]


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _plain(value: Any) -> Any:
    """``value`` as JSON: dicts, lists, strings, numbers, booleans and null (``atomic.json_safe`` for numpy, torch and
    paths); anything else as its repr."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    value = json_safe(value)
    return value if value is None or isinstance(value, str | int | float | bool | list | dict) else repr(value)


def _is_wandb(logger: Any) -> bool:
    from lightning.pytorch.loggers import WandbLogger

    return isinstance(logger, WandbLogger)
