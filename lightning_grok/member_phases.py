"""What one run (one member: one seed of the run) measured while it trained, against its theory; Lightning-free.

``MemberPhases`` takes each chunk of per-step records: the streaming detector finds t1 and t2 (exact to the
step), the Thm 4.1 envelopes are checked on every step, and at the end it reports the measured times beside
the exact ones and every bound with its verdict (one member's entry of phases.json, ``results.run_result``).
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from lightning_grok.detection import PhaseDetector
from lightning_grok.theory.run_theory import RunTheory

ENVELOPE_RTOL = 1e-9  # float rounding allowance when comparing a measured curve with an envelope


def log_schedule(max_steps: int, points: int) -> np.ndarray:
    """Steps 0, 1, 2, ... then geometrically spaced up to max_steps - 1: about ``points`` steps."""
    if max_steps <= points:
        return np.arange(max_steps)
    geo = np.geomspace(1, max_steps - 1, num=points)
    return np.unique(np.concatenate([[0], np.round(geo).astype(np.int64)]))


class MemberPhases:
    """What one run (one member: one seed of the run) measured: its detector, envelope checks and final values."""

    def __init__(
        self,
        eps: float,
        c: float,
        tau: float,
        theory: RunTheory | None,
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
