"""Verdicts on the paper's predictions from sweep results: scaling laws judged as laws, bounds judged as
bounds, and the figures' captions judged by the measured times. Times are in GD steps (optimizer steps for
AdamW panels).

**Laws** (``LAWS``, ``fit_law``), from Eqs. (6)-(8) (Thm 4.2 and Remark A.14), for small lambda:

* ``t2_vs_weight_decay``: t2 ~ 1/lambda, a slope of -1 of log t2 against log lambda (Eqs. 7, 8).
* ``t1_vs_weight_decay``: t1 does not depend on lambda, slope 0 of log t1 against log lambda (lambda is
  absent from Eq. 6).
* ``t1_vs_log_init_scale``, ``t2_vs_log_init_scale``: t1 and t2 are linear in ln nu^2 with slopes
  0 < c1 < c2 (Sec. 4.2); for ridge the t2 slope approaches 1/(2 eta lambda) (Eq. 8).

A law is ``consistent`` when the fitted slope's 95% interval contains the predicted slope and
``inconsistent`` when it excludes it. There is no tolerance: an interval that excludes the prediction is
never ``consistent``. A sign prediction (slope > 0) is ``consistent`` when the whole interval is above 0,
``inconsistent`` when it is at or below 0 and ``inconclusive`` when it straddles 0.

**Bounds** (``check_bound``): Eq. (6) is an upper bound on t1 and Eqs. (7), (8) bound t2 from below, per
seed: t1 <= n ln(6 b^2 ||theta0||^2 / eps) / (2 eta lambda+_min(Phi^T Phi)) is not a claim that t1 grows like
n / lambda+_min. A bound ``holds`` when measured <= bound (upper; >= for a lower bound) at every seed where
its hypotheses are met, and is ``violated`` otherwise, naming the seeds. Its tightness is reported beside the
verdict: the ratio measured / bound per seed (<= 1 for an upper bound that holds, >= 1 for a lower one), its
range per point and overall, and how it moves along the sweep: the slope of ln(measured / bound) against the
swept variable (its log for a ``log``/``ln`` label) with its 95% interval. A negative slope for an upper bound
(positive for a lower one) means the bound grows away from the measured time along the sweep.

**Captions** (``check_claim``): ``increases`` / ``decreases``: the slope of ln t against ln x (x itself where
the panel's axis is linear or has x <= 0); the claim ``holds`` when the slope's 95% interval is on the
claimed side of 0, ``does not hold`` when it is on the other side, and is ``inconclusive`` when the
interval contains 0. ``flat`` ("little effect", "does not significantly prolong"): the largest over the
smallest of the points' seed-mean times, which must not exceed ``FLAT_RATIO_MAX``.

A fit is ordinary least squares over every (x, seed) observation, with a two-sided 95% confidence
interval from Student's t on the residual degrees of freedom: seeds give the spread, so one seed per
point gives an interval from the scatter about the line alone.

**Tolerances**: every one is a ``Tolerance`` constant below (name, value, reason), and the table row that
used one prints it (``TOLERANCES`` lists them all).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from lightning_grok import tables

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
class Tolerance:
    """A named allowance used by a verdict, with the reason it has the value it has."""

    name: str
    value: float
    reason: str

    def text(self) -> str:
        return f"{self.name} = {self.value:g} ({self.reason})"


FLAT_RATIO_MAX = Tolerance(
    "FLAT_RATIO_MAX",
    1.5,
    "the paper gives no number for 'little effect' or 'does not significantly prolong': read as the points' "
    "seed-mean times staying within a factor 1.5 of each other over the sweep, where lambda and n move "
    "them by factors of 10 to 1000 over sweeps as wide",
)
TOLERANCES = {t.name: t for t in (FLAT_RATIO_MAX,)}


@dataclass(frozen=True)
class ScalingLaw:
    """One prediction of the paper: which transform of which sweep's results, and the slope it predicts."""

    name: str
    x_label: str
    y_label: str
    predicted: str  # in words, for tables
    slope: float | None = None  # predicted slope, when the theory gives a number
    positive: bool = False  # the prediction is only "slope > 0"


