"""One result schema for every run: its writer (``run_result``), its typed reader (``parse``, ``load_run``),
the run's curves (``read_curves``, ``load_curves``), a sweep's results as a pandas DataFrame (``runs_frame``),
the W&B summary (``flat_summary``) and the printed table (``format_run_table``).

Every run trains B >= 1 seeds (``seeds`` = B; its member i is the run of seed ``seed + i``), and its
``phases.json`` has one shape whatever B:

    status, diverged_at, steps_run            how the run ended ("completed", "diverged", "interrupted")
    t_overfit, t_generalize, grokking_time    t1, t2, t2 - t1 in GD steps: the member's for B = 1, the mean
                                              over members for B > 1 (None if any member lacks it)
    final                                     losses at the last recorded step (mean over members)
    members                                   B per-member results: times, statuses, exact times, bounds,
                                              envelopes, quantities, population, accuracy, missing
    aggregate                                 mean, std, min, max and values of each time over members
    config                                    the resolved config
    schema                                    SCHEMA_VERSION

For B = 1 the member's own fields (``exact``, ``bounds``, ``envelopes``, ``quantities``, ``accuracy``, ...)
are repeated at the top level, so analysis scripts written for single runs keep working. ``load_run`` also
reads the files of earlier versions (a single run without ``members``).

Every reader in the package (figures, sweep state and table, DataFrame, W&B summary) goes through ``parse``:
a file that is damaged, foreign, of a future schema or holds a wrong type raises ``ResultError`` naming the
file and the field, never a silent wrong value.

``curves.json`` holds the curves at the logged steps: ``step`` (GD steps), the measured ``train/loss``,
``test/loss`` (accuracies for classification; ``*_std`` over the members when ``seeds`` > 1) and, for the linear
families, the exact dynamics at the same steps: ``exact/train/loss`` and ``exact/test/loss`` (Eqs. (3)-(5)).

Lightning-free: the sweep agent, the figures and ``sweep-table`` read results without importing it.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightning_grok.tables import text_table

SCHEMA_VERSION = 2
TIMES = ("t_overfit", "t_generalize", "grokking_time")
# a member's fields that describe the run, not the member: never repeated inside members
RUN_FIELDS = ("status", "diverged_at", "config", "members", "aggregate", "schema")
EXACT_PREFIX = "exact/"  # curves.json and W&B: the exact dynamics beside the measured curve of the same name


class ResultError(ValueError):
    """A phases.json or curves.json that cannot be read as a result (damaged, foreign, future schema, wrong
    type). ``path`` is the file, ``problem`` what is wrong with it."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = Path(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


