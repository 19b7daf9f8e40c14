"""PhaseTransitionCallback: measures t1, t2 and the grokking time of every run while it trains, and
checks them against the exact dynamics and the paper's bounds (Thm 4.1 envelopes, Eqs. 6-8).

It reads the per-step records (``GrokkingModule.last_chunk``) after each call of the training kernel,
so t1 and t2 are exact to the step however sparsely curves are logged. Loss curves go to the loggers
on a geometric schedule of ``log_points`` steps (a million-step run does not write a million rows); the
kernels evaluate the test side at those steps even when they evaluate it sparsely (``Chunk.evaluated``,
NaN elsewhere: the detector reads NaN as "threshold not reached", and the kernels evaluate every step of
a block where a threshold is crossed, so t2 stays exact).
Its whole state is in Lightning checkpoints: a resumed run keeps what it measured.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

from lightning_grok import wandb_theory
from lightning_grok.detection import PhaseDetector
from lightning_grok.results import flat_summary, format_run_table, run_result
from lightning_grok.theory.report import Theory
from lightning_grok.tracking import atomic_write_json

ENVELOPE_RTOL = 1e-9  # float rounding allowance when comparing a measured curve with an envelope


def log_schedule(max_steps: int, points: int) -> np.ndarray:
    """Steps 0, 1, 2, ... then geometrically spaced up to max_steps - 1: about ``points`` steps."""
    if max_steps <= points:
        return np.arange(max_steps)
    geo = np.geomspace(1, max_steps - 1, num=points)
    return np.unique(np.concatenate([[0], np.round(geo).astype(np.int64)]))


class MemberPhases:
    """What one run (one ensemble member) measured: its detector, envelope checks and final values."""

    def __init__(
        self,
        eps: float,
        c: float,
        tau: float,
        theory: Theory | None,
        float_eps: float = 2.0**-52,
        theory_note: str = "",
    ):
        self.theory = theory
        self.theory_note = theory_note or "no closed form or bound applies to this run; measured times only"
        self.float_eps = float_eps  # machine epsilon of the run's dtype
        self.detector = PhaseDetector(eps, c, tau)
        self.final: dict[str, float] = {}
        self.envelope_ratios: dict[str, float] = {}
        self.steps_run = 0

    def update(self, start: int, arrays: dict[str, np.ndarray]) -> None:
        """``arrays``: this member's per-step values, each of shape (K,)."""
        self.detector.update(
            start, arrays["train/loss"], arrays["test/loss"], arrays.get("train/acc"), arrays.get("test/acc")
        )
        self._check_envelopes(start, arrays)
        self.steps_run = start + len(arrays["train/loss"])
        self.final = {key: float(v[-1]) for key, v in arrays.items()}

    def _check_envelopes(self, start: int, arrays: dict[str, np.ndarray]) -> None:
        if self.theory is None or self.theory.envelopes is None:
            return
        env, t = self.theory.envelopes, np.arange(start, start + len(arrays["train/loss"]))
        # A computed loss cannot fall below the rounding of its terms (residuals of size eps * ||theta0||),
        # while an upper envelope keeps shrinking to 1e-300: allow that floor so only real violations count.
        floor = (64 * self.float_eps) ** 2 * self.theory.quantities.theta0_norm2
        checks = {
            "thm41_train_upper": (arrays["train/loss"], env.train_upper(t) + floor * self.theory.quantities.L, "upper"),
            "thm41_test_lower": (arrays["test/loss"], env.test_lower(t), "lower"),
        }
        if "param_norm2" in arrays:
            checks["thm41_norm_upper"] = (arrays["param_norm2"], env.norm_upper(t) + floor, "upper")
        for name, (measured, bound, side) in checks.items():
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = measured / bound
            ratio = ratio[np.isfinite(ratio)]
            if not len(ratio):
                continue
            worst = float(ratio.max()) if side == "upper" else float(ratio.min())
            prev = self.envelope_ratios.get(name)
            pick = max if side == "upper" else min
            self.envelope_ratios[name] = worst if prev is None else pick(prev, worst)

    def transition_times(self) -> tuple[int | None, int | None]:
        """(t1, t2) that end a run early: by accuracy for classification, where the loss ones may take far longer."""
        d = self.detector
        return (d.overfit_acc.time, d.generalize_acc.time) if d.has_accuracy else (d.t_overfit, d.t_generalize)

    def summarize(self, eps: float, c: float, tau: float) -> dict:
        d = self.detector
        out = {
            "steps_run": self.steps_run,
            "t_overfit": d.t_overfit,
            "t_generalize": d.t_generalize,
            "grokking_time": d.grokking_time,
            "t_overfit_status": d.overfit.status,
            "t_generalize_status": d.generalize.status,
            "eps": eps,
            "c": c,
            "final": self.final,
        }
        if d.has_accuracy:
            t1a, t2a = d.overfit_acc.time, d.generalize_acc.time
            out["accuracy"] = {
                "tau": tau,
                "t_overfit": t1a,
                "t_generalize": t2a,
                "grokking_time": None if t1a is None or t2a is None else t2a - t1a,
                "t_overfit_status": d.overfit_acc.status,
                "t_generalize_status": d.generalize_acc.status,
            }
        out["missing"] = self._missing()
        if self.theory is None:
            out.update(exact=None, bounds={}, envelopes={})
            out["theory_note"] = self.theory_note
        else:
            out.update(self._against_theory())
        return out

    def _missing(self) -> list[str]:
        notes = []
        th = self.theory
        for name, time, exact in (
            ("t_overfit", self.detector.t_overfit, th.exact_t_overfit if th else None),
            ("t_generalize", self.detector.t_generalize, th.exact_t_generalize if th else None),
        ):
            if time is None:
                msg = f"{name} not reached in {self.steps_run} steps"
                if th is not None:
                    msg += f"; exact dynamics predict {exact}" if exact is not None else "; exact dynamics: never"
                notes.append(msg)
        return notes

    def _against_theory(self) -> dict:
        th, d = self.theory, self.detector
        t1, t2 = d.t_overfit, d.t_generalize
        e1, e2 = th.exact_t_overfit, th.exact_t_generalize
        in_run = lambda e: e is not None and e < self.steps_run  # noqa: E731
        exact = {
            "t_overfit": e1,
            "t_generalize": e2,
            "grokking_time": None if e1 is None or e2 is None else e2 - e1,
            "t_overfit_matches": t1 == e1 if in_run(e1) or t1 is not None else None,
            "t_generalize_matches": t2 == e2 if in_run(e2) or t2 is not None else None,
        }
        measured = {"t_overfit": t1, "t_generalize": t2}
        bounds = {b.name: b.report(measured[b.target], self.steps_run) for b in th.bounds}
        envelopes = {}
        if th.envelopes is not None:
            met = all(h.met for h in th.envelopes.hypotheses())
            for name, worst in self.envelope_ratios.items():
                ok = worst <= 1 + ENVELOPE_RTOL if name.endswith("upper") else worst >= 1 - ENVELOPE_RTOL
                envelopes[name] = {
                    "worst_ratio": worst,
                    "verdict": ("holds" if ok else "violated") if met else "hypothesis not met",
                }
        return {"exact": exact, "bounds": bounds, "envelopes": envelopes, "quantities": asdict(th.quantities)}

    def state_dict(self) -> dict:
        return {
            "detector": self.detector.state_dict(),
            "final": self.final,
            "steps_run": self.steps_run,
            "envelope_ratios": self.envelope_ratios,
        }

    def load_state_dict(self, state: dict) -> None:
        self.detector.load_state_dict(state["detector"])
        self.final, self.steps_run, self.envelope_ratios = state["final"], state["steps_run"], state["envelope_ratios"]


