"""The theory beside the measurement in W&B: exact curves, step metric, tables, figure and results artifact.

Every time and every x axis is in GD steps. What a run sends W&B (rank 0 only, nothing under
``wandb.mode=disabled``, where the run has no W&B logger):

* history, one row per logged step of the geometric schedule: the measured ``train/loss``, ``test/loss``
  (accuracies where there are any; the members' mean, with ``*_std``, for several seeds), the exact GD
  dynamics of the same tensors ``exact/train/loss`` (L_n, Eq. 1) and ``exact/test/loss`` (L) at the same
  steps (the members' mean and std, like the measured keys), and the step metric ``gd_step``; every curve
  key is declared with ``define_metric(key, step_metric="gd_step")`` so the UI plots it against GD steps.
  ``gd_step`` is the one step metric: rows go to ``WandbLogger.log_metrics`` without a step, so
  Lightning's ``trainer/global_step`` is never logged (it is declared hidden), and the named declarations
  take precedence over Lightning's ``*`` one.
* summary: ``results.flat_summary`` (phase times declared ``summary="last"``: the value the run
  wrote last, which is what a sweep reads; ``grok/grokked`` and ``grok/status``, ``no_t2`` for a run that
  completed without reaching t2).
* name, tags and notes (``wandb_logger``): ``ridge-wd1e-4-s3`` (family, the keys set on the command line,
  the seed), tags family, data kind and ``ensemble`` (seeds > 1), plus ``wandb.tags``; ``wandb.notes``.
* tables: ``theory/bounds`` (one row per member and bound: the paper's equation, the time it bounds, its side,
  value, the measured time, verdict, the hypotheses not met), ``theory/exact_vs_measured`` (t1, t2 against the
  exact dynamics per member) and, for several seeds, ``theory/members`` (seed, times, exact times, final losses
  per member).
* image ``theory/curves``: L_n and L against GD steps (log x), measured solid, exact dashed, t1 and t2 marked.
* artifact ``results-<run id>`` of type ``results``: ``phases.json`` and ``curves.json``.

W&B never stops the science: a failure while logging a table, the figure or the artifact prints one line
``lightning-grok: W&B: could not log ... (<error>)`` on stderr and the run goes on (its files are written).
wandb and matplotlib are imported inside the functions that need them.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.utilities import rank_zero_only

from lightning_grok.results import EXACT_PREFIX, TIMES, ExactTimes, RunResult

STEP_METRIC = "gd_step"  # logged in every history row: the GD step of the row
THEORY_KEYS = ("theory/bounds", "theory/exact_vs_measured", "theory/members", "theory/curves")
LIGHTNING_STEP = "trainer/global_step"  # WandbLogger's step key: hidden, the rows carry gd_step only

_declared: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # wandb run -> keys declared in it


def _warn(what: str, exc: BaseException) -> None:
    print(f"lightning-grok: W&B: could not log {what} ({type(exc).__name__}: {exc})", file=sys.stderr, flush=True)


def wandb_runs(trainer: Any) -> list[Any]:
    """The wandb Run of each of the trainer's ``WandbLogger``s (none when W&B is disabled)."""
    from lightning.pytorch.loggers import WandbLogger

    runs = []
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            run = logger.experiment
            if hasattr(run, "define_metric") and hasattr(run, "log"):
                runs.append(run)
    return runs


def exact_curves(theories: Sequence[Any], steps: np.ndarray) -> dict[str, np.ndarray]:
    """Exact training loss L_n and population loss L at ``steps`` (GD steps) as ``exact/train/loss`` and
    ``exact/test/loss``: one member's values, or the members' mean with ``*_std`` (as the measured keys).
    Empty when a member has no closed form; no ``exact/test/loss`` when one has no population loss."""
    steps = np.asarray(steps, dtype=np.int64)
    if not len(theories) or any(th is None for th in theories) or not len(steps):
        return {}
    exacts = [th.exact for th in theories]
    values = {"train/loss": np.array([e.train_loss(steps) for e in exacts])}
    if all(e.has_population for e in exacts):
        values["test/loss"] = np.array([e.population_loss(steps) for e in exacts])
    out = {}
    for key, v in values.items():  # v: (members, steps)
        out[EXACT_PREFIX + key] = v.mean(axis=0)
        if len(exacts) > 1:
            out[f"{EXACT_PREFIX}{key}_std"] = v.std(axis=0)
    return out