class _Invalid(Exception):
    """A field of the document with the wrong type or shape; turned into ResultError with the file's path."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}" if where else problem)


# ---- typed fields ------------------------------------------------------------------------------------------
def _at(where: str, key: str) -> str:
    """The dotted path of ``key`` inside the field ``where`` ("" at the top)."""
    return f"{where}.{key}" if where else key


def _what(v: Any) -> str:
    text = json.dumps(v, default=str)
    return f"{type(v).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _int(v: Any, where: str, optional: bool = True) -> int | None:
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise _Invalid(where, f"expected an integer (GD steps){' or null' if optional else ''}, got {_what(v)}")
    return v


def _num(v: Any, where: str, optional: bool = True) -> float | None:
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _Invalid(where, f"expected a number{' or null' if optional else ''}, got {_what(v)}")
    return v


def _str(v: Any, where: str, optional: bool = True) -> str | None:
    if v is None and optional:
        return None
    if not isinstance(v, str):
        raise _Invalid(where, f"expected a string, got {_what(v)}")
    return v


def _bool(v: Any, where: str) -> bool | None:
    if v is not None and not isinstance(v, bool):
        raise _Invalid(where, f"expected true, false or null, got {_what(v)}")
    return v


def _obj(v: Any, where: str, optional: bool = True) -> dict:
    if v is None and optional:
        return {}
    if not isinstance(v, dict):
        raise _Invalid(where, f"expected an object, got {_what(v)}")
    return v


def _list(v: Any, where: str, optional: bool = True) -> list:
    if v is None and optional:
        return []
    if not isinstance(v, list):
        raise _Invalid(where, f"expected a list, got {_what(v)}")
    return v


def _losses(v: Any, where: str) -> dict[str, float]:
    return {str(k): _num(x, f"{where}.{k}") for k, x in _obj(v, where).items()}


@dataclass(frozen=True)
class Times:
    """t1, t2 and t2 - t1 in GD steps (None: not reached). With several seeds the run-level times are means (floats)."""

    t_overfit: float | None
    t_generalize: float | None
    grokking_time: float | None

    def __getitem__(self, key: str) -> float | None:  # times[k] for k in TIMES
        if key not in TIMES:
            raise KeyError(key)
        return getattr(self, key)

    @classmethod
    def _parse(cls, d: dict, where: str, number: bool = False, **extra: Any) -> Times:
        read = _num if number else _int
        return cls(*(read(d.get(k), _at(where, k)) for k in TIMES), **extra)


@dataclass(frozen=True)
class ExactTimes(Times):
    """The exact GD dynamics' times (theory/exact.py, Eqs. (3)-(5)) and whether the measured ones equal them
    (None: neither was reached within the run)."""

    t_overfit_matches: bool | None = None
    t_generalize_matches: bool | None = None


@dataclass(frozen=True)
class AccuracyTimes(Times):
    """Classification: t1 and t2 read off the accuracies (train accuracy, test accuracy reach ``tau``)."""

    tau: float | None = None
    t_overfit_status: str | None = None
    t_generalize_status: str | None = None


@dataclass(frozen=True)
class Hypothesis:
    statement: str
    met: bool
    required: bool = True


@dataclass(frozen=True)
class Bound:
    """One bound on t1 or t2 (theory/bounds.py): its value in GD steps, which side it bounds, the measured
    time it was judged against and the verdict ("holds", "violated", "hypothesis not met", "undetermined")."""

    name: str
    value: float | None
    verdict: str | None
    target: str | None = None
    side: str | None = None
    source: str | None = None
    measured: int | None = None
    hypotheses: tuple[Hypothesis, ...] = ()

    @property
    def failed_hypotheses(self) -> list[str]:
        """The hypotheses not met, "(not required)" after those the proof does not need."""
        return [h.statement + ("" if h.required else " (not required)") for h in self.hypotheses if not h.met]


@dataclass(frozen=True)
class Envelope:
    """A Thm 4.1 envelope checked on every step: the worst measured/envelope ratio and the verdict."""

    worst_ratio: float | None
    verdict: str | None


@dataclass(frozen=True)
class Population:
    """How the population loss L was measured: ``source`` and the standard error of a sampled estimate."""

    source: str | None
    test_loss_stderr: float | None


@dataclass(frozen=True)
class Member:
    """One seed's result (a member of a run of several seeds, or the whole of a single run)."""

    steps_run: int
    times: Times
    final: dict[str, float]
    t_overfit_status: str | None = None
    t_generalize_status: str | None = None
    eps: float | None = None
    c: float | None = None
    exact: ExactTimes | None = None
    accuracy: AccuracyTimes | None = None
    bounds: dict[str, Bound] = field(default_factory=dict)
    envelopes: dict[str, Envelope] = field(default_factory=dict)
    quantities: dict[str, Any] = field(default_factory=dict)
    population: Population | None = None
    missing: tuple[str, ...] = ()
    theory_note: str | None = None

    @property
    def t_overfit(self) -> int | None:
        return self.times.t_overfit

    @property
    def t_generalize(self) -> int | None:
        return self.times.t_generalize

    @property
    def grokking_time(self) -> int | None:
        return self.times.grokking_time

    def judged_times(self, by: str = "loss") -> Times:
        """The times a figure or table shows: by loss, or by accuracy (``by="accuracy"``) where measured."""
        return self.accuracy if by == "accuracy" and self.accuracy is not None else self.times

    @property
    def n_over_lambda_min(self) -> float | None:
        """n / lambda+_min(Phi^T Phi), the scale of the t1 bound (Eq. 6); None without the theory."""
        n, lam = self.quantities.get("n"), self.quantities.get("lam_plus_min")
        return n / lam if isinstance(n, int | float) and isinstance(lam, int | float) and lam > 0 else None


