"""The run configuration: an OmegaConf structured schema, YAML loading, ``key=value`` overrides, validation.

Hyperparameters keep the paper's names (arXiv:2601.19791, Sec. 2): ``optim.lr`` is eta,
``optim.weight_decay`` is lambda, ``data.n_train`` is n, ``model.width`` is m, ``model.init_scale``
is nu^2, ``data.input_dim`` is d, ``phases.eps`` is epsilon and ``phases.c`` is c. All times are
counted in GD steps, never in epochs.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

DATA_KINDS = ("regression", "modular")
TEACHERS = ("zero", "linear", "relu", "fourier", "student")
POPULATIONS = ("exact", "sampled")
TARGETS = ("onehot", "index")
OPERATIONS = ("add", "sub", "mul", "div", "x2_plus_y2", "x2_plus_xy_plus_y2")
FAMILIES = ("ridge", "random_features", "two_layer")
FEATURE_MAPS = ("relu", "fourier")
OPTIMIZERS = ("gd", "sgd", "adamw")
PRECISIONS = ("64-true", "64", "32-true", "32", "bf16-mixed", "16-mixed")
WANDB_MODES = ("auto", "online", "offline", "disabled")
KERNELS = ("auto", "parameter", "rowspace")


@dataclass
class DataConfig:
    kind: str = "regression"  # regression | modular
    n_train: int = 100  # n, training points (regression)
    input_dim: int | None = None  # d; ridge uses the identity feature map, so null means d = m
    teacher: str = "linear"  # zero | linear | relu | fourier | student
    teacher_norm: float = 1.0  # ||theta*|| (linear, student) or ||w*|| (relu)
    label_noise_std: float = 0.0  # std of Gaussian noise on training labels only
    population: str = "exact"  # exact: closed-form Sigma where known; sampled: a drawn test set
    n_test: int = 2000  # test points when the population loss is sampled
    n_sigma_samples: int = 4000  # fresh inputs used to estimate lambda_min(Sigma) when it is not known
    # modular arithmetic: the table a op b mod p
    modulus: int = 97  # p
    operation: str = "add"  # add | sub | mul | div | x2_plus_y2 | x2_plus_xy_plus_y2
    train_fraction: float = 0.3  # share of the p*p table used for training (seeded split)
    target: str = "onehot"  # onehot (squared loss) | index (cross-entropy)


@dataclass
class ModelConfig:
    family: str = "ridge"  # ridge | random_features | two_layer
    width: int = 1000  # m: parameters (ridge) or hidden units (networks)
    init_scale: float = 1.0  # nu^2: theta0 variance (ridge); hidden-weight scale (networks)
    features: str = "relu"  # random_features only: relu | fourier
    fourier_variance: float = 1.0  # sigma^2 of the Fourier frequencies W ~ N(0, sigma^2 I)


@dataclass
class OptimConfig:
    name: str = "gd"  # gd: full-batch GD, Eq. (2) | sgd: with momentum | adamw: decoupled decay
    lr: float = 1.0  # eta
    weight_decay: float = 1e-4  # lambda
    momentum: float = 0.9  # sgd only
    beta1: float = 0.9  # adamw only
    beta2: float = 0.98  # adamw only
    batch_size: int | None = None  # null = full batch (the paper's setting)
    allow_unstable: bool = False  # run even when lr exceeds the GD stability limit


@dataclass
class PhasesConfig:
    eps: float = 0.01  # epsilon: t1 = last step with training loss >= eps
    c: float = 0.01  # c >= eps: t2 = first step with population loss <= c
    acc_threshold: float = 0.99  # tau for the accuracy-based t1, t2 (classification)
    delta: float = 0.05  # failure probability used in the explicit hypothesis checks (A.9)
    stop_margin: float | None = None  # end the run this fraction of t2 after both are found; null = never


@dataclass
class TrainerConfig:
    max_steps: int = 50_000  # GD steps
    steps_per_call: int = 0  # GD steps per Lightning training_step; 0 = automatic
    kernel: str = "auto"  # linear GD: parameter (O(nm)/step) | rowspace (O(n^2)/step, n < m) | auto (rowspace if n < m)
    accelerator: str = "auto"
    devices: str = "auto"  # "auto", a count ("2") or a list ("0,1")
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "64-true"  # 64-true | 32-true | bf16-mixed | 16-mixed
    progress_bar: bool = True
    checkpoint_every: int = 0  # GD steps between checkpoints; 0 = only at the end (and on SLURM signal)


@dataclass
class WandbConfig:
    mode: str = "auto"  # auto: online if logged in, else offline | online | offline | disabled
    project: str = "lightning_grok"
    entity: str | None = None
    group: str | None = None
    name: str | None = None
    tags: list[str] = field(default_factory=list)
    run_id: str | None = None  # reuse to resume the same W&B run (requeue)
    log_points: int = 400  # curve points logged per run, spaced geometrically in steps


@dataclass
class RunConfig:
    seed: int = 0
    seeds: int = 1  # K > 1: K independent runs (seeds seed..seed+K-1) batched in one process
    output_dir: str | None = None  # null: runs/<config name>-<time>
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    phases: PhasesConfig = field(default_factory=PhasesConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)


class ConfigError(ValueError):
    """Bad user input: the message names the key, the value and what is allowed. CLI exit status 2."""


def _schema() -> DictConfig:
    cfg = OmegaConf.structured(RunConfig)
    OmegaConf.set_struct(cfg, True)
    return cfg


def _explain(exc: OmegaConfBaseException, source: str) -> ConfigError:
    key = getattr(exc, "full_key", None) or getattr(exc, "key", None) or "?"
    value = getattr(exc, "value", None)
    msg = str(exc).splitlines()[0]
    if "Key '" in msg and "not in" in msg:
        parent = key.rsplit(".", 1)[0] if "." in str(key) else ""
        allowed = sorted(OmegaConf.select(_schema(), parent).keys()) if parent else sorted(_schema().keys())
        return ConfigError(f"{source}: unknown key '{key}' (allowed keys here: {', '.join(allowed)})")
    return ConfigError(f"{source}: key '{key}' has invalid value {value!r}: {msg}")


def parse_overrides(overrides: list[str]) -> list[str]:
    """Accept ``key=value`` and W&B's ``--key=value`` forms."""
    cleaned = []
    for item in overrides:
        item = item[2:] if item.startswith("--") else item
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        cleaned.append(item)
    return cleaned


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> DictConfig:
    """Schema <- YAML file <- overrides, then range validation. Raises ConfigError on bad input."""
    cfg = _schema()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"cannot parse config file {path}: {exc}") from None
        if raw is not None and not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(raw).__name__}")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.create(raw or {}))
        except OmegaConfBaseException as exc:
            raise _explain(exc, str(path)) from None
    if overrides:
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(parse_overrides(overrides)))
        except OmegaConfBaseException as exc:
            raise _explain(exc, "override") from None
    OmegaConf.set_struct(cfg, True)
    validate(cfg)
    return cfg