@rank_zero_only
def declare_curves(trainer: Any, keys: Sequence[str]) -> None:
    """``define_metric(key, step_metric="gd_step")`` for each curve key not yet declared in the run (once per
    run and key, before its first row)."""
    for run in wandb_runs(trainer):
        done = _declared.setdefault(run, set())
        new = [k for k in keys if k not in done]
        if not new:
            continue
        try:
            if STEP_METRIC not in done:
                run.define_metric(STEP_METRIC)
                # WandbLogger declares it as every key's step; no row carries it (log_metrics gets no step)
                run.define_metric(LIGHTNING_STEP, hidden=True)
            for key in new:
                if key != STEP_METRIC:
                    run.define_metric(key, step_metric=STEP_METRIC, step_sync=True)
        except Exception as exc:  # noqa: BLE001 - W&B never stops a run
            _warn("the metric definitions", exc)
        done.update(new)
        done.add(STEP_METRIC)


def _matches(exact: ExactTimes) -> bool | None:
    flags = [exact.t_overfit_matches, exact.t_generalize_matches]
    if False in flags:
        return False
    return True if all(f is True for f in flags) else None


def bounds_rows(res: RunResult) -> list[list]:
    """One row per (member, bound): member, name, source, target, side, value, measured, verdict, and the
    hypotheses that are not met ("; "-joined, "(not required)" after those the proof does not need)."""
    return [
        [i, name, b.source, b.target, b.side, b.value, b.measured, b.verdict, "; ".join(b.failed_hypotheses)]
        for i, m in enumerate(res.members)
        for name, b in m.bounds.items()
    ]


BOUNDS_COLUMNS = ["member", "name", "source", "target", "side", "value", "measured", "verdict", "failed_hypotheses"]
EXACT_COLUMNS = ["member", "t1", "exact_t1", "t2", "exact_t2", "matches"]
MEMBERS_COLUMNS = [
    "member",
    "seed",
    "t1",
    "t2",
    "grokking_time",
    "exact_t1",
    "exact_t2",
    "final_train_loss",
    "final_test_loss",
]


def exact_rows(res: RunResult) -> list[list]:
    """Per member with exact dynamics: t1, exact t1, t2, exact t2 (GD steps) and whether both match."""
    return [
        [i, m.t_overfit, m.exact.t_overfit, m.t_generalize, m.exact.t_generalize, _matches(m.exact)]
        for i, m in enumerate(res.members)
        if m.exact
    ]


def member_rows(res: RunResult) -> list[list]:
    """Per member: index, seed, t1, t2, t2 - t1, exact t1, exact t2 (GD steps), final training and test loss
    (the columns of ``results.RunResult.member_rows`` this table shows)."""
    columns = [*TIMES, "exact_t_overfit", "exact_t_generalize", "final/train/loss", "final/test/loss"]
    return [[i, row["seed"], *(row.get(k) for k in columns)] for i, row in enumerate(res.member_rows())]


