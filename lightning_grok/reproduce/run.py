"""``reproduce(...)``: the entry point of ``lightning-grok reproduce`` (check the input, run the figures' sweeps
unless ``--from``, read the runs back, then write each figure's outputs, or say which points it lacks)."""

from __future__ import annotations

import math
import os
import resource
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import yaml

from lightning_grok.atomic import atomic_write_json
from lightning_grok.exit_codes import EXIT_INCOMPLETE, exit_for_signal
from lightning_grok.reproduce.collect import Run, find_panel_dir, read_runs
from lightning_grok.reproduce.figures import FIGURES
from lightning_grok.reproduce.report import _finish_figure
from lightning_grok.reproduce.schedule import point_seconds
from lightning_grok.reproduce.sweeps import (
    BATCH_ENV,
    Job,
    StopSignals,
    check_overrides,
    finished_points,
    grid_size,
    panel_dirname,
    panel_sweep,
    prepare_jobs,
    run_agents,
)
from lightning_grok.results import format_duration


class Stopped(Exception):
    """``reproduce`` stopped by SIGINT or SIGTERM: its agents stopped their runs (checkpointed, recorded
    ``killed`` in their sweep's state.json) and no figure was drawn after the signal. ``exit_status``: 128 + N."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        self.exit_status = exit_for_signal(self.signum)
        super().__init__(f"stopped by {signal.Signals(self.signum).name}")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def check_out_dir(out_dir: Path) -> None:
    """``--out`` must be a folder or not exist yet (nor any part of its path be a file); ConfigError otherwise."""
    from lightning_grok.config import ConfigError

    probe = out_dir
    while not probe.exists() and not probe.is_symlink() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        where = "" if probe == out_dir else f": {probe}"
        raise ConfigError(f"--out {out_dir}{where} is a file, not a folder")


def check_from_dir(from_dir: Path) -> None:
    """``--from`` must be a folder holding at least one run (a ``phases.json`` at any depth); ConfigError
    naming it otherwise, before anything is read or written."""
    from lightning_grok.config import ConfigError

    if not from_dir.exists():
        raise ConfigError(f"--from {from_dir}: no such folder")
    if not from_dir.is_dir():
        raise ConfigError(f"--from {from_dir} is a file, not a folder of runs")
    if next(from_dir.rglob("phases.json"), None) is None:
        what = "is empty" if next(from_dir.iterdir(), None) is None else "holds no run (no phases.json at any depth)"
        raise ConfigError(f"--from {from_dir} {what}: nothing to draw")


def _expected_points(folder: Path | None, job: Job | None) -> int | None:
    """The points of a panel's grid: its Job's, else those of the sweep.yaml its folder holds (None: unknown,
    e.g. plain run directories given by ``--from``)."""
    if job is not None:
        return grid_size(job.raw)
    try:
        raw = yaml.safe_load((folder / "sweep.yaml").read_text())  # type: ignore[operator]
    except (OSError, TypeError, yaml.YAMLError):
        return None
    if not isinstance(raw, dict) or raw.get("method") != "grid" or not isinstance(raw.get("parameters"), dict):
        return None
    return grid_size(raw)


def panel_lacks(folder: Path | None, runs: Sequence[Run], left: Sequence[Path], job: Job | None) -> dict | None:
    """What a panel lacks to be drawn whole, None when nothing: {missing (points without a run that ended;
    None: all of them, no run found), points (the grid's size, None if unknown), interrupted (runs stopped
    before their end)}."""
    expected = _expected_points(folder, job)
    if folder is None or (not runs and not left and expected is None):
        return {"missing": expected, "points": expected, "interrupted": 0}
    missing = max(expected - len(runs), len(left), 0) if expected is not None else len(left)
    return {"missing": missing, "points": expected, "interrupted": len(left)} if missing else None


def _describe(lacking: Mapping[str, dict]) -> str:
    parts = []
    for key, lack in lacking.items():
        if lack["missing"] is None:
            parts.append(f"panel {key} has no run")
            continue
        of = f" of {lack['points']}" if lack["points"] is not None else ""
        why = f" ({lack['interrupted']} interrupted)" if lack["interrupted"] else ""
        parts.append(f"panel {key} lacks {lack['missing']}{of} point(s){why}")
    return "; ".join(parts)


def _lacks_text(name: str, lacking: Mapping[str, dict], from_dir: Path | str | None) -> str:
    todo = "run the same command again to finish them" if from_dir is None else "finish those runs"
    return f"reproduce {name}: not drawn: {_describe(lacking)}; {todo}, or pass --partial to draw what there is"


def dry_run(
    names: str | Sequence[str], *, quick: bool, seeds: int | None, overrides: Sequence[str], agents: int = 1
) -> str:
    """What ``reproduce`` would run, nothing run or written: per panel the runs (points x seeds), the GD
    steps they may take (``trainer.max_steps`` each, an upper bound: runs stop at t2 + the stop margin) and an
    estimated wall time at ESTIMATED_STEPS_PER_S over ``agents`` agents. ConfigError for a bad figure or
    override, as ``reproduce``."""
    import itertools

    from lightning_grok.config import ConfigError

    names = [names] if isinstance(names, str) else list(names)
    names = list(FIGURES) if names == ["all"] else names
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise ConfigError(f"unknown figure {unknown[0]!r} (allowed: {', '.join(FIGURES)}, all)")
    opts = {"quick": quick, "seeds": seeds, "overrides": tuple(overrides)}
    check_overrides([FIGURES[n] for n in names], **opts)
    lines, total_runs, total_steps, total_s, seen = [], 0, 0, 0.0, set()
    for name in names:
        for panel in FIGURES[name].panels:
            if (panel.sweep, quick) in seen:  # panels may share a sweep (Fig. 6)
                continue
            seen.add((panel.sweep, quick))
            raw = panel_sweep(panel, **opts)
            command = raw["command"]
            config = yaml.safe_load(Path(command[command.index("fit") + 1]).read_text()) or {}
            params = raw["parameters"]
            grid = [list(p["values"]) if "values" in p else [p.get("value")] for p in params.values()]
            runs = steps = 0
            seconds = 0.0
            points = math.prod(len(values) for values in grid)
            for values in itertools.product(*grid):
                point = dict(zip(params, values, strict=True))
                max_steps = point.get("trainer.max_steps") or config.get("trainer", {}).get("max_steps", 50_000)
                k = int(point.get("seeds") or 1)
                runs += k
                steps += int(max_steps) * k
                seconds += point_seconds(config, point)  # to t2 + margin, estimated (schedule.py)
            lines.append(
                f"  {name} {panel.key}: {points} point(s), {runs} seed run(s), at most {steps:,} GD steps, "
                f"~{format_duration(seconds)}"
            )
            total_runs, total_steps, total_s = total_runs + runs, total_steps + steps, total_s + seconds
    head = f"reproduce {' '.join(names)}{' --quick' if quick else ''} (dry run: nothing is run or written)"
    tail = (
        f"total: {total_runs} seed run(s), at most {total_steps:,} GD steps, ~{format_duration(total_s / agents)} "
        f"with {agents} agent(s) (an estimate at one core's measured speed; runs stop at t2 + margin)"
    )
    return "\n".join([head, *lines, tail])


def reproduce(
    names: str | Sequence[str],
    out_dir: Path | str = "figures",
    *,
    quick: bool = False,
    overrides: Sequence[str] = (),
    seeds: int | None = None,
    agents: int = 1,
    from_dir: Path | str | None = None,
    partial: bool = False,
    env: Mapping[str, str] | None = None,
    say: Callable[[str], None] = print,
    warn: Callable[[str], None] = _stderr,
    batch: bool = True,
) -> dict[str, dict]:
    """Run (unless ``from_dir``) and draw figures ``names`` (``"all"`` for every one); returns per figure
    {status, lacking, png, pdf, json, fits_md, data (what the JSON holds), plotted (the drawn arrays)}.

    ``status``: 0, or the agents' exit status when one of them failed; ``EXIT_INCOMPLETE`` (4) for a figure
    that lacks points (``lacking``: per panel, see ``panel_lacks``): unless ``partial`` (then what there is
    gets drawn), such a figure is not drawn and its result is only {status, lacking, message}, the message
    also given to ``warn`` (stderr).
    Raises ConfigError (CLI exit 2) before any folder is made for an unknown figure, a setting the config
    schema refuses, an ``out_dir`` that is a file, a ``from_dir`` that is missing or holds no run; Stopped
    (exit 128 + N) after SIGINT or SIGTERM, once the agents have stopped their runs; OSError naming the
    file when an output cannot be written (a full disk).
    """
    from lightning_grok.config import ConfigError

    names = [names] if isinstance(names, str) else list(names)
    names = list(FIGURES) if names == ["all"] else names
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise ConfigError(f"unknown figure {unknown[0]!r} (allowed: {', '.join(FIGURES)}, all)")
    if seeds is not None and seeds < 1:
        raise ConfigError(f"invalid value for '--seeds': {seeds} (allowed: an integer >= 1)")
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    if from_dir is not None:
        check_from_dir(Path(from_dir))
    opts = {"quick": quick, "seeds": seeds, "overrides": tuple(overrides)}
    check_overrides([FIGURES[n] for n in names], **opts)
    if not batch:  # every point in its own GD loop (``sweeps.batch_points``)
        env = {**(os.environ if env is None else env), BATCH_ENV: "1"}
    with StopSignals() as stop:
        return _reproduce(names, out_dir, opts, agents, from_dir, partial, env, say, warn, stop)


def _reproduce(names, out_dir, opts, agents, from_dir, partial, env, say, warn, stop: StopSignals) -> dict[str, dict]:
    started = time.time()
    load = list(os.getloadavg())
    status = 0
    cpu_spent = 0.0
    figure_jobs: dict[str, dict[str, Job]] = {}
    if from_dir is None:
        say(f"reproduce {' '.join(names)}: writing each panel's sweep file, checking every point against the schema")
        for name in names:
            figure_jobs[name] = prepare_jobs(FIGURES[name], out_dir, **opts)
        jobs = list({id(j): j for fj in figure_jobs.values() for j in fj.values()}.values())
        already = sum(finished_points(j.sweep_dir) for j in jobs)
        say(f"reproduce {' '.join(names)}: {sum(grid_size(j.raw) for j in jobs)} points, {already} already finished")
        cpu_before = _children_cpu()
        status = run_agents(jobs, agents, env, stop)
        cpu_spent = _children_cpu() - cpu_before
        if stop.signum is not None:
            raise Stopped(stop.signum)
        if status != 0:
            warn(f"reproduce: an agent exited with status {status}")
    elapsed = time.time() - started
    results = {}
    for name in names:
        if stop.signum is not None:
            raise Stopped(stop.signum)
        figure = FIGURES[name]
        panel_runs: dict[str, list[Run]] = {}
        folders: dict[str, Path | None] = {}
        unfinished: list[Path] = []
        lacking: dict[str, dict] = {}
        for panel in figure.panels:
            job = figure_jobs[name][panel.key] if from_dir is None else None
            if job is not None:
                folder: Path | None = job.sweep_dir
            else:
                folder = find_panel_dir(Path(from_dir), figure, panel, panel_dirname(panel, **opts))
            folders[panel.key] = folder
            runs, left = read_runs(folder, panel) if folder is not None else ([], [])
            panel_runs[panel.key] = runs
            unfinished += [p for p in left if p not in unfinished]  # panels may share a sweep (Fig. 6)
            lack = panel_lacks(folder, runs, left, job)
            if lack is not None:
                lacking[panel.key] = lack
        if lacking and not partial:
            message = _lacks_text(name, lacking, from_dir)
            warn(message)
            results[name] = {"status": EXIT_INCOMPLETE, "lacking": lacking, "message": message}
            continue
        if lacking:
            say(f"reproduce {name}: --partial: drawing what there is ({_describe(lacking)})")
        results[name] = _finish_figure(
            figure, panel_runs, folders, unfinished, out_dir, opts, elapsed, from_dir, say, lacking=lacking
        )
        results[name]["status"] = status
        results[name]["lacking"] = lacking
    if stop.signum is not None:  # came while the last figure was drawn: that one is whole, but stop means stop
        raise Stopped(stop.signum)
    if from_dir is None:
        _write_timing(names, out_dir, opts, agents, started, elapsed, cpu_spent, results, load, say)
    return results


def _children_cpu() -> float:
    """User + system CPU seconds of this process's reaped children: the agents and, through them, every run."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _write_timing(names, out_dir: Path, opts, agents: int, started: float, wall: float, cpu: float, results, load,
                  say) -> None:  # fmt: skip
    """``<out>/reproduce_<figures>.json``: wall and CPU time of the whole command and, per figure, the sums of its
    runs' wall and CPU seconds (from the sweep states; runs finished by an earlier command count too)."""
    figures = {}
    for name, res in results.items():
        panels = {str(p["folder"]): p for p in res.get("data", {}).get("panels", {}).values()}.values()
        figures[name] = {
            "status": res.get("status"),
            "runs": res.get("data", {}).get("runs"),
            "seeds": res.get("data", {}).get("seeds_total"),
            "run_wall_s": sum(p.get("run_seconds") or 0.0 for p in panels),
            "run_cpu_s": sum(p.get("run_cpu_seconds") or 0.0 for p in panels),
        }
    label = "all" if set(names) == set(FIGURES) else "-".join(names)
    data = {
        "command": f"lightning-grok reproduce {' '.join(names)}{' --quick' if opts['quick'] else ''} --agents {agents}",
        "scale": "quick" if opts["quick"] else "full",
        "seeds": opts["seeds"],
        "overrides": list(opts["overrides"]),
        "agents": agents,
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_at_start": load,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_s": wall,
        "cpu_s": cpu,
        "figures": figures,
    }
    path = out_dir / f"reproduce_{label}.json"
    atomic_write_json(path, data)
    say(f"reproduce {' '.join(names)}: {format_duration(wall)} wall, {format_duration(cpu)} CPU; timing in {path}")