LAWS = {
    "t2_vs_weight_decay": ScalingLaw(
        "t2_vs_weight_decay", "log lambda", "log t2", "slope -1 (t2 ~ 1/lambda)", slope=-1.0
    ),
    "t1_vs_weight_decay": ScalingLaw(
        "t1_vs_weight_decay", "log lambda", "log t1", "slope 0 (t1 flat in lambda)", slope=0.0
    ),
    "t1_vs_log_init_scale": ScalingLaw(
        "t1_vs_log_init_scale", "ln nu^2", "t1", "slope c1 > 0 (t1 linear in ln nu^2)", positive=True
    ),
    "t2_vs_log_init_scale": ScalingLaw(
        "t2_vs_log_init_scale", "ln nu^2", "t2", "slope c2 > c1 (t2 linear in ln nu^2)", positive=True
    ),
}
# Eq. (6) used to be fitted here as "t1_vs_n_over_lambda_min" (slope 1): it is an upper bound on t1, judged
# by check_bound; a figure JSON written before keeps that law's row as it was.


@dataclass(frozen=True)
class FitReport:
    law: str
    x_label: str
    y_label: str
    predicted: str
    fit: LineFit | None
    verdict: str  # consistent | inconsistent | inconclusive (sign predictions) | insufficient data
    note: str = ""
    rule: str = ""  # how the verdict was decided, in words

    def as_dict(self) -> dict:
        out = asdict(self)
        out["fit"] = None if self.fit is None else asdict(self.fit)
        return out


def _sign_verdict(fit: LineFit, sign: int) -> str:
    """``sign`` +1: the slope is claimed > 0; -1: < 0. On the claimed side, on the other, or straddling 0."""
    low, high = (fit.ci_low, fit.ci_high) if sign > 0 else (-fit.ci_high, -fit.ci_low)
    if low > 0:
        return "yes"
    return "no" if high <= 0 else "undecided"


def judge(law: ScalingLaw, fit: LineFit) -> str:
    """consistent: the predicted slope lies in the 95% interval (for a sign prediction: the whole interval is
    above 0); inconsistent: it does not (the whole interval at or below 0); inconclusive: a sign prediction
    whose interval contains 0. No tolerance widens the interval."""
    if law.positive:
        return {"yes": "consistent", "no": "inconsistent", "undecided": "inconclusive"}[_sign_verdict(fit, 1)]
    return "consistent" if fit.ci_low <= law.slope <= fit.ci_high else "inconsistent"


def _rule(law: ScalingLaw) -> str:
    if law.positive:
        return "consistent if the 95% interval is above 0, inconclusive if it contains 0"
    return f"consistent if the 95% interval contains {law.slope:g} (no tolerance)"


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
        return FitReport(name, law.x_label, law.y_label, law.predicted, None, "insufficient data", str(exc), _rule(law))
    return FitReport(name, law.x_label, law.y_label, law.predicted, fit, judge(law, fit), note, _rule(law))


def _fmt(v: float | None) -> str:
    """A time for a table: whole steps with thousands separators from 1,000 on, else 4 significant digits."""
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"


def markdown_table(reports: Sequence[FitReport]) -> str:
    """One row per fit: the law, the measured slope with its 95% interval, the prediction and the verdict."""
    rows = []
    for r in reports:
        slope = "-" if r.fit is None else f"{r.fit.slope:.4g} [{r.fit.ci_low:.4g}, {r.fit.ci_high:.4g}]"
        count = "-" if r.fit is None else f"{r.fit.n_obs} at {r.fit.n_x} values"
        rows.append([f"{r.y_label} vs {r.x_label}", slope, count, r.predicted, r.verdict])
    return tables.markdown_table(["law", "fitted slope (95% CI)", "observations", "prediction", "verdict"], rows)


# ---------------------------------------------------------------------------------------------- bounds