@dataclass(frozen=True)
class Stats:
    """Mean, std, min and max over members (None if any member lacks the value), and the values themselves."""

    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    values: tuple[float | None, ...] = ()


def member_stats(values: Sequence[float | None]) -> Stats:
    """Stats of ``values``: None throughout when one is missing (a mean over the members that reached t2 alone
    would be biased towards the fast ones)."""
    if not values or any(v is None for v in values):
        return Stats(None, None, None, None, tuple(values))
    a = np.asarray(values, dtype=np.float64)
    return Stats(float(a.mean()), float(a.std()), float(a.min()), float(a.max()), tuple(values))


# ---- reading: the document as typed objects ------------------------------------------------------------------
def _parse_bound(name: str, d: Any, where: str) -> Bound:
    d = _obj(d, where, optional=False)
    hyps = []
    for i, h in enumerate(_list(d.get("hypotheses"), f"{where}.hypotheses")):
        hw = f"{where}.hypotheses[{i}]"
        h = _obj(h, hw, optional=False)
        required = _bool(h.get("required", True), f"{hw}.required")
        hyps.append(
            Hypothesis(
                _str(h.get("statement"), f"{hw}.statement") or "",
                bool(_bool(h.get("met"), f"{hw}.met")),
                required is not False,
            )
        )
    return Bound(
        name=name,
        value=_num(d.get("value"), f"{where}.value"),
        verdict=_str(d.get("verdict"), f"{where}.verdict"),
        target=_str(d.get("target"), f"{where}.target"),
        side=_str(d.get("side"), f"{where}.side"),
        source=_str(d.get("source"), f"{where}.source"),
        measured=_int(d.get("measured"), f"{where}.measured"),
        hypotheses=tuple(hyps),
    )


def _scalar(v: Any, where: str) -> Any:
    if v is not None and not isinstance(v, bool | int | float | str):
        raise _Invalid(where, f"expected a number, string, boolean or null, got {_what(v)}")
    return v


