"""Running a figure: each panel's sweep file written with ``--quick``, ``--seeds`` and the overrides applied,
its directory name, the count of finished points, and the offline agents that fill the sweep directories (in a
child interpreter, ``python -m lightning_grok.reproduce --agent``: see ``__main__``)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lightning_grok.atomic import atomic_write_text
from lightning_grok.exit_codes import EXIT_CONFIG, EXIT_OK, EXIT_SIGNAL_BASE, exit_for_signal
from lightning_grok.reproduce.figures import QUICK_SUFFIX, Figure, Panel
from lightning_grok.reproduce.schedule import longest_point, priority

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
SWEEPS = REPO / "sweeps"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
        # its own W&B group: quick runs never mix with the paper-scale ones on a dashboard
        raw["name"] = f"{raw.get('name') or Path(panel.sweep).stem}{QUICK_SUFFIX}"
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
    name = Path(panel.sweep).stem + (QUICK_SUFFIX if quick else "")
    if seeds or overrides:
        digest = hashlib.sha1(json.dumps([seeds, sorted(overrides)]).encode()).hexdigest()[:8]
        name += f"-{digest}"
    return name


def grid_points(job: Job) -> list[dict]:
    """The job's grid points ({key: value}), in the sweep engine's order."""
    import itertools

    params = job.raw["parameters"]
    grid = [list(p["values"]) if "values" in p else [p.get("value")] for p in params.values()]
    return [dict(zip(params, values, strict=True)) for values in itertools.product(*grid)]


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


def check_overrides(figures: Sequence[Figure], *, quick: bool, seeds: int | None, overrides: Sequence[str]) -> None:
    """Every ``key=value`` override, alone on the first point of every panel, through the run config schema,
    before any folder is made: ConfigError with the message ``fit`` gives for it (the key and value named),
    followed by the override as typed and the panel. A list value (a grid) is checked one value at a time;
    ``prepare_jobs`` then checks every point with all of them."""
    from lightning_grok.config import ConfigError, load_config, parse_overrides

    if not overrides:
        return
    parse_overrides(list(overrides))  # key=value form, with fit's message
    for item in overrides:
        try:
            _parse_value(item.split("=", 1)[1])
        except Exception:  # noqa: BLE001 - a value OmegaConf cannot read: fit's own check names it
            load_config(None, [item], verb=None)
            raise ConfigError(f"override {item!r}: the value cannot be read") from None
    for figure in figures:
        for panel in figure.panels:
            raw = panel_sweep(panel, quick=quick, seeds=seeds, overrides=overrides)
            command = raw["command"]
            config = command[command.index("fit") + 1]
            params = raw["parameters"]
            keys = {item.removeprefix("--").split("=", 1)[0] for item in overrides}
            base = [p for p in _first_point(params) if p.split("=", 1)[0] not in keys]  # the panel's own point
            for item in overrides:
                key = item.removeprefix("--").split("=", 1)[0]
                if key not in params:  # seed / seeds: turned into the panel's seed list
                    continue
                given = params[key]
                tries = [item] if "value" in given else [f"{key}={'null' if v is None else v}" for v in given["values"]]
                for one in tries:
                    point = [*base, one]
                    try:
                        load_config(config, point, verb="fit")
                    except ConfigError as exc:
                        raise ConfigError(f"{exc} (override {item}, panel {figure.name}/{panel.key})") from None


def prepare_jobs(figure: Figure, out_dir: Path, *, quick: bool, seeds: int | None, overrides: Sequence[str]) -> dict:
    """{panel key: Job}, the sweep files written; panels that share a sweep (Fig. 6) share its Job.
    Every file is validated first (config schema, every grid point), in a temporary folder: ConfigError
    before anything is written under ``out_dir`` or runs."""
    from lightning_grok.config import ConfigError
    from lightning_grok.sweep.spec import SweepSpecError, load_spec, same_runs

    jobs: dict[str, Job] = {}
    by_dir: dict[Path, Job] = {}
    texts: dict[Path, str] = {}
    with tempfile.TemporaryDirectory(prefix="reproduce-") as tmp:
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
                    f"{panel.sweep} or its run config changed since): pass another --out, or remove {sweep_dir} to "
                    "run it anew"
                )
            sweep_file = sweep_dir.with_suffix(".yaml")
            text = f"# written by `lightning-grok reproduce {figure.name}` from sweeps/{panel.sweep}\n"
            text += yaml.safe_dump(raw, sort_keys=False)
            trial = Path(tmp) / sweep_file.name
            trial.write_text(text)
            try:
                load_spec(trial, sweep_dir=sweep_dir)
            except SweepSpecError as exc:
                raise ConfigError(str(exc).replace(str(trial), str(sweep_file))) from None
            texts[sweep_file] = text
            jobs[panel.key] = by_dir[sweep_dir] = Job(sweep_file, sweep_dir, raw)
    for sweep_file, text in texts.items():
        atomic_write_text(sweep_file, text)
    return jobs


class StopSignals:
    """SIGINT and SIGTERM while ``reproduce`` runs, as flags (``signals.SignalFlags``' rule: a handler acts on
    nothing). ``run_agents`` passes every signal received on to the agents; each agent stops its run at the
    next chunk boundary (checkpointed, ``phases.json`` status ``interrupted``), records it ``killed`` and exits
    128 + N; a second signal makes the agents kill their runs at once. With no agent running, the same signal
    a second time takes its default action. ``exit_status``: 128 + the first signal, None if none came."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.agents_running = False
        self._previous: dict[int, Any] = {}

    def handle(self, signum: int, frame: object) -> None:
        self.received.append(signum)
        if not self.agents_running and self.received.count(signum) > 1:  # asked twice: no more waiting
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    @property
    def signum(self) -> int | None:
        return self.received[0] if self.received else None

    @property
    def exit_status(self) -> int | None:
        return None if self.signum is None else exit_for_signal(self.signum)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # elsewhere the caller owns signals
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()


