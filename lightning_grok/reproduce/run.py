"""``reproduce(...)``: the entry point of ``lightning-grok reproduce`` (run the figures' sweeps unless
``--from``, read the runs back, then write each figure's outputs)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from lightning_grok.reproduce.collect import Run, find_panel_dir, read_runs
from lightning_grok.reproduce.figures import FIGURES
from lightning_grok.reproduce.report import _finish_figure
from lightning_grok.reproduce.sweeps import Job, finished_points, grid_size, panel_dirname, prepare_jobs, run_agents


def reproduce(
    names: str | Sequence[str],
    out_dir: Path | str = "figures",
    *,
    quick: bool = False,
    overrides: Sequence[str] = (),
    seeds: int | None = None,
    agents: int = 1,
    from_dir: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, dict]:
    """Run (unless ``from_dir``) and draw figures ``names`` (``"all"`` for every one); returns per figure
    {status, png, pdf, json, fits_md, data (what the JSON holds), plotted (the drawn arrays)}.

    ``status``: 0, or the agents' exit status when one of them failed (the figure is drawn from what finished).
    Raises ConfigError (CLI exit 2) for an unknown figure or a setting the config schema refuses.
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
    started = time.time()
    opts = {"quick": quick, "seeds": seeds, "overrides": tuple(overrides)}
    status = 0
    figure_jobs: dict[str, dict[str, Job]] = {}
    if from_dir is None:
        for name in names:
            figure_jobs[name] = prepare_jobs(FIGURES[name], out_dir, **opts)
        jobs = list({id(j): j for fj in figure_jobs.values() for j in fj.values()}.values())
        already = sum(finished_points(j.sweep_dir) for j in jobs)
        say(f"reproduce {' '.join(names)}: {sum(grid_size(j.raw) for j in jobs)} points, {already} already finished")
        status = run_agents(jobs, agents, env)
        if status != 0:
            say(f"reproduce: an agent exited with status {status}; drawing what finished")
    elapsed = time.time() - started
    results = {}
    for name in names:
        figure = FIGURES[name]
        panel_runs: dict[str, list[Run]] = {}
        folders: dict[str, Path | None] = {}
        unfinished: list[Path] = []
        for panel in figure.panels:
            if from_dir is None:
                folder: Path | None = figure_jobs[name][panel.key].sweep_dir
            else:
                folder = find_panel_dir(Path(from_dir), figure, panel, panel_dirname(panel, **opts))
            folders[panel.key] = folder
            runs, left = read_runs(folder, panel) if folder is not None else ([], [])
            panel_runs[panel.key] = runs
            unfinished += [p for p in left if p not in unfinished]  # panels may share a sweep (Fig. 6)
            if folder is None:
                say(f"reproduce {name}: no runs found for panel {panel.key} under {from_dir}")
        results[name] = _finish_figure(figure, panel_runs, folders, unfinished, out_dir, opts, elapsed, from_dir, say)
        results[name]["status"] = status
    return results