def _parse_member(d: Any, where: str, steps_run: int) -> Member:
    d = _obj(d, where, optional=False)

    def at(key: str) -> str:
        return _at(where, key)

    exact = _obj(d.get("exact"), at("exact"))
    acc = _obj(d.get("accuracy"), at("accuracy"))
    pop = _obj(d.get("population"), at("population"))
    return Member(
        steps_run=_int(d.get("steps_run", steps_run), at("steps_run"), optional=False),
        times=Times._parse(d, where),
        final=_losses(d.get("final"), at("final")),
        t_overfit_status=_str(d.get("t_overfit_status"), at("t_overfit_status")),
        t_generalize_status=_str(d.get("t_generalize_status"), at("t_generalize_status")),
        eps=_num(d.get("eps"), at("eps")),
        c=_num(d.get("c"), at("c")),
        exact=ExactTimes._parse(
            exact,
            at("exact"),
            t_overfit_matches=_bool(exact.get("t_overfit_matches"), at("exact.t_overfit_matches")),
            t_generalize_matches=_bool(exact.get("t_generalize_matches"), at("exact.t_generalize_matches")),
        )
        if exact
        else None,
        accuracy=AccuracyTimes._parse(
            acc,
            at("accuracy"),
            tau=_num(acc.get("tau"), at("accuracy.tau")),
            t_overfit_status=_str(acc.get("t_overfit_status"), at("accuracy.t_overfit_status")),
            t_generalize_status=_str(acc.get("t_generalize_status"), at("accuracy.t_generalize_status")),
        )
        if acc
        else None,
        bounds={
            str(k): _parse_bound(str(k), b, at(f"bounds.{k}")) for k, b in _obj(d.get("bounds"), at("bounds")).items()
        },
        envelopes={
            str(k): Envelope(
                _num(_obj(e, at(f"envelopes.{k}"), False).get("worst_ratio"), at(f"envelopes.{k}.worst_ratio")),
                _str(e.get("verdict"), at(f"envelopes.{k}.verdict")),
            )
            for k, e in _obj(d.get("envelopes"), at("envelopes")).items()
        },
        quantities={
            str(k): _scalar(v, at(f"quantities.{k}")) for k, v in _obj(d.get("quantities"), at("quantities")).items()
        },
        population=Population(
            _str(pop.get("source"), at("population.source")),
            _num(pop.get("test_loss_stderr"), at("population.test_loss_stderr")),
        )
        if pop
        else None,
        missing=tuple(
            _str(s, at(f"missing[{i}]"), False) for i, s in enumerate(_list(d.get("missing"), at("missing")))
        ),
        theory_note=_str(d.get("theory_note"), at("theory_note")),
    )


def _parse_stats(d: Any, where: str) -> Stats:
    d = _obj(d, where, optional=False)
    values = tuple(_num(v, f"{where}.values[{i}]") for i, v in enumerate(_list(d.get("values"), f"{where}.values")))
    return Stats(*(_num(d.get(k), f"{where}.{k}") for k in ("mean", "std", "min", "max")), values)


@dataclass(frozen=True, repr=False)
class RunResult:
    """A run read back from its phases.json (any version), typed and validated. Times in GD steps; for an
    ensemble the run-level ``times`` are the members' means. ``data`` is the document in the current shape."""

    path: Path | None
    status: str
    diverged_at: int | None
    steps_run: int
    times: Times
    final: dict[str, float]
    members: tuple[Member, ...]
    aggregate: dict[str, Stats]
    config: dict
    schema: int
    data: dict = field(compare=False)

    def __repr__(self) -> str:
        t = self.times
        return (
            f"RunResult({str(self.path) if self.path else '-'}: {self.status}, {len(self.members)} member(s), "
            f"{self.steps_run} steps, t1={format_value(t.t_overfit)}, t2={format_value(t.t_generalize)})"
        )

    @property
    def t_overfit(self) -> float | None:
        return self.times.t_overfit

    @property
    def t_generalize(self) -> float | None:
        return self.times.t_generalize

    @property
    def grokking_time(self) -> float | None:
        return self.times.grokking_time

    @property
    def single(self) -> Member | None:
        """The member of a single run (B = 1), None for several seeds."""
        return self.members[0] if len(self.members) == 1 else None

    @property
    def seeds(self) -> list[int]:
        """Member i's seed: ``seed + i``."""
        base = self.config.get("seed", 0)
        base = base if isinstance(base, int) and not isinstance(base, bool) else 0
        return [base + i for i in range(len(self.members))]

    @property
    def grokked(self) -> bool:
        """Every member reached t2 (by accuracy for classification, the time such runs are judged by)."""
        return all(m.judged_times("accuracy").t_generalize is not None for m in self.members)

    @property
    def summary_status(self) -> str:
        """How the run ended, for a team's dashboard: ``status``, except ``no_t2`` for a run that completed
        without every member reaching t2 (it never generalized within ``steps_run``)."""
        return "no_t2" if self.status == "completed" and not self.grokked else self.status

    def member_rows(self) -> list[dict[str, Any]]:
        """One flat row per member: seed, times (GD steps), exact times, accuracy times, each bound's value and
        verdict, final losses."""
        rows = []
        for seed, m in zip(self.seeds, self.members, strict=True):
            row: dict[str, Any] = {"run": self.path.name if self.path else None, "seed": seed, "status": self.status}
            row |= {"steps_run": m.steps_run} | {k: m.times[k] for k in TIMES}
            row |= {f"exact_{k}": m.exact[k] if m.exact else None for k in TIMES}
            if m.accuracy:
                row |= {f"acc_{k}": m.accuracy[k] for k in TIMES}
            row |= {f"bound/{name}": b.verdict for name, b in m.bounds.items()}
            row |= {f"bound/{name}/value": b.value for name, b in m.bounds.items()}
            row |= {f"final/{k}": v for k, v in m.final.items()}
            rows.append(row)
        return rows