@dataclass(frozen=True)
class BoundReport:
    """A bound checked at every seed of a sweep (``check_bound``).

    ``verdict``: holds | violated | undetermined (a seed ended before its time could be compared, none
    violated) | hypothesis not met (at every seed: the paper claims nothing; the numbers are still given) |
    insufficient data (no seed with both a bound and a time). ``ratios_over``: the seeds the tightness numbers
    are over (those where the hypotheses are met, or every seed when there are none). ``points``: per value of
    the swept variable, {point, seeds, claimed, ratio_min, ratio_max, ratio_mean, violated}. ``violations``:
    {point, x, seed, measured, bound} of each claimed seed on the wrong side; ``unclaimed_violations`` the same
    where the hypotheses are not met. ``trend``: ln(measured / bound) against ``x_label``'s transform of x."""

    bound: str
    side: str  # upper | lower
    time: str  # t1 | t2
    panel: str
    x_label: str
    point_label: str
    verdict: str
    seeds: int
    claimed: int
    on_side: int  # claimed seeds on the bound's side
    unclaimed_on_side: int  # seeds where the hypotheses fail, on the bound's side all the same
    undetermined: int
    ratio_min: float | None
    ratio_max: float | None
    ratios_over: str
    points: list[dict]
    violations: list[dict]
    unclaimed_violations: list[dict]
    trend: LineFit | None
    trend_words: str
    source: str = ""
    note: str = ""

    def as_dict(self) -> dict:
        out = asdict(self)
        out["trend"] = None if self.trend is None else asdict(self.trend)
        return out


def _transform(label: str, values: Sequence[float]) -> list[float] | None:
    """ln of the values for a ``log``/``ln`` label (None if any is <= 0), else the values."""
    if label.startswith(("log", "ln")):
        return None if any(v <= 0 for v in values) else [math.log(v) for v in values]
    return [float(v) for v in values]


def check_bound(
    bound: str,
    side: str,
    x: Sequence[float],
    measured: Sequence[float | None],
    values: Sequence[float | None],
    *,
    seeds: Sequence[int] | None = None,
    points: Sequence[float] | None = None,
    claimed: Sequence[bool] | None = None,
    steps_run: Sequence[int | None] | None = None,
    time: str = "t1",
    panel: str = "",
    x_label: str = "log x",
    point_label: str = "x",
    source: str = "",
) -> BoundReport:
    """Judge ``bound`` (``side`` "upper": measured <= value; "lower": measured >= value) at every seed.

    One entry per seed in every sequence: ``x`` the swept variable the trend is fitted against (e.g.
    n / lambda+_min(Phi^T Phi) of the seed), ``measured`` its time in GD steps (None: not reached within
    ``steps_run`` steps), ``values`` the bound in GD steps (None: undefined), ``points`` the sweep point it
    belongs to (defaults to ``x``), ``claimed`` whether the bound's hypotheses are met there (default: all).
    A time not reached counts as violating an upper bound when ``steps_run - 1`` exceeds it and as holding
    a lower bound when ``steps_run`` reaches it; otherwise it is undetermined. No tolerance: a time one step
    past an upper bound violates it."""
    if side not in ("upper", "lower"):
        raise ValueError(f"side must be 'upper' or 'lower', got {side!r}")
    n = len(x)
    if not (len(measured) == len(values) == n):
        raise ValueError(f"x, measured and values need one entry per seed, got {n}, {len(measured)}, {len(values)}")
    seeds = list(seeds) if seeds is not None else list(range(n))
    points = list(points) if points is not None else list(x)
    claimed = list(claimed) if claimed is not None else [True] * n
    steps_run = list(steps_run) if steps_run is not None else [None] * n
    rows = []
    for i in range(n):
        b = values[i]
        if b is None or not math.isfinite(b):
            continue
        state, ratio = _seed_state(side, measured[i], b, steps_run[i])
        rows.append({"i": i, "state": state, "ratio": ratio, "claimed": bool(claimed[i])})
    judged = [r for r in rows if r["claimed"]]
    over = judged or rows
    ratios_over = "seeds where the hypotheses are met" if judged else "every seed (no hypothesis met)"

    def entry(r: dict) -> dict:
        i = r["i"]
        return {"point": points[i], "x": x[i], "seed": seeds[i], "measured": measured[i], "bound": values[i]}

    violations = [entry(r) for r in judged if r["state"] == "violated"]
    unclaimed = [entry(r) for r in rows if not r["claimed"] and r["state"] == "violated"]
    undetermined = sum(r["state"] == "undetermined" for r in judged)
    verdict = _bound_verdict(bool(rows), bool(judged), bool(violations), bool(undetermined))
    ratios = [r["ratio"] for r in over if r["ratio"] is not None]
    point_rows = _point_rows(over, points)
    trend, words, note = _ratio_trend(side, x_label, [(x[r["i"]], r["ratio"]) for r in over])
    return BoundReport(
        bound=bound,
        side=side,
        time=time,
        panel=panel,
        x_label=x_label,
        point_label=point_label,
        verdict=verdict,
        seeds=len(rows),
        claimed=len(judged),
        on_side=sum(r["state"] == "holds" for r in judged),
        unclaimed_on_side=sum(r["state"] == "holds" for r in rows if not r["claimed"]),
        undetermined=undetermined,
        ratio_min=min(ratios) if ratios else None,
        ratio_max=max(ratios) if ratios else None,
        ratios_over=ratios_over,
        points=point_rows,
        violations=violations,
        unclaimed_violations=unclaimed,
        trend=trend,
        trend_words=words,
        source=source,
        note=note,
    )


