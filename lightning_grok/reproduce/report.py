"""The outputs of one figure: the scaling-law fits and their markdown table, the drawn panels (PNG and PDF),
the JSON of every plotted number, the W&B copy (job type ``reproduce``) and the printed summary. matplotlib,
numpy and W&B are imported only when a figure is drawn or logged."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from lightning_grok.atomic import atomic_write_json, atomic_write_text
from lightning_grok.reproduce.collect import (
    NOT_APPLICABLE,
    Run,
    _run_seconds,
    _select,
    _settings,
    _sort_key,
    bound_verdicts,
    combine_curves,
    exact_overlay,
    point_stats,
)
from lightning_grok.reproduce.figures import (
    INPUT_LAWS,
    MODULAR_KEYS,
    NOISE_KEYS,
    SETTING_KEYS,
    TEACHER_NORM,
    TRANSFORMER_KEYS,
    Figure,
)

FITS_PREAMBLE = (
    "Times in GD steps (optimizer steps for AdamW). Laws: least squares over every seed, 95% intervals from "
    "Student's t; consistent means the interval contains the predicted slope, with no tolerance. Bounds: "
    "judged at every seed (holds only if the measured time is on the bound's side at all of them), with the "
    "ratio measured / bound and the slope of its log along the sweep. Captions: judged by the seeds' times; "
    "a tolerance, where one is used, is named in its row with its value and reason (lightning_grok/scaling.py)."
)


def compute_fits(figure: Figure, panel_runs: Mapping[str, Sequence[Run]]) -> tuple[list, list[dict]]:
    """The figure's scaling-law fits (``scaling.fit_law``, one observation per seed) and the derived
    comparison of the ln nu^2 slopes (t2 steeper than t1: its interval above t1's; inconclusive where the
    intervals overlap)."""
    from lightning_grok.scaling import LAWS, fit_law

    reports = []
    for spec in figure.fits:
        law = LAWS[spec.law]
        xs, ys = [], []
        for run in panel_runs.get(spec.panel, ()):
            for m in run.members:
                x = run.x if spec.x == "x" else m.get(spec.x)
                if x is None or (spec.max_x is not None and x > spec.max_x):
                    continue
                if law.x_label.startswith(("log", "ln")) and x <= 0:
                    continue
                xs.append(float(x))
                ys.append(m["t1"] if spec.law.startswith("t1") else m["t2"])
        keep = monotone_part(xs, ys)
        part = f"monotone part {min(keep):g} <= x <= {max(keep):g}" if len(keep) < len(set(xs)) else ""
        kept = [i for i, x in enumerate(xs) if x in keep]
        report = fit_law(spec.law, [xs[i] for i in kept], [ys[i] for i in kept])
        if spec.max_x is not None:  # say which part of the panel was fitted
            part = ", ".join(filter(None, [f"x <= {spec.max_x:g}", part]))
        if part:
            report = dataclasses.replace(report, x_label=f"{report.x_label} ({part})")
        reports.append(report)
    comparisons = []
    by_name = {r.law: r for r in reports}
    t1, t2 = by_name.get("t1_vs_log_init_scale"), by_name.get("t2_vs_log_init_scale")
    if t1 is not None and t2 is not None:
        row = {"comparison": "slope of t2 vs ln nu^2 > slope of t1 vs ln nu^2", "predicted": "c2 > c1 (Sec. 4.2)"}
        if t1.fit is None or t2.fit is None:
            row |= {"c1": None, "c2": None, "verdict": "insufficient data"}
        else:  # t2's interval above t1's: consistent; below it: inconsistent; overlapping: inconclusive
            if t2.fit.ci_low > t1.fit.ci_high:
                verdict = "consistent"
            elif t2.fit.ci_high < t1.fit.ci_low:
                verdict = "inconsistent"
            else:
                verdict = "inconclusive"
            row |= {"c1": t1.fit.slope, "c2": t2.fit.slope, "verdict": verdict}
        comparisons.append(row)
    return reports, comparisons


def _bound_side(name: str, entries: Sequence[dict]) -> str | None:
    """upper or lower, as the runs recorded it (runs from before kept only the name: its suffix)."""
    for e in entries:
        if e.get("side") in ("upper", "lower"):
            return e["side"]
    return next((s for s in ("upper", "lower") if name.endswith("_" + s)), None)


def compute_bounds(figure: Figure, panel_runs: Mapping[str, Sequence[Run]]) -> list:
    """The figure's bounds judged as bounds (``scaling.check_bound``): at every seed of the panel, the
    measured time against the bound the run computed from its own Phi, theta0, theta*; a seed whose run
    said ``hypothesis not met`` is reported but not claimed."""
    from lightning_grok.scaling import check_bound

    reports = []
    for spec in figure.bounds:
        panel = next(p for p in figure.panels if p.key == spec.panel)
        rows = []
        for run in panel_runs.get(spec.panel, ()):
            for m in run.members:
                entry = m["bounds"].get(spec.bound)
                if entry is None:
                    continue
                x = run.x if spec.x == "x" else m.get(spec.x)
                if x is None:
                    continue
                rows.append((run, m, entry, float(x)))
        entries = [e for _, _, e, _ in rows]
        side = _bound_side(spec.bound, entries) or "upper"
        target = next((e.get("target") for e in entries if e.get("target")), None)
        time = "t2" if (target == "t_generalize" or "generalize" in spec.bound) else "t1"
        value = [e.get("value") if isinstance(e.get("value"), int | float) else None for e in entries]
        reports.append(
            check_bound(
                spec.bound,
                side,
                [x for *_, x in rows],
                [m[time] for _, m, _, _ in rows],
                value,
                seeds=[m["seed"] for _, m, _, _ in rows],
                points=[run.x for run, *_ in rows],
                claimed=[e.get("verdict") not in NOT_APPLICABLE for e in entries],
                steps_run=[m["steps_run"] for _, m, _, _ in rows],
                time=time,
                panel=spec.panel,
                x_label=spec.x_label,
                point_label=plain(panel.x_symbol) or spec.panel,
                source=next((e.get("source") for e in entries if e.get("source")), "") or "",
            )
        )
    return reports


def compute_claims(figure: Figure, panel_runs: Mapping[str, Sequence[Run]]) -> list:
    """The figure's caption statements judged by the seeds' times (``scaling.check_claim``)."""
    from lightning_grok.scaling import check_claim

    reports = []
    for spec in figure.claims:
        panel = next(p for p in figure.panels if p.key == spec.panel)
        xs, ts = [], []
        for run in panel_runs.get(spec.panel, ()):
            if not isinstance(run.x, int | float):
                continue
            for m in run.members:
                xs.append(float(run.x))
                ts.append(m[spec.time])
        reports.append(
            check_claim(
                spec.text,
                spec.kind,
                xs,
                ts,
                panel=spec.panel,
                time=spec.time,
                x_log=panel.x_log,
                x_label=plain(panel.x_symbol) or spec.panel,
            )
        )
    return reports


def monotone_part(xs: Sequence[float], ys: Sequence[float | None]) -> set[float]:
    """The x values a power law may be fitted over: all of them when the seeds' mean time is monotone in x,
    else the longest run of consecutive x values over which it is (a U-shaped curve has no one slope)."""
    means: dict[float, list[float]] = {}
    for x, y in zip(xs, ys, strict=True):
        if y is not None:
            means.setdefault(x, []).append(float(y))
    order = sorted(means)
    if len(order) < 3:
        return set(xs)
    mean = [sum(means[x]) / len(means[x]) for x in order]
    signs = [(b > a) - (b < a) for a, b in zip(mean, mean[1:], strict=False)]
    best, start = (0, 0), 0
    for i in range(1, len(signs) + 1):
        if i == len(signs) or (signs[i] != signs[start] and signs[i] != 0 and signs[start] != 0):
            if i - start > best[1] - best[0]:
                best = (start, i)
            start = i
    if best == (0, len(signs)):
        return set(xs)
    return set(order[best[0] : best[1] + 1])


def fits_markdown(reports: Sequence, comparisons: Sequence[dict], bounds: Sequence = (), claims: Sequence = ()) -> str:
    """The laws' table (with the ln nu^2 slope comparison), then the bounds' and the captions' tables; a
    table without rows is left out."""
    from lightning_grok.scaling import bounds_markdown, claims_markdown, markdown_table

    parts = []
    if reports or comparisons:
        text = markdown_table(reports)
        for c in comparisons:
            slopes = "-" if c["c1"] is None else f"c2 = {c['c2']:.4g} vs c1 = {c['c1']:.4g}"
            text += f"\n| {c['comparison']} | {slopes} | - | {c['predicted']} | {c['verdict']} |"
        parts.append(text)
    if bounds:
        parts.append(bounds_markdown(bounds))
    if claims:
        parts.append(claims_markdown(claims))
    return "\n\n".join(parts)


def _thresholds(runs: Sequence[Run]) -> tuple[float, float]:
    phases = runs[0].config.get("phases", {}) if runs else {}
    return float(phases.get("eps", 0.01)), float(phases.get("c", 0.01))


def _mean_time(runs: Sequence[Run], key: str) -> float | None:
    values = [m[key] for r in runs for m in r.members if m[key] is not None]
    return sum(values) / len(values) if values else None


def setting_text(runs: Sequence[Run], x_key: str | None) -> str:
    """The settings every run of a panel shares (n, d, m, lambda, nu^2, eta; p and the training fraction for
    modular arithmetic; layers, d_model and heads for the transformer), as mathtext in the paper's symbols, the
    swept key left out."""
    from lightning_grok.plots import nice

    modular = runs[0].config.get("data", {}).get("kind") == "modular"
    keys = (MODULAR_KEYS + SETTING_KEYS[2:] if modular else SETTING_KEYS) + NOISE_KEYS
    if runs[0].config.get("model", {}).get("family") == "transformer":
        keys = MODULAR_KEYS + TRANSFORMER_KEYS + tuple(k for k in SETTING_KEYS if k[0].startswith("optim."))
    parts = []
    for key, sym in keys:
        value = _select(runs[0].config, key)
        if key == x_key or value is None or (key == "data.n_train" and modular):
            continue
        if len({json.dumps(_select(r.config, key)) for r in runs}) != 1:
            continue
        if key == "data.label_noise_std" and not value:
            continue
        text = nice(value) if isinstance(value, float) else str(value)
        parts.append(f"${sym}$={text}" if sym.startswith("\\") or len(sym) == 1 else f"{sym} {text}")
    data = runs[0].config.get("data", {})
    shared = ("data.teacher", "data.input_dist", TEACHER_NORM[0])
    if data.get("teacher") in ("relu", "fourier") and all(
        _select(r.config, k) == _select(runs[0].config, k) for r in runs for k in shared
    ):
        norm = _select(runs[0].config, TEACHER_NORM[0])
        parts.append(INPUT_LAWS.get(str(data.get("input_dist")), str(data.get("input_dist"))))
        if norm is not None:
            parts.append(f"${TEACHER_NORM[1]}$={nice(float(norm))}")
    return ", ".join(parts)


STEP_UNITS = {"gd": "GD steps", "sgd": "SGD steps", "adamw": "AdamW steps"}  # by optim.name


def step_unit(runs: Sequence[Run]) -> str:
    """What one step of the panel's runs is: "GD steps", or the optimizer's steps where it is not GD."""
    names = {str(_select(r.config, "optim.name") or "gd") for r in runs}
    return STEP_UNITS.get(names.pop(), "optimizer steps") if len(names) == 1 else "optimizer steps"


def plain(text: str) -> str:
    """A mathtext title as plain terminal text: $\\lambda$ -> lambda, $t_2$ -> t2, $\\nu^2$ -> nu^2."""
    for sym in ("lambda", "nu", "eta", "epsilon", "sigma", "theta", "phi", "tau", "delta"):
        text = text.replace("\\" + sym, sym)
    return re.sub(r"_\{?(\w+)\}?", r"\1", text).replace("$", "").replace("\\", "").replace("{", "").replace("}", "")


def draw_figure(figure: Figure, panel_runs: Mapping[str, list[Run]], out_dir: Path, provenance: str) -> dict:
    """Draw every panel; returns {"paths": {png, pdf}, "panels": {key: plotted arrays}}. ``provenance`` goes
    into the files' metadata (``plots.save``), not into the image."""
    from lightning_grok import plots

    fig, axes = plots.layout(len(figure.panels))
    plotted: dict[str, dict] = {}
    # the legend of the times panels once, in the first of them
    times_axes = [ax for ax, panel in zip(axes, figure.panels, strict=True) if panel.draw == "times"]
    for ax, panel in zip(axes, figure.panels, strict=True):
        runs = panel_runs.get(panel.key, [])
        if not runs:
            ax.text(0.5, 0.5, "no finished runs", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(panel.title)
            plotted[panel.key] = {}
            continue
        eps, c = _thresholds(runs)
        shared = [r for r in runs if panel.select is None or r.x == panel.select] or runs
        title = panel.title + (" (times by accuracy)" if panel.times == "accuracy" else "")
        setting = setting_text(shared, panel.x_key if panel.select is None else None)
        title = f"{title}\n{setting}" if setting else title
        unit = step_unit(runs)
        if panel.draw == "times":
            plotted[panel.key] = plots.times_panel(
                ax,
                point_stats(runs),
                x_label=panel.x_symbol,
                x_log=panel.x_log,
                y_log=panel.y_log,
                title=title,
                legend=ax is times_axes[0],
                step_unit=unit,
            )
        elif panel.draw == "curves":
            groups = []
            for x in sorted({r.x for r in runs}, key=_sort_key):
                same = [r for r in runs if r.x == x]
                curve = combine_curves(same)
                if curve is not None:
                    groups.append({"x": x, "curve": curve, "t1": _mean_time(same, "t1"), "t2": _mean_time(same, "t2")})
            plotted[panel.key] = plots.curves_panel(
                ax, groups, x_symbol=panel.x_symbol, eps=eps, c=c, title=title, step_unit=unit
            )
            plotted[panel.key]["curves"] = {str(g["x"]): g["curve"] for g in groups}
        else:
            chosen = [r for r in runs if panel.select is None or r.x == panel.select] or runs
            curve = combine_curves(chosen)
            t1, t2 = _mean_time(chosen, "t1"), _mean_time(chosen, "t2")
            if curve is None:
                plotted[panel.key] = {}
                continue
            if panel.draw == "accuracy":
                tau = chosen[0].config.get("phases", {}).get("acc_threshold") if panel.times == "accuracy" else None
                plotted[panel.key] = plots.accuracy_panel(
                    ax, curve, t1=t1, t2=t2, eps=eps, c=c, title=title, step_unit=unit, tau=tau
                )
            else:
                exact = exact_overlay(curve)
                plotted[panel.key] = plots.ensemble_panel(
                    ax, curve, exact=exact, t1=t1, t2=t2, eps=eps, c=c, title=title, step_unit=unit
                )
            plotted[panel.key] |= {"t1": t1, "t2": t2, "seeds": sum(len(r.members) for r in chosen)}
    paths = plots.save(fig, out_dir / figure.name, figure.title, provenance)
    return {"paths": paths, "panels": plotted}


def results_artifacts(panel_runs: Mapping[str, Sequence[Run]]) -> list[str]:
    """The results artifact (``results-<W&B run id>``, wandb_theory) of every plotted run that logged to W&B."""
    names = []
    for path in sorted({r.path for runs in panel_runs.values() for r in runs}):
        try:
            run_id = (path / "wandb_run_id.txt").read_text().strip()
        except OSError:  # run with W&B disabled: nothing to link
            continue
        if run_id:
            names.append(f"results-{run_id}")
    return names


def log_to_wandb(
    figure: Figure,
    png: Path,
    fits: Sequence,
    opts: Mapping,
    out_dir: Path,
    panel_runs: Mapping[str, Sequence[Run]],
    bounds: Sequence = (),
    claims: Sequence = (),
) -> str | None:
    """The figure (and its fit, bound and caption tables) as a W&B run of job type ``reproduce``, named
    ``reproduce-<fig>[-quick]`` and tagged with the figure and ``quick``/``full``; its config holds quick,
    seeds, the overrides, the panels and the results artifacts of the plotted runs, which it ``use_artifact``s
    when online (W&B's lineage graph then shows which runs the figure came from; offline W&B cannot record a
    use, so the config keeps the list). Returns the W&B mode used, None when disabled. W&B settings come from
    the ``wandb.*`` overrides."""
    from lightning_grok.config import load_config
    from lightning_grok.wandb_logger import resolve_mode, wandb_save_dir

    overrides = list(opts["overrides"])
    cfg = load_config(None, [o for o in overrides if o.removeprefix("--").startswith("wandb.")], verb=None)
    save_dir = wandb_save_dir(out_dir)
    mode = resolve_mode(cfg, save_dir)
    if mode == "disabled":
        return None
    import wandb

    if os.environ.get("WANDB_SILENT", "true").lower() in ("1", "true"):  # as fit: no banner, one line of ours
        wandb.setup(settings=wandb.Settings(silent=True, mode=mode))
    scale = "quick" if opts["quick"] else "full"
    used = results_artifacts(panel_runs)
    config = {
        "figure": figure.name,
        "quick": bool(opts["quick"]),
        "seeds": opts["seeds"],
        "overrides": overrides,
        "panels": {p.key: Path(p.sweep).stem + ("-quick" if opts["quick"] else "") for p in figure.panels},
        "results_artifacts": used,
    }
    run = wandb.init(
        project=cfg.wandb.project,
        entity=cfg.wandb.entity,
        job_type="reproduce",
        name=f"reproduce-{figure.name}" + ("-quick" if opts["quick"] else ""),
        group=f"reproduce-{figure.name}-{scale}",
        tags=[figure.name, scale, *map(str, cfg.wandb.tags)],
        notes=cfg.wandb.notes,
        dir=str(save_dir),
        mode=mode,
        config=config,
        reinit="finish_previous",
    )
    try:
        if mode == "online":
            for name in used:
                try:
                    run.use_artifact(f"{name}:latest")
                except Exception as exc:  # noqa: BLE001 - a run logged elsewhere: the figure still stands
                    print(f"lightning-grok: W&B: could not link {name} ({exc})", file=sys.stderr)
        run.log({f"figures/{figure.name}": wandb.Image(str(png), caption=plain(figure.title))})
        if fits:
            columns = ["law", "slope", "ci_low", "ci_high", "prediction", "verdict"]
            table = wandb.Table(columns=columns)
            for r in fits:
                slope = (None, None, None) if r.fit is None else (r.fit.slope, r.fit.ci_low, r.fit.ci_high)
                table.add_data(r.law, *slope, r.predicted, r.verdict)
            run.log({f"fits/{figure.name}": table})
            for r in fits:
                if r.fit is not None:
                    run.summary[f"fits/{r.law}/slope"] = r.fit.slope
        if bounds:
            columns = ["bound", "panel", "side", "time", "ratio_min", "ratio_max", "trend_slope", "verdict"]
            table = wandb.Table(columns=columns)
            for b in bounds:
                slope = None if b.trend is None else b.trend.slope
                table.add_data(b.bound, b.panel, b.side, b.time, b.ratio_min, b.ratio_max, slope, b.verdict)
            run.log({f"bounds/{figure.name}": table})
        if claims:
            table = wandb.Table(columns=["caption", "panel", "time", "kind", "measured", "verdict"])
            for c in claims:
                table.add_data(c.text, c.panel, c.time, c.kind, c.measured, c.verdict)
            run.log({f"claims/{figure.name}": table})
    finally:
        run.finish()
    return mode


def _written(path: Path, write: Callable[[], None]) -> None:
    """Run ``write`` (an atomic write of ``path``); an OSError (a full disk) is re-raised naming ``path``, not
    the temporary file it was going to (which ``atomic_write`` removed)."""
    try:
        write()
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None


def _finish_figure(
    figure, panel_runs, folders, unfinished, out_dir, opts, elapsed, from_dir, say, lacking: Mapping | None = None
) -> dict:
    """Fits, drawing, JSON, markdown, W&B and the printed summary of one figure. Every file is written
    atomically (a reader never sees half of one); OSError naming the file when one cannot be (a full disk).
    ``lacking``: per panel, the points a ``--partial`` figure is drawn without (kept in the JSON)."""
    reports, comparisons = compute_fits(figure, panel_runs)
    bounds, claims = compute_bounds(figure, panel_runs), compute_claims(figure, panel_runs)
    verdicts = bound_verdicts(panel_runs)
    drawn_at = time.time()
    runs_total = len({run.path for runs in panel_runs.values() for run in runs})
    seeds_total = sum(len(run.members) for run in {r.path: r for rs in panel_runs.values() for r in rs}.values())
    command = " ".join(["lightning-grok reproduce", figure.name, *(["--quick"] if opts["quick"] else [])])
    command += f" --seeds {opts['seeds']}" if opts["seeds"] else ""
    provenance = f"{' '.join([command, *opts['overrides']])}: {runs_total} run(s), {seeds_total} seed(s)"
    drawn = draw_figure(figure, panel_runs, out_dir, provenance)
    paths = drawn["paths"]
    table = fits_markdown(reports, comparisons, bounds, claims)
    md: Path | None = None
    if reports or comparisons or bounds or claims:  # a figure with nothing to judge gets no empty table
        md = out_dir / f"{figure.name}_fits.md"
        text = f"# {figure.title}\n\n{FITS_PREAMBLE}\n\n{table}\n"
        _written(md, lambda: atomic_write_text(md, text))
    panels = {}
    for panel in figure.panels:
        runs = panel_runs[panel.key]
        panels[panel.key] = {
            "title": panel.title,
            "x_key": panel.x_key,
            "times": panel.times,
            "folder": folders[panel.key],
            "runs": len(runs),
            "settings": None if from_dir is not None else _settings(folders[panel.key]),
            "run_seconds": _run_seconds(folders[panel.key]),
            "run_cpu_seconds": _run_seconds(folders[panel.key], "cpu"),
            "points": point_stats(runs),
            "plotted": drawn["panels"].get(panel.key, {}),
        }
    data = {
        "figure": figure.name,
        "title": figure.title,
        "claim": figure.claim,
        "quick": opts["quick"],
        "seeds": opts["seeds"],
        "overrides": list(opts["overrides"]),
        "from": None if from_dir is None else str(from_dir),
        "runs": runs_total,
        "seeds_total": seeds_total,
        "provenance": provenance,
        "wall_time_s": elapsed,
        "draw_time_s": time.time() - drawn_at,
        "panels": panels,
        "fits": [r.as_dict() for r in reports],
        "comparisons": comparisons,
        "bound_checks": [b.as_dict() for b in bounds],
        "claims": [c.as_dict() for c in claims],
        "bound_verdicts": verdicts,
        "unfinished_runs": [str(p) for p in unfinished],
        "lacking": dict(lacking or {}),  # drawn with --partial: per panel, the points it lacks
        "png": paths["png"],
        "pdf": paths["pdf"],
    }
    json_path = out_dir / f"{figure.name}.json"
    _written(json_path, lambda: atomic_write_json(json_path, data))
    mode = None
    try:
        mode = log_to_wandb(figure, paths["png"], reports, opts, out_dir, panel_runs, bounds, claims)
    except Exception as exc:  # noqa: BLE001 - the figure is on disk; W&B is a copy
        say(f"reproduce {figure.name}: warning: not logged to W&B: {exc}")
    say(_summary(figure, data, table, verdicts, mode))
    return {
        "png": paths["png"],
        "pdf": paths["pdf"],
        "json": json_path,
        "fits_md": md,
        "data": data,
        "plotted": drawn["panels"],
        "fits": reports,
    }


def _judged(data: Mapping) -> bool:
    """Whether the figure has anything judged (laws, comparisons, bounds or captions): its fits table."""
    return any(data.get(k) for k in ("fits", "comparisons", "bound_checks", "claims"))


def _summary(figure: Figure, data: dict, table: str, verdicts: dict, mode: str | None) -> str:
    lines = [
        f"== {figure.name}: {plain(figure.title)}",
        f"wrote {data['png']}, {Path(data['pdf']).name}, {figure.name}.json"
        + (f", {figure.name}_fits.md " if _judged(data) else " ")
        + f"({data['runs']} runs, {data['seeds_total']} seeds; wall time {data['wall_time_s']:.1f} s)",
    ]
    if mode:
        lines.append(f"logged to W&B ({mode}), job type reproduce")
    if _judged(data):
        lines.append(table)
    if verdicts:
        parts = [f"{name}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())) for name, c in verdicts.items()]
        lines.append("bound verdicts (seeds): " + "; ".join(parts))
    if data["unfinished_runs"]:
        lines.append(f"{len(data['unfinished_runs'])} run(s) not drawn (interrupted): rerun the command to resume them")
    if data["lacking"]:
        counts = {k: "all" if v["missing"] is None else v["missing"] for k, v in data["lacking"].items()}
        lacks = ", ".join(f"{k} lacks {n}" for k, n in counts.items())
        lines.append(f"drawn with --partial: {lacks} point(s)")
    return "\n".join(lines)