class PhaseTransitionCallback(Callback):
    """``theory`` is one Theory (or None) per ensemble member; a single run has a list of one."""

    def __init__(
        self,
        eps: float,
        c: float,
        tau: float = 0.99,
        theory: Theory | None | list[Theory | None] = None,
        output_dir: str | Path | None = None,
        config: dict | None = None,
        max_steps: int = 0,
        log_points: int = 400,
        stop_margin: float | None = None,
        theory_note: str = "",
    ):
        self.eps, self.c, self.tau = eps, c, tau
        theories = theory if isinstance(theory, list) else [theory]
        self.members = [MemberPhases(eps, c, tau, th, theory_note=theory_note) for th in theories]
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.config = config or {}
        self.stop_margin = stop_margin
        self.schedule = log_schedule(max_steps, log_points)
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
        if hasattr(pl_module, "log_steps"):  # the kernels evaluate the test side at least at the logged steps
            pl_module.log_steps = self.schedule

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        chunk = pl_module.last_chunk
        if chunk is None or len(chunk) == 0:
            return
        pl_module.last_chunk = None
        arrays = {"train/loss": chunk.train_loss, "test/loss": chunk.test_loss}
        arrays.update({_metric_name(k): v for k, v in chunk.extras.items()})
        arrays = {k: v.detach().double().cpu().numpy() for k, v in arrays.items()}  # each (K, B)
        for b, member in enumerate(self.members):
            member.update(chunk.start, {k: v[:, b] for k, v in arrays.items()})
        evaluated = None if chunk.evaluated is None else chunk.evaluated.all(dim=1).cpu().numpy()  # (K,) rows
        self._log_scheduled(trainer, chunk.start, len(chunk), arrays, evaluated)
        if self.transitions_done():
            trainer.should_stop = True

    def _log_scheduled(
        self,
        trainer: L.Trainer,
        start: int,
        k: int,
        arrays: dict[str, np.ndarray],
        evaluated: np.ndarray | None = None,
    ) -> None:
        """Curves at the scheduled steps: the value (one run) or the members' mean and std (an ensemble).
        Test-side values of a step the kernel did not evaluate (``evaluated``) are left out of the loggers' row
        and stored as NaN in the curves (the kernels evaluate every scheduled step, so this does not happen in
        ``experiment.fit``). The loggers' rows also carry the exact dynamics at the same steps and the step
        metric ``gd_step`` (``wandb_theory``); curves.json keeps the measured values only."""
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
                logger.log_metrics(row, step=int(step))

    def transitions_done(self) -> bool:
        """Every member has both t1 and t2 and ran ``stop_margin`` * t2 steps past t2 (never without a margin)."""
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
        if self.output_dir is not None:
            atomic_write_json(self.output_dir / "phases.json", res)
            atomic_write_json(self.output_dir / "curves.json", self.curves)
        print(format_run_table(res))
        theories = [m.theory for m in self.members]
        wandb_theory.log_results(trainer, res, flat_summary(res), self.curves, theories, self.output_dir)

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