def _seed_state(side: str, t: float | None, b: float, steps_run: int | None) -> tuple[str, float | None]:
    """One seed against its bound ``b`` (GD steps): "holds", "violated" or "undetermined", and measured / bound.
    A time not reached (``t`` None) violates an upper bound once ``steps_run - 1`` exceeds it and holds a lower
    bound once ``steps_run`` reaches it."""
    if t is None:
        if side == "upper" and steps_run is not None and steps_run - 1 > b:
            return "violated", None
        if side == "lower" and steps_run is not None and steps_run >= b:
            return "holds", None
        return "undetermined", None
    state = "holds" if (t <= b if side == "upper" else t >= b) else "violated"
    return state, (t / b if b > 0 else None)


def _bound_verdict(any_seed: bool, any_claimed: bool, violated: bool, undetermined: bool) -> str:
    if not any_seed:
        return "insufficient data"
    if not any_claimed:
        return "hypothesis not met"
    if violated:
        return "violated"
    return "undetermined" if undetermined else "holds"


def _point_rows(rows: list[dict], points: list) -> list[dict]:
    """Per sweep point: its seeds, how many meet the hypotheses, measured / bound (min, max, mean), violations."""
    by_point: dict = {}
    for r in rows:
        by_point.setdefault(points[r["i"]], []).append(r)
    out = []
    for p in sorted(by_point, key=lambda v: (not isinstance(v, int | float), v)):
        group = by_point[p]
        rs = [r["ratio"] for r in group if r["ratio"] is not None]
        out.append(
            {
                "point": p,
                "seeds": len(group),
                "claimed": sum(r["claimed"] for r in group),
                "ratio_min": min(rs) if rs else None,
                "ratio_max": max(rs) if rs else None,
                "ratio_mean": sum(rs) / len(rs) if rs else None,
                "violated": sum(r["state"] == "violated" for r in group),
            }
        )
    return out


def _ratio_trend(side: str, x_label: str, x_ratio: list[tuple[float, float | None]]) -> tuple[LineFit | None, str, str]:
    """The fitted slope of log(measured / bound) against the transformed x, its words, and why there is none."""
    pairs = [(xv, ratio) for xv, ratio in x_ratio if ratio is not None and ratio > 0]
    tx = _transform(x_label, [xv for xv, _ in pairs])
    try:
        if tx is None:
            raise ValueError(f"{x_label} needs x > 0")
        trend = fit_line(tx, [math.log(ratio) for _, ratio in pairs])
    except ValueError as exc:
        return None, "-", f"no trend: {exc}"
    looser = _sign_verdict(trend, -1 if side == "upper" else 1)
    words = {
        "yes": "the bound gets looser along the sweep",
        "no": "the bound gets tighter along the sweep",
        "undecided": "parallel to the measured time (the interval contains 0)",
    }[looser]
    return trend, words, ""


