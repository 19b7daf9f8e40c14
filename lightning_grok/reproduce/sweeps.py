"""Running a figure: each panel's sweep file written with ``--quick``, ``--seeds`` and the overrides applied,
its directory name, the count of finished points, and the offline agents that fill the sweep directories (in a
child interpreter, ``python -m lightning_grok.reproduce --agent``: see ``__main__``)."""

from __future__ import annotations

import hashlib
import json
import math
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lightning_grok.reproduce.figures import Figure, Panel

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
SWEEPS = REPO / "sweeps"


def _parse_value(text: str) -> Any:
    """A ``key=value`` value the way the fit CLI reads it (OmegaConf: 1e-3 is a float, [a, b] a list)."""
    from omegaconf import OmegaConf

    node = OmegaConf.from_dotlist([f"v={text}"])
    return OmegaConf.to_container(node)["v"]


def _param(value: Any) -> dict:
    return {"values": list(value)} if isinstance(value, list | tuple) else {"value": value}


def _seed_count(params: Mapping[str, Any]) -> int:
    """Seeds per point of a sweep file: its ``seeds`` constant, else the length of its ``seed`` list."""
    if isinstance(params.get("seeds"), dict) and "value" in params["seeds"]:
        return int(params["seeds"]["value"])
    if isinstance(params.get("seed"), dict) and "values" in params["seed"]:
        return len(params["seed"]["values"])
    return 1


def _first_point(params: Mapping[str, Any]) -> list[str]:
    out = []
    for key, spec in params.items():
        value = spec["values"][0] if "values" in spec else spec.get("value")
        out.append(f"{key}={'null' if value is None else value}")
    return out


def _vectorizable(config: Path, params: Mapping[str, Any], count: int) -> bool:
    """Whether the config schema accepts ``seeds=count`` for this family and optimizer (batched seeds)."""
    from lightning_grok.config import ConfigError, load_config

    try:
        load_config(config, [*_first_point(params), f"seeds={count}"], verb=None)
    except ConfigError:
        return False
    return True


def _apply_seeds(params: dict, config: Path, count: int) -> None:
    """``count`` seeds per point: ``seeds=count`` where the family batches seeds, else a ``seed`` list."""
    seed = params.pop("seed", {"value": 0})
    params.pop("seeds", None)
    base = int(seed["value"]) if "value" in seed else int(min(seed["values"]))
    if count > 1 and _vectorizable(config, params, count):
        params["seed"] = {"value": base}
        params["seeds"] = {"value": count}
    elif count > 1:
        params["seed"] = {"values": list(range(base, base + count))}
    else:
        params["seed"] = {"value": base}


def panel_sweep(panel: Panel, *, quick: bool, seeds: int | None, overrides: Sequence[str]) -> dict:
    """The panel's sweep file with ``--quick``, the seeds per point and the overrides applied (a W&B sweep
    config). Its command names the run config by absolute path, so it runs from any directory."""
    raw = yaml.safe_load((SWEEPS / panel.sweep).read_text())
    params: dict[str, Any] = dict(raw["parameters"])
    if quick:
        params.update({k: _param(v) for k, v in panel.quick.items()})
    given = set()
    for item in overrides:
        key, text = item.split("=", 1)
        given.add(key.removeprefix("--"))
        params[key.removeprefix("--")] = _param(_parse_value(text))
    command = [str(t) for t in raw["command"]]
    config_at = command.index("fit") + 1
    config = Path(command[config_at])
    config = config if config.is_absolute() else REPO / config
    command[config_at] = str(config)
    # the run config's content is part of the setting: edit it, and the old runs are not reused by mistake
    digest = hashlib.sha1(config.read_bytes()).hexdigest()[:10] if config.is_file() else "missing"
    raw["description"] = f"{raw.get('description', '')} [run config {config.name} sha1 {digest}]".strip()
    # --seeds, else seed/seeds overrides, else the --quick count, else the sweep file's
    count = seeds or (panel.quick_seeds if quick and not given & {"seed", "seeds"} else _seed_count(params))
    _apply_seeds(params, config, count)
    params.setdefault("trainer.progress_bar", {"value": False})
    raw["command"] = command
    raw["parameters"] = params
    return raw


def panel_dirname(panel: Panel, *, quick: bool, seeds: int | None, overrides: Sequence[str]) -> str:
    """``<sweep stem>[-quick][-<hash of --seeds and the overrides>]``: one directory per distinct setting."""
    name = Path(panel.sweep).stem + ("-quick" if quick else "")
    if seeds or overrides:
        digest = hashlib.sha1(json.dumps([seeds, sorted(overrides)]).encode()).hexdigest()[:8]
        name += f"-{digest}"
    return name


def grid_size(raw: Mapping[str, Any]) -> int:
    return math.prod(len(p["values"]) for p in raw["parameters"].values() if isinstance(p, dict) and "values" in p)