def _rules() -> list[tuple[str, Any, str]]:
    pos = (lambda v: v > 0, "a number > 0")
    nonneg = (lambda v: v >= 0, "a number >= 0")
    atleast1 = (lambda v: v >= 1, "an integer >= 1")
    return [
        ("seeds", *atleast1),
        ("data.kind", lambda v: v in DATA_KINDS, f"one of {DATA_KINDS}"),
        ("data.n_train", *atleast1),
        ("data.input_dim", lambda v: v is None or v >= 1, "null or an integer >= 1"),
        ("data.teacher", lambda v: v in TEACHERS, f"one of {TEACHERS}"),
        ("data.teacher_norm", *nonneg),
        ("data.label_noise_std", *nonneg),
        ("data.population", lambda v: v in POPULATIONS, f"one of {POPULATIONS}"),
        ("data.n_test", *atleast1),
        ("data.n_sigma_samples", *atleast1),
        ("data.modulus", lambda v: v >= 2, "an integer >= 2"),
        ("data.operation", lambda v: v in OPERATIONS, f"one of {OPERATIONS}"),
        ("data.train_fraction", lambda v: 0 < v < 1, "a number strictly between 0 and 1"),
        ("data.target", lambda v: v in TARGETS, f"one of {TARGETS}"),
        ("model.family", lambda v: v in FAMILIES, f"one of {FAMILIES}"),
        ("model.width", *atleast1),
        ("model.init_scale", *pos),
        ("model.features", lambda v: v in FEATURE_MAPS, f"one of {FEATURE_MAPS}"),
        ("model.fourier_variance", *pos),
        ("optim.name", lambda v: v in OPTIMIZERS, f"one of {OPTIMIZERS}"),
        ("optim.lr", *pos),
        ("optim.weight_decay", *nonneg),
        ("optim.momentum", lambda v: 0 <= v < 1, "a number in [0, 1)"),
        ("optim.beta1", lambda v: 0 <= v < 1, "a number in [0, 1)"),
        ("optim.beta2", lambda v: 0 <= v < 1, "a number in [0, 1)"),
        ("optim.batch_size", lambda v: v is None or v >= 1, "null (full batch) or an integer >= 1"),
        ("phases.eps", *pos),
        ("phases.acc_threshold", lambda v: 0 < v <= 1, "a number in (0, 1]"),
        ("phases.delta", lambda v: 0 < v < 1, "a number strictly between 0 and 1"),
        ("phases.stop_margin", lambda v: v is None or v >= 0, "null or a number >= 0"),
        ("trainer.max_steps", *atleast1),
        ("trainer.steps_per_call", *nonneg),
        ("trainer.num_nodes", *atleast1),
        ("trainer.kernel", lambda v: v in KERNELS, f"one of {KERNELS}"),
        ("trainer.precision", lambda v: v in PRECISIONS, f"one of {PRECISIONS}"),
        ("trainer.checkpoint_every", *nonneg),
        ("wandb.mode", lambda v: v in WANDB_MODES, f"one of {WANDB_MODES}"),
        ("wandb.log_points", *atleast1),
    ]


