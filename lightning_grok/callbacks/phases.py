"""PhaseTransitionCallback: hands each chunk of per-step records to the members' measurements
(``member_phases.MemberPhases``: t1, t2, envelopes, exact times and bounds), logs curves on a schedule,
says when the transitions are done (``transitions_done``: ``callbacks.control.RunControl`` ends the run by it),
and hands the result to ``results`` (phases.json) and ``wandb_theory`` (W&B).

It reads the per-step records of each call of the GD loop (``GrokkingModule.training_step`` returns them as
``{"chunk": Chunk}``; Lightning passes that to ``on_train_batch_end`` as ``outputs``), so t1 and t2 are exact to
the step however sparsely curves are logged. It reads the module and never writes it. Loss curves go to the loggers
on a geometric schedule of ``log_points`` steps (a million-step run does not write a million rows); the
GD loops evaluate the test side at those steps even when they evaluate it sparsely (``Chunk.evaluated``,
NaN elsewhere: the detector reads NaN as "threshold not reached", and the GD loops evaluate every step of
a block where a threshold is crossed, so t2 stays exact).
Its whole state is in Lightning checkpoints: a resumed run keeps what it measured.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from lightning_grok import wandb_theory
from lightning_grok.atomic import atomic_write_json
from lightning_grok.member_phases import MemberPhases, log_schedule
from lightning_grok.results import flat_summary, format_run_table, parse, run_result
from lightning_grok.theory.run_theory import RunTheory


class PhaseTransitionCallback(Callback):
    """``theory`` is one RunTheory (or None) per member (one per seed); a single run has a list of one."""

    def __init__(
        self,
        eps: float,
        c: float,
        tau: float = 0.99,
        theory: RunTheory | None | list[RunTheory | None] = None,
        output_dir: str | Path | None = None,
        config: dict | None = None,
        max_steps: int = 0,
        log_points: int = 400,
        stop_margin: float | None = None,
        theory_note: str = "",
        log_steps: np.ndarray | None = None,
    ):
        """``log_steps``: the steps whose curves are logged (the run's ``RunPlan.log_steps``, whose test side the GD
        loops evaluate); None: the schedule of ``max_steps`` and ``log_points`` (``member_phases.log_schedule``),
        for callers without a plan."""
        self.eps, self.c, self.tau = eps, c, tau
        theories = theory if isinstance(theory, list) else [theory]
        self.members = [MemberPhases(eps, c, tau, th, theory_note=theory_note) for th in theories]
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.config = config or {}
        self.stop_margin = stop_margin
        self.schedule = log_schedule(max_steps, log_points) if log_steps is None else log_steps
        self.curves: dict[str, list[float]] = {}
        self.result: dict | None = None

    @property
    def final(self) -> dict[str, float]:
        """Member 0's latest values (the progress bar's)."""
        return self.members[0].final

    # ---- per chunk -----------------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        eps = torch.finfo(next(pl_module.parameters()).dtype).eps
        for member in self.members:
            member.float_eps = eps

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        chunk = outputs.get("chunk") if isinstance(outputs, dict) else None
        if chunk is None or len(chunk) == 0:
            return
        arrays = {"train/loss": chunk.train_loss, "test/loss": chunk.test_loss}
        arrays.update({_metric_name(k): v for k, v in chunk.extras.items()})
        arrays = {k: v.detach().double().cpu().numpy() for k, v in arrays.items()}  # each (K, B)
        for b, member in enumerate(self.members):
            member.update(chunk.start, {k: v[:, b] for k, v in arrays.items()})
        evaluated = None if chunk.evaluated is None else chunk.evaluated.all(dim=1).cpu().numpy()  # (K,) rows
        self._log_scheduled(trainer, chunk.start, len(chunk), arrays, evaluated)

    def _log_scheduled(
        self,
        trainer: L.Trainer,
        start: int,
        k: int,
        arrays: dict[str, np.ndarray],
        evaluated: np.ndarray | None = None,
    ) -> None:
        """Curves at the scheduled steps: the value (one run) or the members' mean and std (several seeds).
        Test-side values of a step the GD loop did not evaluate (``evaluated``) are left out of the loggers' row
        and stored as NaN in the curves (the GD loops evaluate every scheduled step, so this does not happen in
        ``experiment.fit``). The loggers' rows also carry the exact dynamics at the same steps and the step
        metric ``gd_step`` (``wandb_theory``); curves.json gets the exact dynamics at the end of the run
        (``curves_with_exact``)."""
        lo, hi = np.searchsorted(self.schedule, [start, start + k])
        exact = {}
        if trainer.loggers and trainer.is_global_zero and hi > lo:
            exact = wandb_theory.exact_curves([m.theory for m in self.members], self.schedule[lo:hi])
        for j, step in enumerate(self.schedule[lo:hi]):
            i = int(step) - start
            skip_test = evaluated is not None and not evaluated[i]
            row = {}
            for key, v in arrays.items():
                if key == "param_norm2":
                    continue
                row[key] = float(v[i].mean())
                if v.shape[1] > 1:
                    row[f"{key}_std"] = float(v[i].std())
            for key, val in row.items():
                self.curves.setdefault(key, []).append(val)
            self.curves.setdefault("step", []).append(int(step))
            if skip_test:
                row = {key: val for key, val in row.items() if not key.startswith("test/")}
            if not trainer.loggers:
                continue
            row |= {key: float(v[j]) for key, v in exact.items()}
            row[wandb_theory.STEP_METRIC] = int(step)
            wandb_theory.declare_curves(trainer, list(row))
            for logger in trainer.loggers:
                # W&B plots every curve against gd_step (in the row); WandbLogger adds a second step key,
                # trainer/global_step, only when given a step, so it gets none
                logger.log_metrics(row, step=None if isinstance(logger, WandbLogger) else int(step))

    def transitions_done(self) -> bool:
        """Every member has both t1 and t2 and ran ``stop_margin`` * t2 steps past t2 (never without a margin): the
        run may end (``run_end``)."""
        if self.stop_margin is None:
            return False
        steps = self.members[0].steps_run
        for member in self.members:
            t1, t2 = member.transition_times()
            if t1 is None or t2 is None or steps < t2 + math.ceil(self.stop_margin * t2):
                return False
        return True

    def phase(self) -> str:
        return self.members[0].detector.phase()

    # ---- end of fit ----------------------------------------------------------------------------
    def summarize(
        self, status: str = "completed", diverged_at: int | None = None, member_extras: list[dict] | None = None
    ) -> dict:
        """phases.json (``results.run_result``): each member's times, exact times and bounds, plus their mean and
        spread. ``member_extras``: further fields per member (e.g. how the population loss was measured)."""
        members = [m.summarize(self.eps, self.c, self.tau) for m in self.members]
        for member, extra in zip(members, member_extras or [{}] * len(members), strict=True):
            member.update(extra)
        return run_result(status, diverged_at, members, self.config)

    @rank_zero_only
    def publish(self, trainer: L.Trainer, res: dict) -> None:
        """phases.json and curves.json (atomically), the table on stdout, then W&B: the summary, the theory
        tables, the measured-versus-exact figure and the results artifact (``wandb_theory.log_results``)."""
        theories = [m.theory for m in self.members]
        curves = self.curves_with_exact(theories)
        if self.output_dir is not None:
            atomic_write_json(self.output_dir / "phases.json", res)
            atomic_write_json(self.output_dir / "curves.json", curves)
        result = parse(res, self.output_dir / "phases.json" if self.output_dir is not None else None)
        print(format_run_table(result))
        wandb_theory.log_results(trainer, result, flat_summary(result), curves, self.output_dir)

    def curves_with_exact(self, theories: list[RunTheory | None]) -> dict[str, list]:
        """The logged curves plus, where every member has a closed form, the exact dynamics at the same steps
        (``exact/train/loss``, ``exact/test/loss``, Eqs. (3)-(5)), so readers draw them without rebuilding the
        data or the theory."""
        exact = wandb_theory.exact_curves(theories, np.asarray(self.curves.get("step", []), dtype=np.int64))
        return self.curves | {key: [float(v) for v in values] for key, values in exact.items()}

    # ---- checkpointing -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"members": [m.state_dict() for m in self.members], "curves": self.curves}

    def load_state_dict(self, state_dict: dict) -> None:
        for member, state in zip(self.members, state_dict["members"], strict=True):
            member.load_state_dict(state)
        self.curves = state_dict["curves"]


def _metric_name(extra: str) -> str:
    return {"train_acc": "train/acc", "test_acc": "test/acc", "test_surrogate_acc": "test/surrogate_acc"}.get(
        extra, extra
    )
