"""Every figure of the paper with one command: run its sweep files through the offline agent, then draw.

  lightning-grok reproduce FIGURE [FIGURE ...|all] [--quick] [--seeds K] [--agents N] [--out DIR]
                           [--from DIR] [key=value ...]

FIGURE is fig1 ... fig7 or modular (``FIGURES``). Each figure is a list of panels; each panel is a W&B sweep
file under ``sweeps/`` (the paper's setting at full scale). ``reproduce`` writes, per panel, a sweep file
with ``--quick`` (laptop size), ``--seeds`` and the ``key=value`` overrides applied, and runs it with the
offline agent (``lightning_grok.sweep``) into ``<out>/<figure>/<sweep>[-quick][-<hash>]/``:

* seeds per point: ``seeds=K`` (one run, K seeds as batched tensors) where the family supports vectorized
  seeds, else a ``seed`` list of K separate runs;
* finished points are never rerun, so running the same command again resumes an interrupted reproduction
  (interrupted runs resume from their checkpoints) and only draws once everything is there;
* ``--agents N`` starts N agents on the same sweep directories (they split the points);
* ``--from DIR`` runs nothing: it draws from run directories made elsewhere (a SLURM array of
  ``lightning-grok sweep SWEEP --sweep-dir DIR/<sweep>``, or an earlier ``--out``).

Outputs: ``<out>/<figure>.png`` and ``.pdf``, ``<out>/<figure>.json`` (every plotted number: per point the
seeds' t1 and t2 in GD steps, the exact-dynamics times, the bounds and their verdicts; the scaling-law fits;
the wall time) and ``<out>/<figure>_fits.md``. Unless W&B is disabled (``wandb.mode=disabled``), the PNG
goes to a W&B run of job type ``reproduce``.

Scaling laws (``scaling.fit_law``; predictions from Eqs. (6)-(8), Thm 4.2 and Remark A.14): log t2 against
log lambda has slope -1 (t2 ~ 1/lambda); log t1 against log lambda slope 0 (lambda <= 1e-4); t1 and t2 are
linear in ln nu^2, with the t2 slope the larger; log t1 against log(n / lambda+_min(Phi^T Phi)) slope 1.

The agents run in a child interpreter (``python -m lightning_grok.reproduce --agent``): they fork one
process per point, which is safe only in a process that has not started torch's thread pools.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SWEEPS = REPO / "sweeps"

# ---------------------------------------------------------------------------------------------------------
# the registry


@dataclass(frozen=True)
class Panel:
    """One panel of a figure: a sweep file, the swept key (its x axis) and how to draw it.

    ``draw``: ``times`` (t1, t2 against x), ``curves`` (loss curves, one colour per x), ``ensemble`` (the
    seeds' mean loss curves of one setting, with the exact dynamics) or ``accuracy`` (Fig. 5).
    ``quick``: sweep parameters replaced under ``--quick`` (a list is a grid, anything else a constant).
    ``select``: for ``ensemble``, the x value drawn when the sweep has several.
    ``times``: ``loss`` (t1, t2 of Sec. 2) or ``accuracy`` (classification: train/test accuracy >= tau).
    """

    key: str
    sweep: str
    title: str
    draw: str = "times"
    x_key: str | None = None
    x_symbol: str = ""
    x_log: bool = True
    y_log: bool = True
    quick: Mapping[str, Any] = field(default_factory=dict)
    quick_seeds: int = 2
    select: float | None = None
    times: str = "loss"


@dataclass(frozen=True)
class FitSpec:
    """A scaling law (``scaling.LAWS``) fitted to one panel's seeds: x is the panel's swept value, or
    n / lambda+_min(Phi^T Phi) of each seed (``x="n_over_lambda_min"``); ``max_x`` keeps x <= max_x."""

    law: str
    panel: str
    x: str = "x"
    max_x: float | None = None


@dataclass(frozen=True)
class Figure:
    name: str
    title: str
    panels: tuple[Panel, ...]
    fits: tuple[FitSpec, ...] = ()
    claim: str = ""  # the paper's statement the figure illustrates


LAMBDA, N_SYM, M_SYM, NU2 = r"$\lambda$", r"$n$", r"$m$", r"$\nu^2$"

_FIG2_QUICK = {"model.width": 200, "data.n_train": 20, "optim.weight_decay": 1.0e-3, "trainer.max_steps": 6000}
_FIG3_QUICK = {
    "model.width": 500,
    "data.input_dim": 20,
    "data.n_train": 20,
    "data.n_test": 200,
    "data.n_sigma_samples": 500,
    "optim.weight_decay": 1.0e-3,
    "trainer.max_steps": 3000,
    "phases.stop_margin": 0.05,
}
_TWO_LAYER_QUICK = {
    "data.input_dim": 10,
    "data.n_train": 10,
    "model.width": 50,
    "data.n_test": 200,
    "optim.lr": 1.0e-2,
    "trainer.max_steps": 3000,
    "trainer.steps_per_call": 256,
    "phases.stop_margin": 0.02,
}
_FIG4_QUICK = _TWO_LAYER_QUICK | {"optim.weight_decay": 0.1}
_FIG6_QUICK = {
    "model.width": 200,
    "data.n_train": 20,
    "optim.weight_decay": 1.0e-3,
    "trainer.max_steps": 6000,
    "data.label_noise_std": [0.0, 0.1, 0.3],
}
_MODULAR_QUICK = {  # groks (by accuracy) in about 300 steps
    "data.modulus": 23,
    "data.train_fraction": 0.9,
    "optim.lr": 1.0e-2,
    "optim.weight_decay": 1.0,
    "trainer.max_steps": 800,
    "trainer.steps_per_call": 32,
}


def _four_panels(fig: str, quick: dict, grids: dict[str, list], draw: str, quick_seeds: int) -> tuple[Panel, ...]:
    """The weight decay, n, m, nu^2 panels of Figs. 2-4 (sweeps/<fig>_<panel>.yaml)."""
    spec = (
        ("weight_decay", "optim.weight_decay", LAMBDA, "weight decay"),
        ("n_train", "data.n_train", N_SYM, "training points"),
        ("width", "model.width", M_SYM, "parameters" if fig == "fig2" else "hidden units"),
        ("init_scale", "model.init_scale", NU2, "initialization scale"),
    )
    return tuple(
        Panel(
            key,
            f"{fig}_{key}.yaml",
            f"{words} {sym}",
            draw=draw,
            x_key=x_key,
            x_symbol=sym,
            y_log=key != "init_scale",  # t1, t2 ~ ln nu^2: a log x, linear y axis shows the line
            quick=quick | {x_key: grids[key]},
            quick_seeds=quick_seeds,
        )
        for key, x_key, sym, words in spec
    )


FIGURES: dict[str, Figure] = {
    f.name: f
    for f in (
        Figure(
            "fig1",
            "Fig. 1: training vs. test loss, zero teacher (left: ridge regression; right: two-layer ReLU network)",
            (
                Panel(
                    "ridge",
                    "fig1_ridge.yaml",
                    "ridge regression",
                    draw="ensemble",
                    quick={"model.width": 1000, "optim.weight_decay": 1.0e-3, "trainer.max_steps": 6000},
                    quick_seeds=4,
                ),
                Panel(
                    "two_layer",
                    "fig1_two_layer.yaml",
                    "two-layer ReLU network (both layers trained)",
                    draw="ensemble",
                    quick=_TWO_LAYER_QUICK,
                    quick_seeds=3,
                ),
            ),
            claim="the training loss falls below eps long before the test loss does (grokking), for both models",
        ),
        Figure(
            "fig2",
            r"Fig. 2: ridge regression, $t_1$ and $t_2$ against the hyperparameters (Sec. 5.1)",
            _four_panels(
                "fig2",
                _FIG2_QUICK,
                {
                    "weight_decay": [1.0e-2, 3.0e-3, 1.0e-3],
                    "n_train": [10, 20, 40],
                    "width": [150, 200, 400],
                    "init_scale": [0.25, 1.0, 4.0],
                },
                "times",
                2,
            ),
            fits=(
                FitSpec("t2_vs_weight_decay", "weight_decay"),
                FitSpec("t1_vs_weight_decay", "weight_decay", max_x=1.0e-4),
                FitSpec("t1_vs_log_init_scale", "init_scale"),
                FitSpec("t2_vs_log_init_scale", "init_scale"),
                FitSpec("t1_vs_n_over_lambda_min", "n_train", x="n_over_lambda_min"),
            ),
            claim="t2 ~ 1/lambda while t1 does not depend on lambda; smaller n speeds up t1; m has little effect; "
            "t1 and t2 grow like ln nu^2",
        ),
        Figure(
            "fig3",
            r"Fig. 3: random ReLU features, loss curves against the hyperparameters (Sec. 5.2)",
            _four_panels(
                "fig3",
                _FIG3_QUICK,
                {
                    "weight_decay": [1.0e-2, 3.0e-3, 1.0e-3],
                    "n_train": [10, 40],
                    "width": [250, 1000],
                    "init_scale": [0.25, 1.0, 4.0],
                },
                "curves",
                2,
            ),
            fits=(  # nu^2 scales the frozen features here: the paper predicts no ln nu^2 law for this model
                FitSpec("t2_vs_weight_decay", "weight_decay"),
                FitSpec("t1_vs_weight_decay", "weight_decay", max_x=1.0e-4),
                FitSpec("t1_vs_n_over_lambda_min", "n_train", x="n_over_lambda_min"),
            ),
            claim="smaller lambda delays generalization; smaller n speeds up training; width and init scale "
            "do not prolong grokking much",
        ),
        Figure(
            "fig4",
            r"Fig. 4: two-layer ReLU network (both layers trained), zero teacher (Sec. 5.3)",
            _four_panels(
                "fig4",
                _FIG4_QUICK,
                {
                    "weight_decay": [0.4, 0.2, 0.1],
                    "n_train": [5, 20],
                    "width": [25, 100],
                    "init_scale": [0.25, 1.0, 4.0],
                },
                "times",
                1,
            ),
            fits=(
                FitSpec("t2_vs_weight_decay", "weight_decay"),
                FitSpec("t1_vs_weight_decay", "weight_decay"),
                FitSpec("t1_vs_log_init_scale", "init_scale"),
                FitSpec("t2_vs_log_init_scale", "init_scale"),
            ),
            claim="the dependencies of t1 and t2 on the hyperparameters match those of Fig. 2 qualitatively",
        ),
        Figure(
            "fig5",
            "Fig. 5: surrogate accuracy vs. loss, random ReLU features (App. B)",
            (
                Panel(
                    "surrogate_accuracy",
                    "fig5_surrogate_accuracy.yaml",
                    "random ReLU features, realizable teacher",
                    draw="accuracy",
                    quick=_FIG3_QUICK | {"trainer.max_steps": 4000},
                    quick_seeds=1,
                ),
            ),
            claim="the loss decays smoothly, but the surrogate accuracy plateaus and then jumps: the classic "
            "grokking picture",
        ),
        Figure(
            "fig6",
            "Fig. 6: ridge regression with label noise (App. B)",
            (
                Panel(
                    "noise_0.1",
                    "fig6_label_noise.yaml",
                    "ridge regression with label noise",
                    draw="ensemble",
                    x_key="data.label_noise_std",
                    quick=_FIG6_QUICK,
                    select=0.1,
                ),
                Panel(
                    "noise_levels",
                    "fig6_label_noise.yaml",
                    "several noise levels (std of the label noise)",
                    draw="curves",
                    x_key="data.label_noise_std",
                    x_symbol="std",
                    quick=_FIG6_QUICK,
                ),
            ),
            claim="grokking survives label noise, and the noise level barely changes the grokking time",
        ),
        Figure(
            "fig7",
            "Fig. 7: random Fourier features, realizable teacher (App. B)",
            (
                Panel(
                    "fourier",
                    "fig7_fourier.yaml",
                    "random Fourier features",
                    draw="ensemble",
                    quick={
                        "model.width": 300,
                        "data.input_dim": 5,
                        "data.n_train": 20,
                        "data.n_test": 200,
                        "optim.weight_decay": 1.0e-3,
                        "trainer.max_steps": 6000,
                    },
                ),
            ),
            claim="random Fourier features grok like ridge regression",
        ),
        Figure(
            "modular",
            r"Modular addition $a+b$ mod $p$, two-layer network, AdamW: times by accuracy (not in the paper)",
            (
                Panel(
                    "weight_decay",
                    "modular_weight_decay.yaml",
                    r"decoupled weight decay $\lambda$",
                    x_key="optim.weight_decay",
                    x_symbol=LAMBDA,
                    quick=_MODULAR_QUICK | {"optim.weight_decay": [0.5, 1.0, 2.0]},
                    quick_seeds=1,
                    times="accuracy",
                ),
                Panel(
                    "train_fraction",
                    "modular_train_fraction.yaml",
                    "share of the table in training",
                    x_key="data.train_fraction",
                    x_symbol="training fraction",
                    x_log=False,
                    quick=_MODULAR_QUICK | {"data.train_fraction": [0.8, 0.9]},
                    quick_seeds=1,
                    times="accuracy",
                ),
                Panel(
                    "init_scale",
                    "modular_init_scale.yaml",
                    r"initialization scale $\nu^2$",
                    x_key="model.init_scale",
                    x_symbol=NU2,
                    y_log=False,
                    quick=_MODULAR_QUICK | {"model.init_scale": [0.5, 2.0]},
                    quick_seeds=1,
                    times="accuracy",
                ),
            ),
            fits=(
                FitSpec("t2_vs_weight_decay", "weight_decay"),
                FitSpec("t1_vs_weight_decay", "weight_decay"),
                FitSpec("t1_vs_log_init_scale", "init_scale"),
                FitSpec("t2_vs_log_init_scale", "init_scale"),
            ),
            claim="more weight decay shortens the delay between fitting and generalizing (Nanda et al.; "
            "the paper's t2 ~ 1/lambda is for ridge regression)",
        ),
    )
}

# ---------------------------------------------------------------------------------------------------------
# the sweep file of a panel


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


# ---------------------------------------------------------------------------------------------------------
# running


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
    from lightning_grok.sweep.spec import SweepSpecError, load_spec

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
        if recorded.is_file() and yaml.safe_load(recorded.read_text()) != raw:
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


# ---------------------------------------------------------------------------------------------------------
# reading runs


@dataclass
class Run:
    """One run directory: its resolved config, the x value of its panel and its members (one per seed)."""

    path: Path
    config: dict
    x: Any
    members: list[dict]
    status: str

    def curves(self) -> dict | None:
        try:
            return json.loads((self.path / "curves.json").read_text())
        except (OSError, ValueError):
            return None


def _select(tree: Mapping, dotted: str | None) -> Any:
    if dotted is None:
        return None
    for part in dotted.split("."):
        if not isinstance(tree, Mapping) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _member(m: dict, seed: int, accuracy: dict | None, times: str) -> dict:
    """A seed's times (GD steps), exact times, bounds and quantities from its phases.json entry."""
    acc = m.get("accuracy") or accuracy or {}
    use = acc if times == "accuracy" else m
    q = m.get("quantities") or {}
    lam = q.get("lam_plus_min")
    return {
        "seed": seed,
        "t1": use.get("t_overfit"),
        "t2": use.get("t_generalize"),
        "exact_t1": (m.get("exact") or {}).get("t_overfit"),
        "exact_t2": (m.get("exact") or {}).get("t_generalize"),
        "bounds": {
            k: {"value": b.get("value"), "verdict": b.get("verdict")} for k, b in (m.get("bounds") or {}).items()
        },
        "n_over_lambda_min": q["n"] / lam if lam and q.get("n") else None,
    }


def read_runs(folder: Path, panel: Panel) -> tuple[list[Run], list[Path]]:
    """Every run under ``folder`` (any depth: a sweep directory, a SLURM array's, or plain run directories),
    and the run directories left out because they have not ended (``status: interrupted``)."""
    runs, unfinished = [], []
    for path in sorted(folder.rglob("phases.json")):
        try:
            ph = json.loads(path.read_text())
        except (OSError, ValueError):
            unfinished.append(path.parent)
            continue
        if ph.get("status") == "interrupted" or "config" not in ph:
            unfinished.append(path.parent)
            continue
        cfg = ph["config"]
        base = int(cfg.get("seed", 0))
        if "members" in ph:
            members = [_member(m, base + i, None, panel.times) for i, m in enumerate(ph["members"])]
        else:
            members = [_member(ph, base, ph.get("accuracy"), panel.times)]
        runs.append(Run(path.parent, cfg, _select(cfg, panel.x_key), members, ph.get("status", "")))
    return runs, unfinished


def find_panel_dir(from_dir: Path, figure: Figure, panel: Panel, dirname: str) -> Path | None:
    """Where ``--from DIR`` holds a panel's runs: DIR/<figure>/<dirname> (an earlier --out), DIR/<figure>/<sweep
    stem>*, DIR/<sweep stem> (``lightning-grok sweep SWEEP --sweep-dir DIR/<stem>``, the SLURM array), or DIR
    itself for a one-panel figure."""
    stem = Path(panel.sweep).stem
    candidates = [from_dir / figure.name / dirname, from_dir / figure.name / stem]
    candidates += sorted((from_dir / figure.name).glob(f"{stem}*")) if (from_dir / figure.name).is_dir() else []
    candidates += [from_dir / stem, from_dir / panel.key]
    if len({p.sweep for p in figure.panels}) == 1:
        candidates.append(from_dir)
    for c in candidates:
        if c.is_dir() and next(c.rglob("phases.json"), None) is not None:
            return c
    return None


def _stats(values: Sequence[float | None]) -> dict:
    have = [float(v) for v in values if v is not None]
    if not have:
        return {"mean": None, "std": None, "min": None, "max": None, "missing": len(values), "values": list(values)}
    a = have
    mean = sum(a) / len(a)
    std = math.sqrt(sum((v - mean) ** 2 for v in a) / len(a))
    return {
        "mean": mean,
        "std": std,
        "min": min(a),
        "max": max(a),
        "missing": len(values) - len(a),
        "values": list(values),
    }


def _sort_key(x: Any) -> tuple:
    return (0, float(x)) if isinstance(x, int | float) else (1, str(x))


def point_stats(runs: Sequence[Run]) -> list[dict]:
    """One row per x value: the seeds' t1, t2 and exact times (mean, std, min, max over seeds, GD steps), and
    each bound's mean value and verdict counts."""
    groups: dict[Any, list[dict]] = {}
    for run in runs:
        groups.setdefault(run.x, []).extend(run.members)
    rows = []
    for x in sorted(groups, key=_sort_key):
        members = groups[x]
        bounds: dict[str, dict] = {}
        for name in dict.fromkeys(k for m in members for k in m["bounds"]):
            entries = [m["bounds"].get(name) or {} for m in members]
            values = [e.get("value") for e in entries if isinstance(e.get("value"), int | float)]
            verdicts: dict[str, int] = {}
            for e in entries:
                verdicts[str(e.get("verdict"))] = verdicts.get(str(e.get("verdict")), 0) + 1
            bounds[name] = {"mean": sum(values) / len(values) if values else None, "verdicts": verdicts}
        rows.append(
            {
                "x": x,
                "seeds": [m["seed"] for m in members],
                "t1": _stats([m["t1"] for m in members]),
                "t2": _stats([m["t2"] for m in members]),
                "exact_t1": _stats([m["exact_t1"] for m in members]),
                "exact_t2": _stats([m["exact_t2"] for m in members]),
                "bounds": bounds,
            }
        )
    return rows


def combine_curves(runs: Sequence[Run]) -> dict | None:
    """The seeds' mean and std of every logged curve over ``runs`` (ensembles weighted by their seed count),
    on the step grid of the longest run (runs of one config share the logging schedule)."""
    parts = []
    for run in runs:
        c = run.curves()
        if c and c.get("step"):
            parts.append((c, len(run.members)))
    if not parts:
        return None
    steps = max((c["step"] for c, _ in parts), key=len)
    index = {s: i for i, s in enumerate(steps)}
    keys = [k for k in parts[0][0] if k != "step" and not k.endswith("_std")]
    out: dict[str, list] = {"step": list(steps)}
    for key in keys:
        total = [0.0] * len(steps)
        second = [0.0] * len(steps)
        weight = [0.0] * len(steps)
        for c, w in parts:
            std = c.get(f"{key}_std")
            for j, (s, v) in enumerate(zip(c["step"], c.get(key, []), strict=False)):
                if v is None or (isinstance(v, float) and math.isnan(v)):
                    continue
                i = index.get(s)
                if i is None:
                    continue
                sd = std[j] if std is not None else 0.0
                total[i] += w * v
                second[i] += w * (sd * sd + v * v)
                weight[i] += w
        mean = [t / w if w else math.nan for t, w in zip(total, weight, strict=True)]
        out[key] = mean
        if sum(w for _, w in parts) > 1:
            out[f"{key}_std"] = [
                math.sqrt(max(s / w - m * m, 0.0)) if w else math.nan
                for s, w, m in zip(second, weight, mean, strict=True)
            ]
    return out


def exact_overlay(runs: Sequence[Run], steps: Sequence[int]) -> dict | None:
    """Mean exact GD dynamics (theory/exact.py) of every seed of ``runs``, rebuilt from their configs, at
    ``steps``; None when the model has no closed form (two-layer networks) or a run cannot be rebuilt."""
    import numpy as np
    from omegaconf import OmegaConf

    from lightning_grok.config import RunConfig
    from lightning_grok.members import build_member
    from lightning_grok.plots import exact_curves

    exacts = []
    for run in runs:
        if run.config.get("model", {}).get("family") == "two_layer":
            return None
        try:
            cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), run.config)
        except Exception:  # noqa: BLE001 - a config from another version of the schema: draw without theory
            return None
        for member in run.members:
            built = build_member(OmegaConf.merge(cfg, {"seed": member["seed"], "seeds": 1}))
            if built.theory is None:
                return None
            exacts.append(built.theory.exact)
    if not exacts:
        return None
    return exact_curves(exacts, np.asarray(steps, dtype=np.float64))


