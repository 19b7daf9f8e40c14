"""A W&B sweep file: load, validate before any run starts, expand ``command`` the way ``wandb agent`` does.

The same YAML must work unchanged with ``wandb sweep``, so only W&B's own keys are read. The command
has to run ``lightning_grok fit CONFIG ...``: that is how each parameter name and value can be checked
against the run config schema (``load_config``) up front, instead of failing one run at a time.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lightning_grok.config import ConfigError, load_config

METHODS = ("grid", "random", "bayes")
# ${args} and ${args_no_hyphens} are the two forms the fit CLI understands (--key=value, key=value).
ARG_MACROS = {"args": "--{k}={v}", "args_no_hyphens": "{k}={v}"}
OTHER_MACROS = ("env", "interpreter", "program")
ENVVAR = re.compile(r"\$\{envvar\:([A-Z0-9_]*)\}")  # W&B's ${envvar:NAME}
DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]  # W&B's default when command is absent
RESERVED = ("output_dir",)  # the agent gives every run its own directory inside the sweep directory
MAX_GRID_POINTS = 100_000
EXAMPLE_COMMAND = "[${env}, ${interpreter}, -m, lightning_grok, fit, configs/ridge.yaml, ${args_no_hyphens}]"


class SweepSpecError(ValueError):
    """A bad sweep file: the message names the file and what is wrong. CLI exit status 2."""


def import_sweeps():
    """W&B's sweep engine; its pydantic-v1 style config emits a harmless warning on first import."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Valid config keys have changed in V2.*")
        import sweeps  # its run module's class definition warns on first import
    return sweeps


def plain(value: Any) -> Any:
    """numpy scalars (from random/bayes draws) -> Python, so they format and serialize like YAML values."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if not isinstance(value, str | bytes | bool | int | float) and hasattr(value, "item"):
        return value.item()
    if isinstance(value, float) and type(value) is not float:
        return float(value)
    return value


def slug(text: str) -> str:
    """A name safe for file names and ``key=value`` overrides."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-.") or "sweep"


@dataclass
class SweepSpec:
    """A validated sweep file. ``params`` dicts map parameter name -> value (W&B run config, flattened)."""

    path: Path
    text: str  # the file verbatim: copied into the sweep directory
    raw: dict  # as parsed: what ``wandb sweep`` would upload
    engine_config: dict  # raw with the schema's defaults filled in: what ``sweeps.next_run`` gets
    name: str  # slug of ``name`` (or the file stem): run names, W&B group
    method: str
    config_path: str  # the run config named in the command
    template: list[str]  # the command, tokens as strings, macros unexpanded
    config_index: int  # position of the config path in ``template``
    warnings: list[str] = field(default_factory=list)

    @property
    def swept_names(self) -> list[str]:
        """Parameters that vary (everything but ``value:`` constants): the table's columns."""
        return [k for k, v in self.raw["parameters"].items() if not (isinstance(v, dict) and set(v) == {"value"})]

    @property
    def run_cap(self) -> int | None:
        return self.raw.get("run_cap")

    def _expand(self, token: str, params: dict) -> list[str]:
        token = ENVVAR.sub(lambda m: os.environ.get(m.group(1), m.group(1)), token)
        # like wandb agent: only a token that is a macro as a whole is replaced
        if not (token.startswith("${") and token.endswith("}")):
            return [token]
        macro = token[2:-1]
        if macro in ARG_MACROS:
            return [ARG_MACROS[macro].format(k=k, v=v) for k, v in params.items()]
        if macro == "env":
            return ["/usr/bin/env"] if os.path.exists("/usr/bin/env") else []
        if macro == "interpreter":
            return [sys.executable]  # the agent's own Python, so the run sees the same environment
        if macro == "program":
            return [str(self.raw["program"])]
        raise SweepSpecError(f"{self.path}: command macro {token} is not supported")  # excluded by load_spec

    @property
    def _style(self) -> str:
        # the fit CLI takes key=value as positionals and --key=value as options: after a --key=value, a
        # positional is rejected, so the agent's own overrides follow the style of the command's macro
        return ARG_MACROS["args"] if "${args}" in self.template else ARG_MACROS["args_no_hyphens"]

    def agent_overrides(self) -> list[str]:
        """Overrides the agent adds right after the config path, so a literal one in the command still wins."""
        extra = {"wandb.group": self.name}
        for key in ("project", "entity"):
            if self.raw.get(key):
                extra[f"wandb.{key}"] = self.raw[key]
        return [self._style.format(k=k, v=v) for k, v in extra.items()]

    def overrides(self, params: dict, output_dir: str | os.PathLike | None = None) -> list[str]:
        """Every ``key=value`` the run's fit command receives, in order (later ones win)."""
        out = self.agent_overrides()
        for token in self.template[self.config_index + 1 :]:
            out += self._expand(token, params)
        if output_dir is not None:
            out.append(self._style.format(k="output_dir", v=output_dir))  # last: the agent chooses the run dir
        return out

    def argv(self, params: dict, output_dir: str | os.PathLike | None = None) -> list[str]:
        """The full command of one run, as ``wandb agent`` would build it plus the agent's overrides."""
        head: list[str] = []
        for token in self.template[: self.config_index + 1]:
            head += self._expand(token, params)
        return head + self.overrides(params, output_dir)

    def check_point(self, params: dict, output_dir: str | os.PathLike | None = None) -> None:
        """Load the run config exactly as the run will; raises ConfigError."""
        load_config(self.config_path, self.overrides(params, output_dir))

    def points(self, limit: int = MAX_GRID_POINTS) -> list[dict]:
        """grid: every point, in the engine's order. random/bayes: three random draws (for validation)."""
        sweeps = import_sweeps()
        if self.method == "grid":
            runs = sweeps.next_runs(self.engine_config, [], n=limit + 1)
            pts = [params_of(r) for r in runs if r is not None]
            if len(pts) > limit:
                raise SweepSpecError(f"{self.path}: the grid has more than {limit} points")
            return pts
        cfg = dict(self.engine_config, method="random")
        return [params_of(sweeps.next_run(cfg, [])) for _ in range(3)]