def parse(raw: Any, path: str | os.PathLike | None = None) -> RunResult:
    """The typed result of a phases.json document ``raw`` (any version); ResultError naming ``path`` and the
    field when it is not one: a wrong type (``"t_overfit": "abc"``), a foreign document, a newer schema."""
    try:
        return _parse(raw, Path(path) if path is not None else None)
    except _Invalid as exc:
        raise ResultError(path, str(exc)) from None


def _parse(raw: Any, path: Path | None) -> RunResult:
    if not isinstance(raw, dict):
        raise _Invalid("", f"not a lightning_grok result: the document is a {type(raw).__name__}, not an object")
    absent = [k for k in ("status", "steps_run", *TIMES) if k not in raw]
    if absent:
        keys = ", ".join(list(raw)[:6]) or "none"
        raise _Invalid("", f"not a lightning_grok result: no {', '.join(map(repr, absent))} (its keys: {keys})")
    schema = _int(raw.get("schema", 1), "schema", optional=False)
    if schema > SCHEMA_VERSION:
        raise _Invalid(
            "schema", f"{schema} is newer than this lightning_grok reads (up to {SCHEMA_VERSION}): upgrade it"
        )
    if schema < 1:
        raise _Invalid("schema", f"{schema} is not a schema version (1 ... {SCHEMA_VERSION})")
    status = _str(raw["status"], "status", optional=False)
    steps_run = _int(raw["steps_run"], "steps_run", optional=False)
    if "members" in raw:
        docs = _list(raw["members"], "members", optional=False)
        if not docs:
            raise _Invalid("members", "an empty list (a run has at least one member)")
        members = tuple(_parse_member(m, f"members[{i}]", steps_run) for i, m in enumerate(docs))
    else:  # version 1: a single run, its member's fields at the top level
        members = (_parse_member({k: v for k, v in raw.items() if k not in RUN_FIELDS}, "", steps_run),)
    stored = {
        str(k): _parse_stats(v, f"aggregate.{k}")
        for k, v in _obj(raw.get("aggregate"), "aggregate").items()
        if isinstance(v, dict)
    }
    computed = {}
    for k in TIMES:
        computed[k] = member_stats([m.times[k] for m in members])
        computed[f"exact_{k}"] = member_stats([m.exact[k] if m.exact else None for m in members])
    return RunResult(
        path=path,
        status=status,
        diverged_at=_int(raw.get("diverged_at"), "diverged_at"),
        steps_run=steps_run,
        times=Times._parse(raw, "", number=True),
        final=_losses(raw.get("final"), "final"),
        members=members,
        aggregate=computed | stored,
        config=_obj(raw.get("config"), "config"),
        schema=schema,
        data=normalize(raw),
    )


def _read_json(file: Path) -> Any:
    """The JSON in ``file``; ResultError naming it when it is empty, not UTF-8 or not JSON."""
    data = file.read_bytes()
    if not data.strip():
        raise ResultError(file, "empty file (the run was killed while writing it, or the disk was full)")
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ResultError(file, f"not UTF-8 text (byte {exc.start}): not a file lightning_grok wrote") from None
    except json.JSONDecodeError as exc:
        raise ResultError(
            file, f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}): truncated or damaged"
        ) from None