def finished_points(sweep_dir: Path) -> int:
    """Distinct points whose latest attempt finished (0 when the directory holds no sweep yet)."""
    try:
        state = json.loads((sweep_dir / "state.json").read_text())
    except (OSError, ValueError):
        return 0
    latest: dict[str, str] = {}
    for rec in state.get("runs", {}).values():
        latest[json.dumps(rec.get("params"), sort_keys=True, default=str)] = rec.get("state")
    return sum(s == "finished" for s in latest.values())


@dataclass
class Job:
    """One sweep directory to fill: the sweep file written for it and where its runs go."""

    sweep_file: Path
    sweep_dir: Path
    raw: dict

    @property
    def complete(self) -> bool:
        return finished_points(self.sweep_dir) >= grid_size(self.raw)


def prepare_jobs(figure: Figure, out_dir: Path, *, quick: bool, seeds: int | None, overrides: Sequence[str]) -> dict:
    """{panel key: Job}, the sweep files written; panels that share a sweep (Fig. 6) share its Job.
    Every file is validated now (config schema, every grid point): ConfigError before anything runs."""
    from lightning_grok.config import ConfigError
    from lightning_grok.sweep.spec import SweepSpecError, load_spec, same_runs

    jobs: dict[str, Job] = {}
    by_dir: dict[Path, Job] = {}
    for panel in figure.panels:
        raw = panel_sweep(panel, quick=quick, seeds=seeds, overrides=overrides)
        dirname = panel_dirname(panel, quick=quick, seeds=seeds, overrides=overrides)
        sweep_dir = (out_dir / figure.name / dirname).resolve()
        if sweep_dir in by_dir:
            if by_dir[sweep_dir].raw != raw:
                raise ConfigError(f"panels of {figure.name} share {sweep_dir} but not their settings")
            jobs[panel.key] = by_dir[sweep_dir]
            continue
        recorded = sweep_dir / "sweep.yaml"
        if recorded.is_file() and not same_runs(yaml.safe_load(recorded.read_text()), raw):
            raise ConfigError(
                f"{sweep_dir} holds the runs of another setting of panel {figure.name}/{panel.key} (sweeps/"
                f"{panel.sweep} or its run config changed since): pass another --out, or remove {sweep_dir} to run "
                "it anew"
            )
        sweep_file = sweep_dir.with_suffix(".yaml")
        sweep_file.parent.mkdir(parents=True, exist_ok=True)
        text = f"# written by `lightning-grok reproduce {figure.name}` from sweeps/{panel.sweep}\n"
        sweep_file.write_text(text + yaml.safe_dump(raw, sort_keys=False))
        try:
            load_spec(sweep_file, sweep_dir=sweep_dir)
        except SweepSpecError as exc:
            raise ConfigError(str(exc)) from None
        jobs[panel.key] = by_dir[sweep_dir] = Job(sweep_file, sweep_dir, raw)
    return jobs


def run_agents(jobs: Sequence[Job], agents: int = 1, env: Mapping[str, str] | None = None) -> int:
    """Run every job's sweep with ``agents`` agent processes (each takes the jobs in order; they split the
    points through the sweep directories). Returns the worst agent exit status (0 when none was needed)."""
    todo = [j for j in jobs if not j.complete]
    if not todo:
        return 0
    arg = json.dumps([[str(j.sweep_file), str(j.sweep_dir)] for j in todo])
    cmd = [sys.executable, "-m", "lightning_grok.reproduce", "--agent", arg]
    procs = [subprocess.Popen(cmd, cwd=REPO, env=None if env is None else dict(env)) for _ in range(max(agents, 1))]

    def forward(signum: int, frame: object) -> None:  # SIGTERM to reproduce: the agents stop their runs too
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    try:
        previous = signal.signal(signal.SIGTERM, forward)
    except ValueError:  # not the main thread: the caller owns signals
        previous = None
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:  # the agents got the Ctrl-C too: they stop their runs (checkpointed) and record it
        for p in procs:
            p.wait()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return max(codes, key=lambda c: (c != 0, abs(c)))


def _agent_main(argv: Sequence[str]) -> int:
    """The child interpreter: one offline agent per sweep directory in turn (``--retry-failed``, so interrupted
    and crashed points resume from their checkpoints)."""
    from lightning_grok.sweep.agent import Agent, AgentOptions
    from lightning_grok.sweep.spec import SweepSpecError, load_spec
    from lightning_grok.sweep.state import SweepDir, SweepStateError

    status = 0
    for sweep_file, sweep_dir in json.loads(argv[1]):
        try:
            spec = load_spec(sweep_file, sweep_dir=sweep_dir, check_config=False)  # the parent checked every point
            sd = SweepDir(sweep_dir)
            sd.init(spec)
            code = Agent(spec, sd, AgentOptions(retry_failed=True)).run()
        except (SweepSpecError, SweepStateError) as exc:
            print(f"lightning-grok reproduce: error: {exc}", file=sys.stderr)
            return 2
        if code >= 128:  # stopped by a signal: the rest waits for the next reproduce
            return code
        status = status or code
    return status