# ---------------------------------------------------------------------------------------------------------
# fits


def compute_fits(figure: Figure, panel_runs: Mapping[str, Sequence[Run]]) -> tuple[list, list[dict]]:
    """The figure's scaling-law fits (``scaling.fit_law``, one observation per seed) and the derived
    comparison of the ln nu^2 slopes (t2 steeper than t1: its interval above t1's)."""
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
        reports.append(fit_law(spec.law, xs, ys))
    comparisons = []
    by_name = {r.law: r for r in reports}
    t1, t2 = by_name.get("t1_vs_log_init_scale"), by_name.get("t2_vs_log_init_scale")
    if t1 is not None and t2 is not None:
        row = {"comparison": "slope of t2 vs ln nu^2 > slope of t1 vs ln nu^2", "predicted": "c2 > c1 (Sec. 4.2)"}
        if t1.fit is None or t2.fit is None:
            row |= {"c1": None, "c2": None, "verdict": "insufficient data"}
        else:
            ok = t2.fit.ci_low > t1.fit.ci_high
            row |= {"c1": t1.fit.slope, "c2": t2.fit.slope, "verdict": "consistent" if ok else "inconsistent"}
        comparisons.append(row)
    return reports, comparisons


def fits_markdown(reports: Sequence, comparisons: Sequence[dict]) -> str:
    from lightning_grok.scaling import markdown_table

    text = markdown_table(reports)
    for c in comparisons:
        slopes = "-" if c["c1"] is None else f"c2 = {c['c2']:.4g} vs c1 = {c['c1']:.4g}"
        text += f"\n| {c['comparison']} | {slopes} | - | {c['predicted']} | {c['verdict']} |"
    return text