def load_run(run_dir: str | os.PathLike) -> RunResult:
    """The result of the run in ``run_dir`` (its phases.json, any version). FileNotFoundError when the run
    wrote none; ResultError (a ValueError) naming the file when it is damaged, foreign or of a newer schema."""
    path = Path(run_dir)
    file = path / "phases.json"
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no phases.json (not a run directory, or the run has not ended)")
    return _parse_at(file, path)


def _parse_at(file: Path, run_dir: Path) -> RunResult:
    try:
        return _parse(_read_json(file), run_dir)
    except _Invalid as exc:
        raise ResultError(file, str(exc)) from None


def read_curves(run_dir: str | os.PathLike) -> dict[str, list]:
    """The run's curves.json, validated: ``step`` (GD steps, increasing integers) and every curve a list of
    numbers (None where not evaluated) of the same length. FileNotFoundError when missing; ResultError when
    damaged."""
    file = Path(run_dir) / "curves.json"
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no curves.json")
    doc = _read_json(file)
    try:
        doc = _obj(doc, "", optional=False)
        steps = [_int(s, f"step[{i}]", optional=False) for i, s in enumerate(_list(doc.get("step"), "step"))]
        if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
            raise _Invalid("step", "not increasing")
        out: dict[str, list] = {"step": steps}
        for key, values in doc.items():
            if key == "step":
                continue
            vals = [_num(v, f"{key}[{i}]") for i, v in enumerate(_list(values, key, optional=False))]
            if len(vals) != len(steps):
                raise _Invalid(key, f"{len(vals)} values for {len(steps)} steps")
            out[key] = vals
    except _Invalid as exc:
        raise ResultError(file, str(exc)) from None
    return out


def load_curves(run_dir: str | os.PathLike):
    """The run's curves (``read_curves``) as a pandas DataFrame indexed by ``step`` (GD steps): the measured
    curves and, for the linear families, ``exact/train/loss`` and ``exact/test/loss`` at the same steps."""
    import pandas as pd

    curves = read_curves(run_dir)
    return pd.DataFrame({k: v for k, v in curves.items() if k != "step"}, index=pd.Index(curves["step"], name="step"))


