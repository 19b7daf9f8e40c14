"""The paper's quantitative predictions and the hypotheses each one needs (notes Sec. 3 and 8).

Every quantity is computed from the run's own tensors (the sampled Phi, theta^(0), theta*). A bound
gets one of four verdicts against a measured time:
  holds               every required hypothesis is met and the measured time is on the bound's side;
  violated            every required hypothesis is met and the measured time is on the wrong side
                      (possible only with the theorems' small failure probability, or a bug);
  hypothesis not met  a required hypothesis fails: the bound is reported, not judged;
  undetermined        the run ended before the measured time could be compared.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from lightning_grok.theory.exact import LinearProblem

LN_LINEARIZATION_MAX = 0.7968  # ln(1 - x) >= -2x holds for 0 <= x <= 0.7968 (used by Eq. 7)


@dataclass
class Quantities:
    """The spectral and norm quantities the theorems are stated in (all float)."""

    n: int
    m: int
    lr: float  # eta
    weight_decay: float  # lambda
    eps: float
    c: float
    delta: float
    nu2: float  # init variance of the trained parameters
    lam_plus_min: float  # smallest positive eigenvalue of Phi^T Phi
    lam_max: float  # largest eigenvalue of Phi^T Phi
    L: float  # ||Phi||_F^2 / n
    b2: float  # max ||phi(x)||^2 over the sampled inputs
    theta0_norm2: float
    theta_star_norm2: float | None  # None when the teacher is not realizable in feature space
    sigma_min: float | None  # lambda_min(Sigma)
    sigma_min_source: str
    gaussian_identity: bool
    realizable: bool
    zero_teacher: bool
    stability_limit: float  # 2 / (lambda_max / n + lambda): GD diverges above it
    marchenko_pastur_lam_plus_min: float | None  # gamma^-1 (1 - sqrt(gamma))^2 for N(0, I/m) features

    @classmethod
    def from_problem(
        cls, p: LinearProblem, eps: float, c: float, delta: float, singular_values: np.ndarray | None = None
    ) -> Quantities:
        """``singular_values``: those of Phi (descending) when already computed (``ExactDynamics.spectrum``)."""
        sv = np.linalg.svd(p.phi, compute_uv=False) if singular_values is None else singular_values
        eig = sv**2
        tol = max(p.n, p.m) * np.finfo(np.float64).eps * (eig[0] if len(eig) else 0)
        positive = eig[eig > tol]
        lam_max = float(eig[0]) if len(eig) else 0.0
        ts2 = float(np.sum(p.theta_star**2)) if p.theta_star is not None else None
        b2 = p.b2 if p.b2 is not None else float(np.max(np.sum(p.phi**2, axis=1)))
        mp = None
        if p.gaussian_identity:
            gamma = p.m / p.n  # Remark 4.3 with Phi's rows ~ N(0, I/m); eigenvalues of Phi^T Phi ~ (n/m) MP
            mp = float(p.n / p.m * (1 - math.sqrt(min(gamma, 1 / gamma))) ** 2 * max(1.0, gamma))
        return cls(
            n=p.n,
            m=p.m,
            lr=p.lr,
            weight_decay=p.weight_decay,
            eps=eps,
            c=c,
            delta=delta,
            nu2=p.theta0_variance,
            lam_plus_min=float(positive[-1]) if len(positive) else 0.0,
            lam_max=lam_max,
            L=float(np.sum(p.phi**2) / p.n),
            b2=b2,
            theta0_norm2=float(np.sum(p.theta0**2)),
            theta_star_norm2=ts2,
            sigma_min=p.sigma_min,
            sigma_min_source=p.sigma_min_source,
            gaussian_identity=p.gaussian_identity,
            realizable=p.realizable,
            zero_teacher=p.realizable and ts2 == 0.0,
            stability_limit=2.0 / (lam_max / p.n + p.weight_decay),
            marchenko_pastur_lam_plus_min=mp,
        )


@dataclass
class Hypothesis:
    statement: str
    met: bool
    required: bool = True  # False: stated by the theorem but implied by, or weaker than, what the proof uses


@dataclass
class Bound:
    name: str
    target: str  # "t_overfit" or "t_generalize"
    side: str  # "upper" (measured <= value) or "lower" (measured >= value)
    value: float | None  # None when the formula is undefined (log of a non-positive number)
    source: str
    hypotheses: list[Hypothesis] = field(default_factory=list)

    @property
    def hypotheses_met(self) -> bool:
        return self.value is not None and all(h.met for h in self.hypotheses if h.required)

    def verdict(self, measured: int | None, steps_run: int) -> str:
        """Compare with a measured time; ``measured`` None means not reached within ``steps_run`` steps."""
        if not self.hypotheses_met:
            return "hypothesis not met"
        if measured is None:
            # not reached: the true time is >= steps_run
            if self.side == "upper":
                return "violated" if steps_run - 1 > self.value else "undetermined"
            return "holds" if steps_run >= self.value else "undetermined"
        ok = measured <= self.value if self.side == "upper" else measured >= self.value
        return "holds" if ok else "violated"

    def report(self, measured: int | None, steps_run: int) -> dict:
        d = asdict(self)
        d["verdict"] = self.verdict(measured, steps_run)
        d["measured"] = measured
        return d


def _log_or_none(x: float) -> float | None:
    return math.log(x) if x > 0 else None


def _ratio_or_none(num: float | None, den: float) -> float | None:
    return None if num is None or den <= 0 else num / den


def _common(q: Quantities) -> dict[str, Hypothesis]:
    ts2 = q.theta_star_norm2 if q.theta_star_norm2 is not None else math.inf
    sig = q.sigma_min if q.sigma_min is not None else 0.0
    lam = q.weight_decay
    return {
        "realizable": Hypothesis("realizable teacher with noise-free labels: y = <theta*, phi(x)>", q.realizable),
        "lr_thm44": Hypothesis(
            "eta < 1/(lambda + lambda_max(Phi^T Phi)/n)  [Thm 4.4 / A.8]", q.lr < 1 / (lam + q.lam_max / q.n)
        ),
        "lr_thm42_stated": Hypothesis(
            "eta < 1/(lambda + b^2)  [as stated in Thm 4.2; the proofs need only the Thm 4.4/4.5 step sizes, "
            "which it implies]",
            q.lr < 1 / (lam + q.b2),
            required=False,
        ),
        "lr_thm45": Hypothesis("eta < 1/lambda  [Thm 4.5 / A.9]", lam == 0 or q.lr < 1 / lam),
        "lambda_a8_1": Hypothesis(
            "lambda <= 2 eps / (3 ||theta*||^2)  [A.8]", ts2 == 0 or lam <= 2 * q.eps / (3 * ts2)
        ),
        "lambda_a8_2": Hypothesis(
            "lambda <= sqrt(L eps) / (sqrt(6) ||theta*||)  [A.8]",
            ts2 == 0 or lam <= math.sqrt(q.L * q.eps) / (math.sqrt(6) * math.sqrt(ts2)),
        ),
        "m_log": Hypothesis("m >= n + 32 log(2/delta)  [A.9]", q.m >= q.n + 32 * math.log(2 / q.delta)),
        "m_teacher": Hypothesis("m >= n + 8 ||theta*||^2 / nu^2  [A.9]", q.m >= q.n + 8 * ts2 / q.nu2),
        "m_sigma": Hypothesis(
            f"m >= n + 8 c / (lambda_min(Sigma) nu^2)  [A.9; lambda_min(Sigma) {q.sigma_min_source}]",
            sig > 0 and q.m >= q.n + 8 * q.c / (sig * q.nu2),
        ),
        "m_log_a8": Hypothesis(
            "m >= 32 log(2/delta) and m >= 8 ||theta*||^2 / nu^2  [A.8, constants of A.9]",
            q.m >= 32 * math.log(2 / q.delta) and q.m >= 8 * ts2 / q.nu2,
        ),
        "lin_eq7": Hypothesis(
            f"eta lambda <= {LN_LINEARIZATION_MAX}  [ln(1 - eta lambda) >= -2 eta lambda]",
            q.lr * lam <= LN_LINEARIZATION_MAX,
        ),
        "gaussian": Hypothesis("features phi(x) = x ~ N(0, I/m), so Sigma = I/m  [Remark A.14]", q.gaussian_identity),
        "small_step_eq8": Hypothesis("eta lambda <= 0.01  [Remark A.14]", q.lr * lam <= 0.01),
        "c_eq_eps": Hypothesis("c = eps  [Remark A.14]", q.c == q.eps),
        "b2_eq8": Hypothesis("b^2 <= 3/2 on the sample  [Remark A.14, w.h.p.]", q.b2 <= 1.5),
        "theta0_eq8": Hypothesis(
            "m nu^2/2 <= ||theta0||^2 <= 3 m nu^2/2  [Remark A.14, w.h.p.]",
            q.m * q.nu2 / 2 <= q.theta0_norm2 <= 3 * q.m * q.nu2 / 2,
        ),
        "m_eps_eq8": Hypothesis("m >= ||theta*||^2 / eps  [Remark A.14: sqrt(c m) >= ||theta*||]", q.m >= ts2 / q.eps),
        "lambda_positive": Hypothesis("lambda > 0", lam > 0),
        "lam_plus_positive": Hypothesis("lambda+_min(Phi^T Phi) > 0", q.lam_plus_min > 0),
    }


def all_bounds(q: Quantities) -> list[Bound]:
    """Eqs. (6), (7), (8) and the un-linearized Thm 4.4 / 4.5 forms, each with its hypotheses."""
    h = _common(q)
    eta, lam, n, m = q.lr, q.weight_decay, q.n, q.m
    ts = math.sqrt(q.theta_star_norm2) if q.theta_star_norm2 is not None else math.inf
    sig = q.sigma_min if q.sigma_min and q.sigma_min > 0 else None
    t1_hyp = [
        h["realizable"],
        h["lr_thm44"],
        h["lr_thm42_stated"],
        h["lambda_a8_1"],
        h["lambda_a8_2"],
        h["m_log_a8"],
        h["lam_plus_positive"],
    ]
    t2_hyp = [h["realizable"], h["lr_thm45"], h["m_log"], h["m_teacher"], h["m_sigma"], h["lambda_positive"]]
    bounds = []

    eq6 = _ratio_or_none(
        None if q.theta0_norm2 == 0 else n * (_log_or_none(6 * q.b2 * q.theta0_norm2 / q.eps) or math.nan),
        2 * eta * q.lam_plus_min,
    )
    bounds.append(Bound("eq6_t_overfit_upper", "t_overfit", "upper", _finite(eq6), "Thm 4.2, Eq. (6)", t1_hyp))

    rho1 = 1 - eta * q.lam_plus_min / n - eta * lam
    thm44 = None
    if 0 < rho1 < 1 and q.theta0_norm2 > 0:
        thm44 = 0.5 * math.log(q.eps / (6 * q.L * q.theta0_norm2)) / math.log(rho1)
    bounds.append(Bound("thm44_t_overfit_upper", "t_overfit", "upper", thm44, "Thm 4.4 (A.8), un-linearized", t1_hyp))

    arg7 = None if sig is None else (m - n) * q.nu2 / 2 / (math.sqrt(q.c / sig) + ts) ** 2
    eq7 = None if arg7 is None or lam == 0 else _finite((_log_or_none(arg7) or math.nan) / (4 * eta * lam))
    bounds.append(
        Bound("eq7_t_generalize_lower", "t_generalize", "lower", eq7, "Thm 4.2, Eq. (7)", t2_hyp + [h["lin_eq7"]])
    )

    thm45 = None
    if arg7 is not None and arg7 > 0 and 0 < eta * lam < 1:
        thm45 = 0.5 * math.log(1 / arg7) / math.log(1 - eta * lam)
    bounds.append(
        Bound("thm45_t_generalize_lower", "t_generalize", "lower", thm45, "Thm 4.5 (A.9), un-linearized", t2_hyp)
    )

    eq8_1 = _ratio_or_none(n * (_log_or_none(14 * m * q.nu2 / q.eps) or math.nan), 2 * eta * q.lam_plus_min)
    bounds.append(
        Bound(
            "eq8_t_overfit_upper",
            "t_overfit",
            "upper",
            _finite(eq8_1),
            "Remark A.14, Eq. (8)",
            [h["gaussian"], h["small_step_eq8"], h["c_eq_eps"], h["b2_eq8"], h["theta0_eq8"]] + t1_hyp,
        )
    )
    eq8_2 = (
        None
        if lam == 0
        else _finite((_log_or_none((m - n) * q.nu2 / (8 * m * q.eps)) or math.nan) / (2.02 * eta * lam))
    )
    bounds.append(
        Bound(
            "eq8_t_generalize_lower",
            "t_generalize",
            "lower",
            eq8_2,
            "Remark A.14, Eq. (8)",
            [h["gaussian"], h["small_step_eq8"], h["c_eq_eps"], h["m_eps_eq8"]] + t2_hyp,
        )
    )
    return bounds


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x


@dataclass
class Envelopes:
    """Theorem 4.1 (zero teacher) per-step envelopes, as functions of t (arrays welcome)."""

    q: Quantities

    def hypotheses(self) -> list[Hypothesis]:
        q = self.q
        return [
            Hypothesis("zero teacher N* = 0 with noise-free labels", q.zero_teacher),
            Hypothesis("eta <= 2/(L + 2 lambda)  [Thm 4.1]", q.lr <= 2 / (q.L + 2 * q.weight_decay)),
            Hypothesis("m > n (a null space to hold theta_perp)", q.m > q.n),
        ]

    def train_upper(self, t):
        q = self.q
        rho = 1 - q.lr * q.lam_plus_min / q.n - q.lr * q.weight_decay
        return q.L / 2 * np.power(rho, 2 * np.asarray(t, dtype=np.float64)) * q.theta0_norm2

    def test_lower(self, t):
        """Holds with probability >= 1 - 2 exp(-(m-n)/32)."""
        q = self.q
        sig = q.sigma_min or 0.0
        return sig * np.power(1 - q.lr * q.weight_decay, 2 * np.asarray(t, dtype=np.float64)) * (q.m - q.n) * q.nu2 / 2

    def norm_upper(self, t):
        q = self.q
        return np.power(1 - q.lr * q.weight_decay, 2 * np.asarray(t, dtype=np.float64)) * q.theta0_norm2

    @property
    def test_lower_probability(self) -> float:
        return max(0.0, 1 - 2 * math.exp(-(self.q.m - self.q.n) / 32))