def _bound_verdict_text(r: BoundReport) -> str:
    sign = "<=" if r.side == "upper" else ">="

    def where(v: dict) -> str:
        point = f"{v['point']:g}" if isinstance(v["point"], int | float) else str(v["point"])
        return f"{r.point_label}={point} seed {v['seed']} ({r.time} = {_fmt(v['measured'])} vs {_fmt(v['bound'])})"

    if r.verdict == "violated":
        return f"violated at {len(r.violations)} of {r.claimed} seeds: " + "; ".join(map(where, r.violations))
    if r.verdict == "holds":
        return f"holds: {r.time} {sign} bound at {r.on_side} of {r.claimed} seeds"
    if r.verdict == "hypothesis not met":
        return (
            f"hypothesis not met at all {r.seeds} seeds (not claimed); as measured, {r.time} {sign} bound at "
            f"{r.unclaimed_on_side} of {r.seeds}"
        )
    if r.verdict == "undetermined":
        return f"undetermined: {r.undetermined} of {r.claimed} seeds ended before {r.time}, none violated"
    return r.verdict


def bounds_markdown(reports: Sequence[BoundReport]) -> str:
    """One row per bound: the seeds judged, the ratio measured / bound (range), its trend along the sweep
    (slope of ln ratio, 95% CI) and the verdict naming any seed that violates it."""
    header = [
        "bound (judged per seed)",
        "seeds",
        "measured / bound",
        "trend: slope of ln(measured / bound) (95% CI)",
        "verdict",
    ]
    rows = []
    for r in reports:
        kind = f"{r.time} {r.side} bound {r.bound}" + (f" [{r.source}]" if r.source else "")
        kind += f", panel {r.panel}" if r.panel else ""
        extra = f", {r.seeds - r.claimed} not claimed" if r.claimed and r.claimed < r.seeds else ""
        rng = "-" if r.ratio_min is None else f"{r.ratio_min:.3g} to {r.ratio_max:.3g}"
        if r.trend is None:
            trend = f"- ({r.note})" if r.note else "-"
        else:
            t = r.trend
            trend = f"{t.slope:.3g} [{t.ci_low:.3g}, {t.ci_high:.3g}] vs {r.x_label}: {r.trend_words}"
        rows.append([kind, f"{r.seeds}{extra}", rng, trend, _bound_verdict_text(r)])
    return tables.markdown_table(header, rows)


# ---------------------------------------------------------------------------------------------- claims

CLAIM_KINDS = ("increases", "decreases", "flat")


@dataclass(frozen=True)
class ClaimReport:
    """A caption's statement judged by the measured times (``check_claim``).

    ``verdict``: holds | does not hold | inconclusive (a slope whose interval contains 0) | insufficient data.
    ``points``: {x, seeds, mean} per sweep point (seeds with the time); ``spread``: largest over smallest
    point mean, with where each is; ``fit``: ln t against ln x (x where linear) for increases/decreases."""

    text: str
    panel: str
    time: str
    kind: str
    verdict: str
    measured: str  # the numbers the verdict rests on, in words
    points: list[dict]
    spread: dict | None
    fit: LineFit | None
    tolerance: Tolerance | None = None
    note: str = ""

    def as_dict(self) -> dict:
        out = asdict(self)
        out["fit"] = None if self.fit is None else asdict(self.fit)
        return out