def curves_figure(res: RunResult, curves: dict) -> Any | None:
    """Matplotlib figure (Agg): L_n and L against GD steps, log x, measured solid (members' mean, +- std band),
    exact dashed (the ``exact/*`` curves of curves.json), t1 and t2 marked (``plots.ensemble_panel``). None
    without curves or exact dynamics."""
    exact = {
        k[len(EXACT_PREFIX) :]: v for k, v in curves.items() if k.startswith(EXACT_PREFIX) and not k.endswith("_std")
    }
    if not curves.get("step") or not exact:
        return None
    from lightning_grok import plots  # matplotlib, Agg backend

    first, count = res.members[0], len(res.members)
    phases = res.config.get("phases") or {}
    eps = first.eps if first.eps is not None else phases.get("eps")
    c = first.c if first.c is not None else phases.get("c")
    fig, ax = plots.plt.subplots(figsize=(6.4, 4.4))
    plots.ensemble_panel(
        ax,
        curves,
        exact={k: np.asarray(v, dtype=np.float64) for k, v in exact.items()},
        t1=res.t_overfit,
        t2=res.t_generalize,
        eps=eps,
        c=c,
        title="measured (solid) vs exact GD (dashed)" + (f", mean of {count} seeds" if count > 1 else ""),
    )
    fig.tight_layout()
    return fig


def _log_table(run: Any, key: str, what: str, columns: list[str], rows: list[list], step: int) -> None:
    if not rows:
        return
    try:
        import wandb

        run.log({key: wandb.Table(columns=columns, data=rows, allow_mixed_types=True), STEP_METRIC: step})
    except Exception as exc:  # noqa: BLE001 - W&B never stops a run
        _warn(what, exc)


def _log_figure(run: Any, res: RunResult, curves: dict) -> None:
    fig = None
    try:
        fig = curves_figure(res, curves)
        if fig is not None:
            import wandb

            run.log({"theory/curves": wandb.Image(fig), STEP_METRIC: res.steps_run})
    except Exception as exc:  # noqa: BLE001
        _warn("the measured-versus-exact figure", exc)
    finally:
        if fig is not None:
            import matplotlib.pyplot as plt

            plt.close(fig)


def _log_artifact(run: Any, output_dir: Path | None) -> None:
    files = [output_dir / name for name in ("phases.json", "curves.json")] if output_dir is not None else []
    files = [f for f in files if f.is_file()]
    if not files:
        return
    try:
        import wandb

        artifact = wandb.Artifact(f"results-{run.id}", type="results", description="phases.json and curves.json")
        for path in files:
            artifact.add_file(str(path), name=path.name)
        run.log_artifact(artifact)
    except Exception as exc:  # noqa: BLE001
        _warn("the results artifact", exc)


@rank_zero_only
def log_results(trainer: Any, res: RunResult, summary: dict, curves: dict, output_dir: Path | None) -> None:
    """At the end of a run, to each W&B run of the trainer: the summary (phase times declared
    ``summary="last"``), the bounds, exact-versus-measured and members tables, the figure and the results
    artifact (``output_dir``'s phases.json and curves.json, already written). Never raises for W&B's sake."""
    for run in wandb_runs(trainer):
        try:
            for key in summary:
                if key.startswith("grok/") and key.rsplit("/", 1)[-1] in TIMES:
                    run.define_metric(key, summary="last")
            # named, so Lightning's "*" (step-synced to trainer/global_step) does not stamp them with it
            for key in THEORY_KEYS:
                run.define_metric(key, step_metric=STEP_METRIC)
        except Exception as exc:  # noqa: BLE001
            _warn("the summary metric definitions", exc)
        try:
            run.summary.update(summary)
        except Exception as exc:  # noqa: BLE001
            _warn("the summary", exc)
        step = res.steps_run
        _log_table(run, "theory/bounds", "the bounds table", BOUNDS_COLUMNS, bounds_rows(res), step)
        versus = exact_rows(res)
        _log_table(run, "theory/exact_vs_measured", "the exact-versus-measured table", EXACT_COLUMNS, versus, step)
        if len(res.members) > 1:  # a single run's one row is its summary already
            _log_table(run, "theory/members", "the members table", MEMBERS_COLUMNS, member_rows(res), step)
        _log_figure(run, res, curves)
        _log_artifact(run, output_dir)