def _flatten(prefix: str, value: Any, out: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def _sweep_name(run_dir: Path, root: Path) -> str | None:
    """The sweep (figure panel) a run belongs to: the nearest folder from ``run_dir`` up to ``root`` that holds
    a sweep file or state (``lightning-grok sweep`` and ``reproduce`` write both)."""
    for folder in (run_dir, *run_dir.parents):
        if (folder / "sweep.yaml").is_file() or (folder / "state.json").is_file():
            return folder.name
        if folder == root:
            break
    return None


def runs_frame(root: str | os.PathLike, config_keys: list[str] | None = None, strict: bool = False):
    """Every run under ``root`` (a run directory, or any depth below: a sweep directory, a figure's, a SLURM
    array's) as a pandas DataFrame, one row per member: the columns of ``RunResult.member_rows``, ``sweep`` (the
    sweep or figure panel), ``run_dir``, and the config keys that differ between runs (or ``config_keys``,
    dotted, e.g. ``optim.weight_decay``).

    FileNotFoundError when ``root`` does not exist, ResultError when it holds no run. A damaged phases.json is
    left out with one warning naming it, or raises ResultError with ``strict=True``."""
    import pandas as pd

    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such directory")
    files = [root / "phases.json"] if (root / "phases.json").is_file() else sorted(root.rglob("phases.json"))
    if not files:
        raise ResultError(root, "holds no run: no phases.json at any depth")
    results = []
    for file in files:
        try:
            results.append(_parse_at(file, file.parent))
        except (ResultError, OSError) as exc:
            if strict:
                raise
            warnings.warn(f"runs_frame: left out a damaged run: {exc}", stacklevel=2)
    configs = []
    for r in results:
        flat: dict = {}
        _flatten("", r.config, flat)
        configs.append(flat)
    if config_keys is None:
        keys = sorted({k for c in configs for k in c})
        varies = [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]
        config_keys = [k for k in varies if k not in ("seed", "output_dir")]
    rows = [
        {k: cfg.get(k) for k in config_keys} | row | {"sweep": _sweep_name(r.path, root), "run_dir": str(r.path)}
        for r, cfg in zip(results, configs, strict=True)
        for row in r.member_rows()
    ]
    return pd.DataFrame(rows)


# ---- writing: the document a run leaves -----------------------------------------------------------------------
def _stats_dict(stats: Stats) -> dict:
    return {"mean": stats.mean, "std": stats.std, "min": stats.min, "max": stats.max}


def aggregate(members: list[dict]) -> dict:
    """Mean, std, min and max over members of each phase time (and of the exact ones); None if any is missing."""
    out = {}
    for key in TIMES:
        vals = [m[key] for m in members]
        exact = [(m.get("exact") or {}).get(key) for m in members]
        out[key] = _stats_dict(member_stats(vals)) | {"values": vals}
        out[f"exact_{key}"] = _stats_dict(member_stats(exact))
        out[f"{key}_matches_exact"] = (
            all(v == e for v, e in zip(vals, exact, strict=True)) if None not in exact else None
        )
    return out


def run_result(status: str, diverged_at: int | None, members: list[dict], config: dict | None) -> dict:
    """The phases.json of a run whose members' results are ``members`` (B >= 1)."""
    agg = aggregate(members)
    times = {k: members[0][k] if len(members) == 1 else agg[k]["mean"] for k in TIMES}
    res = {"status": status, "diverged_at": diverged_at, "steps_run": members[0]["steps_run"]} | times
    res["final"] = {k: float(np.mean([m["final"][k] for m in members])) for k in members[0].get("final", {})}
    if len(members) == 1:  # the single run's fields where single-run scripts read them
        res |= {k: v for k, v in members[0].items() if k not in res}
    return res | {"members": members, "aggregate": agg, "config": config, "schema": SCHEMA_VERSION}


def normalize(raw: dict) -> dict:
    """A phases.json of any version in the current shape (a single run of version 1 had no ``members``)."""
    if "members" in raw:
        return raw
    member = {k: v for k, v in raw.items() if k not in RUN_FIELDS}
    return run_result(raw.get("status", ""), raw.get("diverged_at"), [member], raw.get("config")) | {
        "schema": raw.get("schema", 1)
    }


def as_result(res: RunResult | Mapping) -> RunResult:
    """``res`` typed: a RunResult as it is, a phases.json document parsed (``parse``)."""
    return res if isinstance(res, RunResult) else parse(dict(res))


# ---- the W&B summary and the printed table ----------------------------------------------------------------------
def format_value(v: Any, digits: int = 4) -> str:
    """A cell of a results table: "-" for missing, ``digits`` significant digits for floats."""
    if v is None:
        return "-"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def format_duration(seconds: float) -> str:
    """Wall time for a person: "45 s", "12 min", "1 h 20 min"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def _mean_or_none(values: Sequence[float | None]) -> float | None:
    return None if not values or None in values else float(np.mean(values))


def flat_summary(res: RunResult | Mapping) -> dict:
    """W&B summary keys (times in GD steps): grok/t_overfit, grok/t_generalize, grok/grokking_time, grok/acc/...
    (classification), grok/exact/..., grok/bound/..., final/...; grok/population (how the population loss was
    measured, ``members.describe_population``, when every member says the same); grok/grokked and grok/status
    (``RunResult.summary_status``); for several seeds the members' means with grok/*_std and grok/exact/*_std.
    Per-member values go to the ``theory/members`` table (wandb_theory), not to summary keys."""
    run = as_result(res)
    members, single = run.members, run.single
    s = {f"grok/{k}": run.times[k] for k in TIMES} | {"grok/steps_run": run.steps_run}
    s |= {"grok/grokked": run.grokked, "grok/status": run.summary_status}
    s |= {f"final/{k}": v for k, v in run.final.items()}
    sources = {m.population.source for m in members if m.population is not None and m.population.source}
    if len(sources) == 1:  # how L was measured: a test set of N points, or a closed form
        s["grok/population"] = sources.pop()
    if single is not None:
        if single.accuracy:
            s |= {f"grok/acc/{k}": single.accuracy[k] for k in TIMES}
        if single.exact:
            s |= {f"grok/exact/{k}": single.exact[k] for k in TIMES}
        for name, b in single.bounds.items():
            s[f"grok/bound/{name}"] = b.value
            s[f"grok/bound/{name}/verdict"] = b.verdict
        for name, e in single.envelopes.items():
            s[f"grok/envelope/{name}/verdict"] = e.verdict
        return s
    if all(m.accuracy for m in members):  # the members' mean, None if one lacks it
        s |= {f"grok/acc/{k}": _mean_or_none([m.accuracy[k] for m in members]) for k in TIMES}
    if all(m.exact for m in members):
        s |= {f"grok/exact/{k}": run.aggregate[f"exact_{k}"].mean for k in TIMES}
    s |= {f"grok/{k.replace('exact_', 'exact/')}_std": st.std for k, st in run.aggregate.items()}
    return s


def format_run_table(res: RunResult | Mapping) -> str:
    """The table ``fit`` prints at the end: measured and exact t1, t2, t2 - t1 (GD steps), bounds and their
    verdicts, envelopes and notes; for several seeds one line per member and the mean, std, min and max."""
    run = as_result(res)
    fmt = format_value
    if run.single is None:
        rows: list[list[object]] = [["member", "t1", "exact t1", "t2", "exact t2", "t2-t1"]]
        for i, m in enumerate(run.members):
            ex = m.exact
            rows.append(
                [i, fmt(m.t_overfit), fmt(ex and ex.t_overfit), fmt(m.t_generalize), fmt(ex and ex.t_generalize)]
                + [fmt(m.grokking_time)]
            )
        stats = [
            [key, "  ".join(f"{s} {fmt(getattr(run.aggregate[key], s))}" for s in ("mean", "std", "min", "max"))]
            for key in TIMES
        ]
        return "\n".join(
            [
                f"== phase transitions of {len(run.members)} seeds ({run.status}, {run.steps_run} steps) ==",
                *text_table(rows, align="<>>>>>", min_widths=(6, 8, 8, 8, 8, 8)),
                *text_table(stats, min_widths=(16,), sep=" "),
            ]
        )
    m = run.single
    times: list[list[object]] = [["", "measured", "exact"]]
    for key, label in zip(TIMES, ("t1 (overfit)", "t2 (generalize)", "grokking time t2-t1"), strict=True):
        times.append([label, fmt(run.times[key]), fmt(m.exact[key] if m.exact else None)])
    if m.accuracy:
        times.append(["t1 by accuracy", fmt(m.accuracy.t_overfit)])
        times.append(["t2 by accuracy", fmt(m.accuracy.t_generalize)])
    lines = [f"== phase transitions ({run.status}, {run.steps_run} steps) ==", *text_table(times, "<>>", (22, 10, 10))]
    verdicts: list[list[object]] = [["bound", "value", "verdict"]] if m.bounds else []
    verdicts += [[name, fmt(b.value), b.verdict] for name, b in m.bounds.items()]
    verdicts += [[name, fmt(e.worst_ratio), e.verdict] for name, e in m.envelopes.items()]
    lines += text_table(verdicts, "<>", (26, 10))
    for note in m.missing:
        lines.append(f"note: {note}")
    return "\n".join(lines)