def run_agents(
    jobs: Sequence[Job], agents: int = 1, env: Mapping[str, str] | None = None, stop: StopSignals | None = None
) -> int:
    """Run every job's sweep with ``agents`` agent processes (each takes the jobs in order; they split the
    points through the sweep directories). Returns the worst agent exit status (0 when none was needed).

    The agents run in sessions of their own, so a Ctrl-C in the terminal reaches this process only: it passes
    SIGINT and SIGTERM on to every agent (once per signal received, see ``StopSignals``) and waits for them
    to stop their runs. An agent dies with this process (Linux parent-death signal: SIGTERM, so its run still
    checkpoints). ``stop``: the caller's handlers, installed for longer; by default for this call only."""
    from lightning_grok.sweep.agent import _child_setup

    todo = [j for j in jobs if not j.complete]
    if not todo:
        return EXIT_OK
    # longest first (schedule.py): every agent takes the sweeps in this order and, within one, its longest point
    todo.sort(key=lambda j: -longest_point(j.raw, grid_points(j)))
    with contextlib.ExitStack() as stack:
        if stop is None:
            stop = stack.enter_context(StopSignals())
        if stop.received:  # stopped before anything started
            return stop.exit_status
        arg = json.dumps([[str(j.sweep_file), str(j.sweep_dir)] for j in todo])
        cmd = [sys.executable, "-m", "lightning_grok.reproduce", "--agent", arg]
        procs: list[subprocess.Popen] = []
        stop.agents_running = True
        try:
            for _ in range(max(agents, 1)):
                procs.append(
                    subprocess.Popen(
                        cmd,
                        cwd=REPO,
                        env=None if env is None else dict(env),
                        start_new_session=True,
                        preexec_fn=_child_setup(os.getpid()),
                    )
                )
            passed = 0
            while any(p.poll() is None for p in procs):
                while passed < len(stop.received):  # in order, each signal once to every agent
                    for p in procs:
                        p.send_signal(stop.received[passed])  # a no-op for an agent already reaped
                    passed += 1
                time.sleep(0.1)
        finally:
            stop.agents_running = False
        codes = [p.returncode for p in procs]
    return max(codes, key=lambda c: (c != 0, abs(c)))


BATCH_ENV = "LIGHTNING_GROK_BATCH_POINTS"  # points an agent trains as one batched GD loop; 1: one at a time
BATCH_POINTS = 16


def batch_points(env: Mapping[str, str] | None = None) -> int:
    """Points of a panel that differ only in per-member scalars (lambda, eta, nu^2, ...) that an agent trains as
    one batched GD loop (``lightning_grok.batch``): ``$LIGHTNING_GROK_BATCH_POINTS`` (``reproduce --no-batch``
    sets 1), else 16."""
    text = (os.environ if env is None else env).get(BATCH_ENV, "")
    try:
        return max(1, int(text)) if text else BATCH_POINTS
    except ValueError:
        return BATCH_POINTS


def _agent_main(argv: Sequence[str]) -> int:
    """The child interpreter: one offline agent per sweep directory in turn (``--retry-failed``, so interrupted
    and crashed points resume from their checkpoints).

    A stop signal that arrives while no agent owns the handlers (before the first, between two) is passed to
    the agent being started, or ends the loop: no point is started after it."""
    from lightning_grok.sweep.agent import Agent, AgentOptions
    from lightning_grok.sweep.spec import SweepSpecError, load_spec
    from lightning_grok.sweep.state import SweepDir, SweepStateError

    pending: list[int] = []
    current: list[Agent] = []

    def on_signal(signum: int, frame: Any) -> None:
        if current:
            current[0]._on_signal(signum, frame)
        else:
            pending.append(signum)

    for sig in STOP_SIGNALS:
        signal.signal(sig, on_signal)
    status = 0
    for sweep_file, sweep_dir in json.loads(argv[1]):
        if pending:
            return exit_for_signal(pending[0])
        try:
            spec = load_spec(sweep_file, sweep_dir=sweep_dir, check_config=False)  # the parent checked every point
            sd = SweepDir(sweep_dir)
            sd.init(spec)
            raw = yaml.safe_load(Path(sweep_file).read_text())
            options = AgentOptions(retry_failed=True, priority=priority(raw), batch=batch_points())
            agent = Agent(spec, sd, options)
            current[:] = [agent]
            for signum in pending:  # arrived while the agent was being made
                agent._on_signal(signum, None)
            code = agent.run()
            current.clear()
        except (SweepSpecError, SweepStateError) as exc:
            print(f"lightning-grok reproduce: error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        if code >= EXIT_SIGNAL_BASE:  # stopped by a signal: the rest waits for the next reproduce
            return code
        if agent.stop_signal is not None:  # arrived as the agent returned
            return exit_for_signal(agent.stop_signal)
        status = status or code
    return status