def same_runs(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two sweep configs define the same runs: equal but for ``name`` (run names and the W&B group
    only) and, under grid and random search, ``metric``, which only names what W&B shows (bayes chooses its
    points by it)."""

    def defining(raw: Mapping[str, Any]) -> dict:
        return {
            k: v
            for k, v in raw.items()
            if k != "name" and not (k == "metric" and raw.get("method") in ("grid", "random"))
        }

    return defining(a) == defining(b)


def params_of(run: Any) -> dict:
    """A SweepRun's config ({name: {"value": v}}) flattened to {name: v}."""
    return {k: plain(v["value"]) for k, v in run.config.items()}


def _fail(path: Path, msg: str) -> SweepSpecError:
    return SweepSpecError(f"sweep file {path}: {msg}")


def default_sweep_dir(name: str) -> Path:
    return Path("sweep_runs") / name


def load_spec(
    path: str | os.PathLike, *, sweep_dir: str | os.PathLike | None = None, check_config: bool = True
) -> SweepSpec:
    """Parse and validate a sweep file. Raises SweepSpecError (exit status 2) before anything runs.

    Checks, in order: YAML, W&B's schema, the method, the command, then every parameter name and
    every grid value (a sample for random/bayes distributions) through ``load_config``, with the
    overrides the agent adds (``output_dir`` inside ``sweep_dir``, default ``sweep_runs/<name>``).
    """
    path = Path(path)
    if not path.is_file():
        raise SweepSpecError(f"sweep file not found: {path}")
    text = path.read_text()
    try:
        raw = yaml.safe_load(text)  # the loader wandb's CLI uses, so values get the same types
    except yaml.YAMLError as exc:
        raise _fail(path, f"cannot parse YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise _fail(path, f"must hold a mapping of sweep keys, got {type(raw).__name__}")
    sweeps = import_sweeps()
    violations = sweeps.schema_violations_from_proposed_config(raw)
    if violations:
        raise _fail(path, "not a valid W&B sweep config:\n  " + "\n  ".join(violations))
    method = raw.get("method")
    if method not in METHODS:
        raise _fail(path, f"method {method!r} is not supported by the offline agent (allowed: {', '.join(METHODS)})")
    if method == "bayes" and not raw.get("metric"):
        raise _fail(path, "method 'bayes' needs a metric (e.g. {name: grok/t_generalize, goal: minimize})")
    params = raw.get("parameters")
    if not isinstance(params, dict) or not params:
        raise _fail(path, "parameters must be a non-empty mapping")
    nested = [k for k, v in params.items() if isinstance(v, dict) and "parameters" in v]
    if nested:
        raise _fail(
            path,
            f"parameter {nested[0]!r} is nested: W&B passes it as one dict-valued argument, which the fit CLI "
            "does not take; use dotted names instead (e.g. optim.weight_decay)",
        )
    reserved = [k for k in params if k in RESERVED]
    if reserved:
        raise _fail(path, f"parameter {reserved[0]!r} is set by the agent (each run gets <sweep-dir>/runs/<run>)")
    engine_config = dict(sweeps.SweepConfig(raw))
    template, config_index = _parse_command(path, raw)
    spec = SweepSpec(
        path=path,
        text=text,
        raw=raw,
        engine_config=engine_config,
        name=slug(raw.get("name") or path.stem),
        method=method,
        config_path=template[config_index],
        template=template,
        config_index=config_index,
    )
    if raw.get("early_terminate"):
        spec.warnings.append("early_terminate is ignored by the offline agent (every run goes to its end)")
    try:
        points = spec.points()
    except ValueError as exc:  # e.g. a continuous distribution under method: grid
        raise _fail(path, str(exc)) from None
    if check_config:
        root = Path(sweep_dir) if sweep_dir is not None else default_sweep_dir(spec.name)
        _check_against_config(spec, points, str(root.resolve() / "runs" / f"{spec.name}-0001"))
    return spec


def _parse_command(path: Path, raw: dict) -> tuple[list[str], int]:
    """The command as strings, and where its config path is; rejects commands the agent cannot check."""
    template = [str(t) for t in (raw.get("command") or DEFAULT_COMMAND)]
    for token in template:
        if token.startswith("${") and token.endswith("}"):
            macro = token[2:-1]
            if macro not in ARG_MACROS and macro not in OTHER_MACROS:
                raise _fail(
                    path,
                    f"command macro {token} is not supported by the offline agent "
                    "(use ${env}, ${interpreter}, ${program}, ${args_no_hyphens} or ${args})",
                )
            if macro == "program" and not raw.get("program"):
                raise _fail(path, "the command uses ${program} but the sweep has no program")
    literal = [str(raw.get("program", "")) if t == "${program}" else t for t in template]
    for i, token in enumerate(template[:-1]):
        if token == "fit" and any("lightning_grok" in t or "lightning-grok" in t for t in literal[:i]):
            config_index = i + 1
            break
    else:
        raise _fail(path, f"the command must run `lightning_grok fit CONFIG ...`, e.g. command: {EXAMPLE_COMMAND}")
    config = template[config_index]
    if config.startswith("${"):
        raise _fail(path, f"the command must name the run config right after `fit`, e.g. command: {EXAMPLE_COMMAND}")
    arg_positions = [i for i, t in enumerate(template) if t[2:-1] in ARG_MACROS and t.startswith("${")]
    if not arg_positions:
        raise _fail(path, "the command passes no parameters: add ${args_no_hyphens} after the config path")
    if min(arg_positions) < config_index:
        raise _fail(path, "${args_no_hyphens} / ${args} must come after the config path in the command")
    return template, config_index


def _none_hint(value: Any) -> str:
    if value is None:
        return " (W&B passes str(value), i.e. 'None'; write the string 'null' to pass null)"
    return ""


def _check_against_config(spec: SweepSpec, points: list[dict], output_dir_example: str) -> None:
    """Every parameter name and value through the run config schema, as the run itself will load it."""
    path = spec.path
    if not Path(spec.config_path).is_file():
        raise _fail(
            path,
            f"run config {spec.config_path!r} (from the command) not found from {os.getcwd()}; "
            "run the agent from the directory the command's paths are relative to (the repository root)",
        )
    try:
        load_config(spec.config_path, spec.overrides({}, output_dir_example))
    except ConfigError as exc:
        raise _fail(path, f"the command's fixed arguments are rejected by the run config schema: {exc}") from None
    base = points[0]
    # one parameter at a time first, so the message names the parameter and the value at fault
    for name, pspec in spec.raw["parameters"].items():
        values = pspec["values"] if isinstance(pspec, dict) and "values" in pspec else [base[name]]
        for value in values:
            try:
                spec.check_point({**base, name: value}, output_dir_example)
            except ConfigError as exc:
                raise _fail(
                    path,
                    f"parameter {name!r} = {value!r} is rejected by the run config schema: {exc}{_none_hint(value)}",
                ) from None
    for point in points:
        try:
            spec.check_point(point, output_dir_example)
        except ConfigError as exc:
            shown = " ".join(f"{k}={v}" for k, v in point.items())
            raise _fail(path, f"point [{shown}] is rejected by the run config schema: {exc}") from None