def check_claim(
    text: str,
    kind: str,
    x: Sequence[float],
    times: Sequence[float | None],
    *,
    panel: str = "",
    time: str = "t2",
    x_log: bool = True,
    x_label: str = "x",
) -> ClaimReport:
    """Judge a caption: ``times[i]`` (GD steps, None if not reached) measured at ``x[i]`` (one per seed).

    ``increases``/``decreases``: slope of ln t against ln x (x when ``x_log`` is False or some x <= 0) over
    every seed with the time; holds when its 95% interval lies on the claimed side of 0, does not hold when
    it lies on the other side (0 included), inconclusive otherwise. ``flat``: holds when the largest point
    mean over the smallest is at most ``FLAT_RATIO_MAX``; otherwise it does not hold, with the range."""
    if kind not in CLAIM_KINDS:
        raise ValueError(f"claim kind must be one of {', '.join(CLAIM_KINDS)}, got {kind!r}")
    if len(x) != len(times):
        raise ValueError(f"x and times need one entry per seed, got {len(x)} and {len(times)}")
    have = [(float(a), float(t)) for a, t in zip(x, times, strict=True) if t is not None and t > 0]
    dropped = len(x) - len(have)
    note = f"{dropped} seed(s) without {time} left out" if dropped else ""
    groups: dict[float, list[float]] = {}
    for a, t in have:
        groups.setdefault(a, []).append(t)
    points = [{"x": a, "seeds": len(groups[a]), "mean": sum(groups[a]) / len(groups[a])} for a in sorted(groups)]
    spread = None
    if len(points) >= 2:
        lo, hi = min(points, key=lambda p: p["mean"]), max(points, key=lambda p: p["mean"])
        spread = {
            "ratio": hi["mean"] / lo["mean"],
            "min": lo["mean"],
            "min_at": lo["x"],
            "max": hi["mean"],
            "max_at": hi["x"],
        }
    rng = (
        "-"
        if spread is None
        else f"{time} {_fmt(spread['min'])} ({x_label}={spread['min_at']:g}) to {_fmt(spread['max'])} "
        f"({x_label}={spread['max_at']:g}), x{spread['ratio']:.3g}"
    )
    if kind == "flat":
        if spread is None:
            return ClaimReport(
                text, panel, time, kind, "insufficient data", rng, points, None, None, FLAT_RATIO_MAX, note
            )
        ok = spread["ratio"] <= FLAT_RATIO_MAX.value
        verdict = "holds" if ok else "does not hold"
        return ClaimReport(text, panel, time, kind, verdict, rng, points, spread, None, FLAT_RATIO_MAX, note)
    use_log = x_log and all(a > 0 for a, _ in have)
    xs = [math.log(a) if use_log else a for a, _ in have]
    try:
        fit = fit_line(xs, [math.log(t) for _, t in have])
    except ValueError as exc:
        why = "; ".join(filter(None, [note, str(exc)]))
        return ClaimReport(text, panel, time, kind, "insufficient data", rng, points, spread, None, None, why)
    decided = _sign_verdict(fit, 1 if kind == "increases" else -1)
    verdict = {"yes": "holds", "no": "does not hold", "undecided": "inconclusive"}[decided]
    against = f"ln {x_label}" if use_log else x_label
    measured = f"slope of ln {time} vs {against} {fit.slope:.3g} [{fit.ci_low:.3g}, {fit.ci_high:.3g}]; {rng}"
    return ClaimReport(text, panel, time, kind, verdict, measured, points, spread, fit, None, note)


def claims_markdown(reports: Sequence[ClaimReport]) -> str:
    """One row per caption: what it says, the panel and time, the measured numbers, the rule (with the
    tolerance's name, value and reason where one is used) and the verdict."""
    rows = []
    for r in reports:
        if r.kind == "flat":
            rule = f"largest / smallest point mean <= {r.tolerance.text()}" if r.tolerance else "-"
        else:
            side = "> 0" if r.kind == "increases" else "< 0"
            rule = f"slope's 95% interval {side} (no tolerance)"
        where = f"{r.panel}: " if r.panel else ""
        rows.append([r.text, f"{where}{r.time} {r.kind}", r.measured, rule, r.verdict])
    return tables.markdown_table(["caption", "panel", "measured", "rule", "verdict"], rows)