# ---------------------------------------------------------------------------------------------------------
# one figure


def _json_safe(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _run_seconds(folder: Path | None) -> float | None:
    """Sum of the durations of the finished runs recorded in a sweep directory's state.json (seconds)."""
    if folder is None:
        return None
    try:
        state = json.loads((folder / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return sum(
        (r.get("ended_at") or 0) - (r.get("started_at") or 0)
        for r in state.get("runs", {}).values()
        if r.get("state") == "finished" and r.get("ended_at")
    )


def _thresholds(runs: Sequence[Run]) -> tuple[float, float]:
    phases = runs[0].config.get("phases", {}) if runs else {}
    return float(phases.get("eps", 0.01)), float(phases.get("c", 0.01))


def _mean_time(runs: Sequence[Run], key: str) -> float | None:
    values = [m[key] for r in runs for m in r.members if m[key] is not None]
    return sum(values) / len(values) if values else None


SETTING_KEYS = (  # (config key, symbol) shown under a panel's title when every run of the panel shares it
    ("data.n_train", "n"),
    ("data.input_dim", "d"),
    ("model.width", "m"),
    ("optim.weight_decay", r"\lambda"),
    ("model.init_scale", r"\nu^2"),
    ("optim.lr", r"\eta"),
)
MODULAR_KEYS = (("data.modulus", "p"), ("data.train_fraction", "train fraction"))
NOISE_KEYS = (("data.label_noise_std", "noise std"),)


def setting_text(runs: Sequence[Run], x_key: str | None) -> str:
    """The settings every run of a panel shares (n, d, m, lambda, nu^2, eta; p and the training fraction for
    modular arithmetic), as mathtext in the paper's symbols, the swept key left out."""
    from lightning_grok.plots import nice

    modular = runs[0].config.get("data", {}).get("kind") == "modular"
    keys = (MODULAR_KEYS + SETTING_KEYS[2:] if modular else SETTING_KEYS) + NOISE_KEYS
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
    return ", ".join(parts)


def draw_figure(figure: Figure, panel_runs: Mapping[str, list[Run]], out_dir: Path, note: str) -> dict:
    """Draw every panel; returns {"paths": {png, pdf}, "panels": {key: plotted arrays}}."""
    from lightning_grok import plots

    fig, axes = plots.layout(len(figure.panels))
    plotted: dict[str, dict] = {}
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
        if panel.draw == "times":
            plotted[panel.key] = plots.times_panel(
                ax,
                point_stats(runs),
                x_label=panel.x_symbol,
                x_log=panel.x_log,
                y_log=panel.y_log,
                title=title,
                legend=ax is axes[0],
            )
        elif panel.draw == "curves":
            groups = []
            for x in sorted({r.x for r in runs}, key=_sort_key):
                same = [r for r in runs if r.x == x]
                curve = combine_curves(same)
                if curve is not None:
                    groups.append({"x": x, "curve": curve, "t1": _mean_time(same, "t1"), "t2": _mean_time(same, "t2")})
            plotted[panel.key] = plots.curves_panel(ax, groups, x_symbol=panel.x_symbol, eps=eps, c=c, title=title)
            plotted[panel.key]["curves"] = {str(g["x"]): g["curve"] for g in groups}
        else:
            chosen = [r for r in runs if panel.select is None or r.x == panel.select] or runs
            curve = combine_curves(chosen)
            t1, t2 = _mean_time(chosen, "t1"), _mean_time(chosen, "t2")
            if curve is None:
                plotted[panel.key] = {}
                continue
            if panel.draw == "accuracy":
                plotted[panel.key] = plots.accuracy_panel(ax, curve, t1=t1, t2=t2, eps=eps, c=c, title=title)
            else:
                exact = exact_overlay(chosen, curve["step"])
                plotted[panel.key] = plots.ensemble_panel(
                    ax, curve, exact=exact, t1=t1, t2=t2, eps=eps, c=c, title=title
                )
            plotted[panel.key] |= {"t1": t1, "t2": t2, "seeds": sum(len(r.members) for r in chosen)}
    if note:
        fig.text(0.005, 0.005, note, fontsize=6.5, color="0.4")
    paths = plots.save(fig, out_dir / figure.name, figure.title)
    return {"paths": paths, "panels": plotted}


def bound_verdicts(panel_runs: Mapping[str, Sequence[Run]]) -> dict[str, dict[str, int]]:
    """{bound: {verdict: count}} over every seed of every panel (one count per seed, not per run)."""
    seen: set[tuple[Path, int]] = set()
    counts: dict[str, dict[str, int]] = {}
    for runs in panel_runs.values():
        for run in runs:
            for i, m in enumerate(run.members):
                if (run.path, i) in seen:
                    continue
                seen.add((run.path, i))
                for name, b in m["bounds"].items():
                    slot = counts.setdefault(name, {})
                    slot[str(b.get("verdict"))] = slot.get(str(b.get("verdict")), 0) + 1
    return counts


def log_to_wandb(
    name: str, title: str, png: Path, fits: Sequence, overrides: Sequence[str], out_dir: Path
) -> str | None:
    """The figure (and its fit table) as a W&B run of job type ``reproduce``; returns the W&B mode used, None
    when disabled. W&B settings come from the ``wandb.*`` overrides (mode auto: online when logged in)."""
    from lightning_grok.config import load_config
    from lightning_grok.tracking import resolve_mode, wandb_save_dir

    cfg = load_config(None, [o for o in overrides if o.removeprefix("--").startswith("wandb.")], verb=None)
    save_dir = wandb_save_dir(out_dir)
    mode = resolve_mode(cfg, save_dir)
    if mode == "disabled":
        return None
    import wandb

    run = wandb.init(
        project=cfg.wandb.project,
        entity=cfg.wandb.entity,
        job_type="reproduce",
        name=f"reproduce-{name}",
        dir=str(save_dir),
        mode=mode,
        config={"figure": name, "overrides": list(overrides)},
        reinit="finish_previous",
    )
    try:
        run.log({f"figures/{name}": wandb.Image(str(png), caption=title)})
        if fits:
            columns = ["law", "slope", "ci_low", "ci_high", "prediction", "verdict"]
            table = wandb.Table(columns=columns)
            for r in fits:
                slope = (None, None, None) if r.fit is None else (r.fit.slope, r.fit.ci_low, r.fit.ci_high)
                table.add_data(r.law, *slope, r.predicted, r.verdict)
            run.log({f"fits/{name}": table})
            for r in fits:
                if r.fit is not None:
                    run.summary[f"fits/{r.law}/slope"] = r.fit.slope
    finally:
        run.finish()
    return mode


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


def _finish_figure(figure, panel_runs, folders, unfinished, out_dir, opts, elapsed, from_dir, say) -> dict:
    """Fits, drawing, JSON, markdown, W&B and the printed summary of one figure."""
    reports, comparisons = compute_fits(figure, panel_runs)
    verdicts = bound_verdicts(panel_runs)
    drawn_at = time.time()
    runs_total = len({run.path for runs in panel_runs.values() for run in runs})
    note = f"lightning-grok reproduce {figure.name}{' --quick' if opts['quick'] else ''}: {runs_total} run(s)"
    drawn = draw_figure(figure, panel_runs, out_dir, note)
    paths = drawn["paths"]
    table = fits_markdown(reports, comparisons)
    md = out_dir / f"{figure.name}_fits.md"
    md.write_text(f"# {figure.title}\n\nScaling-law fits (95% intervals over seeds; times in GD steps).\n\n{table}\n")
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
        "seeds_total": sum(len(run.members) for run in {r.path: r for rs in panel_runs.values() for r in rs}.values()),
        "wall_time_s": elapsed,
        "draw_time_s": time.time() - drawn_at,
        "panels": panels,
        "fits": [r.as_dict() for r in reports],
        "comparisons": comparisons,
        "bound_verdicts": verdicts,
        "unfinished_runs": [str(p) for p in unfinished],
        "png": paths["png"],
        "pdf": paths["pdf"],
    }
    json_path = out_dir / f"{figure.name}.json"
    json_path.write_text(json.dumps(_json_safe(data), indent=1) + "\n")
    mode = None
    try:
        mode = log_to_wandb(figure.name, figure.title, paths["png"], reports, opts["overrides"], out_dir)
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


def _settings(folder: Path | None) -> dict | None:
    try:
        return yaml.safe_load((folder / "sweep.yaml").read_text())["parameters"]
    except (OSError, TypeError, KeyError, yaml.YAMLError):
        return None


def _summary(figure: Figure, data: dict, table: str, verdicts: dict, mode: str | None) -> str:
    lines = [
        f"== {figure.name}: {figure.title}",
        f"wrote {data['png']}, {Path(data['pdf']).name}, {figure.name}.json, {figure.name}_fits.md "
        f"({data['runs']} runs, {data['seeds_total']} seeds; wall time {data['wall_time_s']:.1f} s)",
    ]
    if mode:
        lines.append(f"logged to W&B ({mode}), job type reproduce")
    if data["fits"] or data["comparisons"]:
        lines.append(table)
    if verdicts:
        parts = [f"{name}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())) for name, c in verdicts.items()]
        lines.append("bound verdicts (seeds): " + "; ".join(parts))
    if data["unfinished_runs"]:
        lines.append(f"{len(data['unfinished_runs'])} run(s) not drawn (interrupted): rerun the command to resume them")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--agent":
        os.environ.setdefault("WANDB_SILENT", "true")
        raise SystemExit(_agent_main(sys.argv[1:]))
    raise SystemExit("usage: lightning-grok reproduce FIGURE (this module's own entry point is for its agents)")
