"""Scaling laws of the grokking times, fitted to sweep results and judged against the paper's predictions.

From Eqs. (6)-(8) (Thm 4.2 and Remark A.14), for small lambda:

* ``t2_vs_weight_decay``: t2 ~ 1/lambda, a slope of -1 of log t2 against log lambda (Eq. 7).
* ``t1_vs_weight_decay``: t1 does not depend on lambda, slope 0 of log t1 against log lambda (Eq. 6).
* ``t1_vs_log_init_scale``, ``t2_vs_log_init_scale``: t1 and t2 are linear in ln nu^2 with slopes
  0 < c1 < c2 (Sec. 4.2); for ridge the t2 slope approaches 1/(2 eta lambda) (Eq. 8).
* ``t1_vs_n_over_lambda_min``: t1 ~ n / lambda+_min(Phi^T Phi), slope 1 of log t1 against its log (Eq. 6).

A fit is ordinary least squares over every (x, seed) observation, with a two-sided 95% confidence
interval from Student's t on the residual degrees of freedom: seeds give the spread, so one seed per
point gives an interval from the scatter about the line alone. Times are in GD steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class LineFit:
    """y = slope * x + intercept fitted to ``n_obs`` observations at ``n_x`` distinct x values."""

    slope: float
    intercept: float
    stderr: float
    ci_low: float
    ci_high: float
    n_obs: int
    n_x: int


def fit_line(x: Sequence[float], y: Sequence[float], confidence: float = CONFIDENCE) -> LineFit:
    """OLS slope with its ``confidence`` interval; needs at least two distinct x and three observations."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of one length, got shapes {x.shape} and {y.shape}")
    n_x = len(np.unique(x))
    if n_x < 2 or len(x) < 3:
        raise ValueError(f"a line needs >= 2 distinct x and >= 3 observations, got {n_x} and {len(x)}")
    res = stats.linregress(x, y)
    dof = len(x) - 2
    half = float(stats.t.ppf(0.5 + confidence / 2, dof) * res.stderr)
    return LineFit(
        float(res.slope), float(res.intercept), float(res.stderr), res.slope - half, res.slope + half, len(x), n_x
    )


@dataclass(frozen=True)
class ScalingLaw:
    """One prediction of the paper: which transform of which sweep's results, and the slope it predicts."""

    name: str
    x_label: str
    y_label: str
    predicted: str  # in words, for tables
    slope: float | None = None  # predicted slope, when the theory gives a number
    tolerance: float = 0.0  # |measured - predicted| allowed besides the confidence interval
    positive: bool = False  # the prediction is only "slope > 0"


LAWS = {
    "t2_vs_weight_decay": ScalingLaw(
        "t2_vs_weight_decay", "log lambda", "log t2", "slope -1 (t2 ~ 1/lambda)", slope=-1.0, tolerance=0.02
    ),
    "t1_vs_weight_decay": ScalingLaw(
        "t1_vs_weight_decay", "log lambda", "log t1", "slope 0 (t1 flat in lambda)", slope=0.0, tolerance=0.05
    ),
    "t1_vs_log_init_scale": ScalingLaw(
        "t1_vs_log_init_scale", "ln nu^2", "t1", "slope c1 > 0 (t1 linear in ln nu^2)", positive=True
    ),
    "t2_vs_log_init_scale": ScalingLaw(
        "t2_vs_log_init_scale", "ln nu^2", "t2", "slope c2 > c1 (t2 linear in ln nu^2)", positive=True
    ),
    "t1_vs_n_over_lambda_min": ScalingLaw(
        "t1_vs_n_over_lambda_min",
        "log n/lambda+_min",
        "log t1",
        "slope 1 (t1 ~ n / lambda+_min(Phi^T Phi))",
        slope=1.0,
        tolerance=0.15,
    ),
}


@dataclass(frozen=True)
class FitReport:
    law: str
    x_label: str
    y_label: str
    predicted: str
    fit: LineFit | None
    verdict: str  # consistent | inconsistent | insufficient data
    note: str = ""

    def as_dict(self) -> dict:
        out = asdict(self)
        out["fit"] = None if self.fit is None else asdict(self.fit)
        return out


def judge(law: ScalingLaw, fit: LineFit) -> str:
    """consistent: the predicted slope lies in the confidence interval widened by the law's tolerance
    (or, for a sign prediction, the whole interval is above 0)."""
    if law.positive:
        return "consistent" if fit.ci_low > 0 else "inconsistent"
    ok = fit.ci_low - law.tolerance <= law.slope <= fit.ci_high + law.tolerance
    return "consistent" if ok else "inconsistent"


def fit_law(name: str, x: Sequence[float], y: Sequence[float]) -> FitReport:
    """Fit law ``name`` (a key of LAWS) to raw x, y (hyperparameter values and times in GD steps); the log
    or ln transform of the law is applied here. Points with a missing time (None) are dropped and counted."""
    law = LAWS[name]
    pairs = [(a, b) for a, b in zip(x, y, strict=True) if a is not None and b is not None and b > 0]
    dropped = len(x) - len(pairs)
    note = f"{dropped} observation(s) without the time dropped" if dropped else ""
    log_x = law.x_label.startswith(("log", "ln"))
    log_y = law.y_label.startswith("log")
    xs = [math.log(a) for a, _ in pairs] if log_x else [a for a, _ in pairs]
    ys = [math.log(b) for _, b in pairs] if log_y else [float(b) for _, b in pairs]
    try:
        fit = fit_line(xs, ys)
    except ValueError as exc:
        return FitReport(name, law.x_label, law.y_label, law.predicted, None, "insufficient data", str(exc))
    return FitReport(name, law.x_label, law.y_label, law.predicted, fit, judge(law, fit), note)


def markdown_table(reports: Sequence[FitReport]) -> str:
    """One row per fit: the law, the measured slope with its 95% interval, the prediction and the verdict."""
    rows = ["| law | fitted slope (95% CI) | observations | prediction | verdict |", "|---|---|---|---|---|"]
    for r in reports:
        slope = "-" if r.fit is None else f"{r.fit.slope:.4g} [{r.fit.ci_low:.4g}, {r.fit.ci_high:.4g}]"
        count = "-" if r.fit is None else f"{r.fit.n_obs} at {r.fit.n_x} values"
        rows.append(f"| {r.y_label} vs {r.x_label} | {slope} | {count} | {r.predicted} | {r.verdict} |")
    return "\n".join(rows)
