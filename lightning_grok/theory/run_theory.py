"""The theory of one run: exact dynamics, Thm 4.2 / Eq. (8) bounds and Thm 4.1 envelopes, from its tensors."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lightning_grok.theory.bounds import Bound, Envelopes, Quantities, all_bounds
from lightning_grok.theory.exact import ExactDynamics, LinearProblem
from lightning_grok.theory.grid import LIMIT_STEP


@dataclass
class RunTheory:
    problem: LinearProblem
    exact: ExactDynamics
    quantities: Quantities
    bounds: list[Bound]
    envelopes: Envelopes | None  # Thm 4.1: zero teacher only
    exact_t_overfit: int | None
    exact_t_generalize: int | None

    @classmethod
    def from_problem(cls, problem: LinearProblem, eps: float, c: float, delta: float) -> RunTheory:
        exact = ExactDynamics(problem)
        q = Quantities.from_problem(problem, eps, c, delta, singular_values=exact.spectrum)  # one SVD of Phi
        env = Envelopes(q) if q.zero_teacher else None
        t1, t2 = exact.phase_times(eps, c)
        return cls(problem, exact, q, all_bounds(q), env, t1, t2)

    def predictions(self) -> dict:
        """Everything predicted before training (the ``theory`` verb)."""
        t1, t2 = self.exact_t_overfit, self.exact_t_generalize
        return {
            "exact": {
                "t_overfit": t1,
                "t_generalize": t2,
                "grokking_time": None if t1 is None or t2 is None else t2 - t1,
                "train_loss_limit": float(self.exact.train_loss(LIMIT_STEP)[0]),
                "population_loss_limit": float(self.exact.population_loss(LIMIT_STEP)[0])
                if self.exact.has_population
                else None,
            },
            "bounds": {
                b.name: {
                    "value": b.value,
                    "side": b.side,
                    "target": b.target,
                    "source": b.source,
                    "hypotheses_met": b.hypotheses_met,
                    "hypotheses": [asdict(h) for h in b.hypotheses],
                }
                for b in self.bounds
            },
            "envelopes": None
            if self.envelopes is None
            else {
                "hypotheses": [asdict(h) for h in self.envelopes.hypotheses()],
                "test_lower_probability": self.envelopes.test_lower_probability,
            },
            "quantities": asdict(self.quantities),
        }