def validate(cfg: DictConfig) -> None:
    """Range checks that a type cannot express. Raises ConfigError naming key, value and what is allowed."""
    for key, ok, allowed in _rules():
        value = OmegaConf.select(cfg, key)
        if isinstance(value, float) and math.isnan(value) or not ok(value):
            raise ConfigError(f"invalid value for '{key}': {value!r} (allowed: {allowed})")
    if not cfg.phases.c >= cfg.phases.eps:
        raise ConfigError(
            f"invalid value for 'phases.c': {cfg.phases.c!r} (allowed: c >= phases.eps = {cfg.phases.eps})"
        )
    if cfg.model.family == "ridge" and cfg.data.kind == "regression":
        d = cfg.data.input_dim
        if d is not None and d != cfg.model.width:
            raise ConfigError(
                f"invalid value for 'data.input_dim': {d!r} (allowed: null or model.width = {cfg.model.width};"
                " ridge regression uses the identity feature map phi(x) = x)"
            )
    if cfg.data.kind == "regression" and cfg.data.teacher == "student" and cfg.model.family == "two_layer":
        raise ConfigError(
            "invalid value for 'data.teacher': 'student' (allowed with model.family=two_layer: zero, linear, relu)"
        )
    if cfg.data.kind == "modular" and cfg.data.target == "index" and cfg.model.family != "two_layer":
        raise ConfigError(
            f"invalid value for 'data.target': 'index' with model.family={cfg.model.family!r}"
            " (allowed: onehot; cross-entropy needs model.family=two_layer)"
        )
    if cfg.seeds > 1 and (cfg.model.family == "two_layer" or cfg.optim.name != "gd" or cfg.optim.batch_size):
        raise ConfigError(
            f"invalid value for 'seeds': {cfg.seeds} with model.family={cfg.model.family!r}, "
            f"optim.name={cfg.optim.name!r} (allowed: 1; several seeds are batched for the linear families "
            "(ridge, random_features) trained by full-batch optim.name=gd)"
        )
    if cfg.data.kind == "modular" and cfg.data.operation in ("div",) and not _is_prime(cfg.data.modulus):
        raise ConfigError(
            f"invalid value for 'data.modulus': {cfg.data.modulus} (allowed: a prime, since operation "
            f"'{cfg.data.operation}' needs the field Z_p)"
        )


def _is_prime(p: int) -> bool:
    return p >= 2 and all(p % k for k in range(2, math.isqrt(p) + 1))


def to_container(cfg: DictConfig) -> dict:
    """The resolved config as plain Python (for phases.json and W&B)."""
    return OmegaConf.to_container(cfg, resolve=True)
