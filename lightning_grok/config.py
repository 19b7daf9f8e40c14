"""The run configuration: an OmegaConf structured schema, YAML loading, ``key=value`` overrides, validation.

Hyperparameters keep the paper's names (arXiv:2601.19791, Sec. 2): ``optim.lr`` is eta,
``optim.weight_decay`` is lambda, ``data.n_train`` is n, ``model.width`` is m, ``model.init_scale``
is nu^2, ``data.input_dim`` is d, ``phases.eps`` is epsilon and ``phases.c`` is c. All times are
counted in GD steps, never in epochs.
"""

from __future__ import annotations

import difflib
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lightning_grok.resources import COMPONENT_KEYS, available_memory, estimate_memory, gib

DATA_KINDS = ("regression", "modular")
TEACHERS = ("zero", "linear", "relu", "fourier", "student")
POPULATIONS = ("exact", "sampled")
TARGETS = ("onehot", "index")
OPERATIONS = ("add", "sub", "mul", "div", "x2_plus_y2", "x2_plus_xy_plus_y2")
FAMILIES = ("ridge", "random_features", "two_layer", "transformer")
FEATURE_MAPS = ("relu", "fourier")
RIDGE_FEATURES = ("identity", "gaussian_projection")
INPUT_DISTS = ("gaussian", "gaussian_scaled", "sphere")
# (random feature map, teacher) pairs whose population loss has a closed form (theory/population.py)
CLOSED_FORM_TEACHERS = {
    "relu": ("zero", "linear", "relu", "student"),
    "fourier": ("zero", "linear", "fourier", "student"),
}
CROSS_ENTROPY_FAMILIES = ("two_layer", "transformer")  # the networks that train on class indices
OPTIMIZERS = ("gd", "sgd", "adamw")
PRECISIONS = ("64-true", "64", "32-true", "32", "bf16-mixed", "16-mixed")
WANDB_MODES = ("auto", "online", "offline", "disabled")
KERNELS = ("auto", "parameter", "rowspace")
# Lightning's accelerator names; whether the hardware is there is checked where the run is prepared
# (trainer_checks.py), since asking needs torch and Lightning
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
DEVICES_ALLOWED = "auto, -1 (every device), a count >= 1 such as 2, or device indices such as 0,1"
INT64_MAX = 2**63 - 1  # torch and numpy hold integers as int64: a larger one overflows (or runs forever)


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
    # network inputs (and ridge's gaussian_projection latents): gaussian N(0, I_d) | gaussian_scaled N(0, I_d/d)
    # | sphere (uniform on the unit sphere, radius 1); ridge's identity features are always N(0, I/m)
    input_dist: str = "gaussian"
    # modular arithmetic: the table a op b mod p
    modulus: int = 97  # p
    operation: str = "add"  # add | sub | mul | div | x2_plus_y2 | x2_plus_xy_plus_y2
    train_fraction: float = 0.3  # share of the p*p table used for training (seeded split)
    target: str = "onehot"  # onehot (squared loss) | index (cross-entropy)


@dataclass
class ModelConfig:
    family: str = "ridge"  # ridge | random_features | two_layer | transformer (modular arithmetic, cross-entropy)
    width: int = 1000  # m: parameters (ridge) or hidden units (networks); unused by the transformer
    init_scale: float = 1.0  # nu^2: theta0 variance (ridge); hidden-weight scale (networks)
    features: str = "relu"  # random_features only: relu | fourier
    fourier_variance: float = 1.0  # sigma^2 of the Fourier frequencies W ~ N(0, sigma^2 I)
    # ridge only: identity phi(x) = x ~ N(0, I/m), d = m | gaussian_projection phi(z) = W z / sqrt(d), any d
    ridge_features: str = "identity"
    # transformer only (decoder-only, on the tokens "a op b ="; models/transformer.py)
    n_layers: int = 1  # transformer blocks (causal self-attention + MLP of 4 d_model units)
    d_model: int = 128  # transformer: width of the residual stream and the embeddings
    n_heads: int = 4  # transformer: attention heads (d_model must be a multiple)


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
    accelerator: str = "auto"  # gpu is cuda; checked against this machine before the run directory is written
    devices: str = "auto"  # GPUs (or CPU processes) per node
    num_nodes: int = 1
    strategy: str = "auto"  # Lightning's strategy name: auto, ddp, ... (its StrategyRegistry)
    precision: str = "64-true"  # 64-true | 32-true | bf16-mixed | 16-mixed
    progress_bar: bool = True
    checkpoint_every: int = 0  # GD steps between checkpoints; 0 = only at the end (and on SLURM signal)
    checkpoint_minutes: float = 5.0  # wall-clock minutes between checkpoints: what a kill -9 can cost; 0 = off
    eval_every: int = 0  # test-set population loss every s-th GD step (t1, t2 stay exact); 0 = auto, 1 = every step
    threads: int = 0  # torch intra-op threads; 0 = usable CPUs / lightning_grok runs sharing them (threads.py)


@dataclass
class WandbConfig:
    mode: str = "auto"  # auto: online if logged in, else offline | online | offline | disabled
    project: str = "lightning_grok"
    entity: str | None = None
    # W&B group (every run's job type is "fit"); null: a sweep's runs share one, the sweep name under
    # `lightning-grok sweep` (the offline agent passes it), sweep-<id> under `wandb agent`; else WANDB_RUN_GROUP
    group: str | None = None  # null: the sweep name (lightning-grok sweep), sweep-<id> (wandb agent), else none
    name: str | None = None  # null: family, the keys set on the command line and the seed, e.g. ridge-wd1e-4-s3
    tags: list[str] = field(default_factory=list)  # added to the automatic ones: family, data kind, ensemble
    notes: str | None = None  # the W&B run's notes (its description in the UI)
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
    key = getattr(exc, "full_key", None) or getattr(exc, "key", None)
    value = getattr(exc, "value", None)
    msg = str(exc).splitlines()[0]
    if key and "Key '" in msg and "not in" in msg:
        parent = key.rsplit(".", 1)[0] if "." in str(key) else ""
        allowed = sorted(OmegaConf.select(_schema(), parent).keys()) if parent else sorted(_schema().keys())
        close = suggest_keys(str(key))
        hint = f"did you mean {' or '.join(close)}?; " if close else ""
        return ConfigError(f"{source}: unknown key '{key}' ({hint}allowed keys here: {', '.join(allowed)})")
    if "nterpolation" in type(exc).__name__ or "interpolation" in msg:
        return ConfigError(f"{source}: key '{key}' cannot be resolved: {msg}")
    if not key:
        return ConfigError(f"{source}: {msg}")
    return ConfigError(f"{source}: key '{key}' has invalid value {value!r}: {msg}")


def schema_keys(tree: dict | None = None, prefix: str = "") -> list[str]:
    """Every leaf key of the schema, dotted as overrides write it (``optim.lr``), in schema order."""
    tree = OmegaConf.to_container(_schema()) if tree is None else tree
    keys = []
    for name, value in tree.items():
        keys += schema_keys(value, f"{prefix}{name}.") if isinstance(value, dict) else [f"{prefix}{name}"]
    return keys


def suggest_keys(key: str, limit: int = 3) -> list[str]:
    """The schema keys ``key`` was most likely meant to be: those with the same last dotted component
    (``lr`` -> ``optim.lr``), else the closest by ``difflib`` over the full dotted keys (``model.widht`` ->
    ``model.width``) and over their last components (``wdith`` -> ``model.width``)."""
    keys = schema_keys()
    last = key.rsplit(".", 1)[-1]
    same = [k for k in keys if k.rsplit(".", 1)[-1] == last and k != key]
    if same:
        return same[:limit]
    found = difflib.get_close_matches(key, keys, n=limit, cutoff=0.75)
    by_last: dict[str, list[str]] = {}
    for k in keys:
        by_last.setdefault(k.rsplit(".", 1)[-1], []).append(k)
    for name in difflib.get_close_matches(last, list(by_last), n=limit, cutoff=0.75):
        found += by_last[name]
    return list(dict.fromkeys(found))[:limit]


class _StrictLoader(yaml.SafeLoader):
    """yaml's SafeLoader, refusing a key given twice in one mapping (plain yaml keeps the last one silently)."""

    source = "<config>"

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        self._check_duplicates(node, "")
        return self.construct_document(node)

    def _check_duplicates(self, node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._check_duplicates(item, f"{prefix}[{i}].")
        if not isinstance(node, yaml.MappingNode):
            return
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *anchor' keys may be overridden explicitly
                continue
            key = self.construct_object(key_node, deep=True) if isinstance(key_node, yaml.ScalarNode) else None
            line = key_node.start_mark.line + 1
            if key is not None and key in seen:
                raise ConfigError(
                    f"config file {self.source}: key '{prefix}{key}' appears twice (lines {seen[key]} and {line}); "
                    "allowed: each key once"
                )
            seen[key] = line
            self._check_duplicates(value_node, f"{prefix}{key}.")


def _read_yaml(path: Path) -> Any:
    """The parsed YAML file at ``path``; ConfigError naming the file when it is missing, unreadable, not UTF-8
    text, not YAML, or has a duplicate key."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:  # a folder on the way that may not be searched, a broken link loop
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        # a directory; a FIFO or a device would block or never end
        raise ConfigError(f"config file {path} is not a regular file (allowed: a YAML file)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"config file {path} is not UTF-8 text: byte 0x{data[exc.start]:02x} at line {line} "
            f"(offset {exc.start}); allowed: a UTF-8 YAML file"
        ) from None
    loader = _StrictLoader(text)
    loader.source = str(path)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse config file {path}: {_yaml_problem(exc)}") from None
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.YAMLError, where: bool = True) -> str:
    """A YAML error on one line: what is wrong and (``where``) its line and column in the file."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None) if where else None
    context = getattr(exc, "context", None)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{at}" + (f" ({context})" if context else "")


def _check_groups(raw: dict, schema: DictConfig, source: str, prefix: str = "") -> None:
    """A group of keys (``optim``, ``data``...) must be given a mapping, never a single value (``optim=3``)."""
    for key, value in raw.items():
        if not isinstance(key, str) or key not in schema:
            continue  # the merge reports unknown keys, with the allowed ones
        node = schema[key]
        if not isinstance(node, DictConfig):
            continue
        full = f"{prefix}{key}"
        if not isinstance(value, dict):
            keys = list(node.keys())
            raise ConfigError(
                f"{source}: key '{full}' is a group of keys ({', '.join(keys)}), got the single value {value!r} "
                f"(allowed: a mapping, or one of its keys, e.g. {full}.{keys[0]}=...)"
            )
        _check_groups(value, node, source, f"{full}.")


def parse_overrides(overrides: list[str]) -> list[str]:
    """Accept ``key=value`` and W&B's ``--key=value`` forms."""
    cleaned = []
    for item in overrides:
        item = item[2:] if item.startswith("--") else item
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ConfigError(f"override {item!r} is not of the form key=value")
        cleaned.append(item)
    return cleaned


def _parse_override(item: str) -> DictConfig:
    """One ``key=value`` as a config; ConfigError naming the key when the value is not valid YAML (``[1``)."""
    key, value = item.split("=", 1)
    try:
        return OmegaConf.from_dotlist([item])
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"override: key '{key}' has unparseable value {value!r}: {_yaml_problem(exc, where=False)} "
            "(allowed: a YAML scalar, e.g. 1e-3, true, text; or a list such as [a, b])"
        ) from None
    except OmegaConfBaseException as exc:
        raise _explain(exc, "override") from None


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | None = None, *, verb: str | None = "fit"
) -> DictConfig:
    """Schema <- YAML file <- overrides, then validation. Raises ConfigError on bad input.

    Interpolations are resolved here, so ``seed=${nope}`` fails now, not mid-run. ``verb`` (``"fit"``,
    ``"theory"``, or None to skip) selects the memory estimate checked against the machine's
    (``resources.estimate_memory``).
    """
    cfg = _schema()
    if path is not None:
        path = Path(path)
        raw = _read_yaml(path)
        if raw is not None and not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(raw).__name__}")
        _check_groups(raw or {}, cfg, f"config file {path}")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.create(raw or {}))
        except OmegaConfBaseException as exc:
            raise _explain(exc, str(path)) from None
        except (ValueError, TypeError) as exc:  # a YAML value OmegaConf cannot hold (a date, a binary)
            raise ConfigError(f"config file {path}: {exc}") from None
    for item in parse_overrides(overrides or []):
        layer = _parse_override(item)
        _check_groups(OmegaConf.to_container(layer), cfg, "override")
        try:
            cfg = OmegaConf.merge(cfg, layer)
        except OmegaConfBaseException as exc:
            raise _explain(exc, "override") from None
    OmegaConf.set_struct(cfg, True)
    validate(cfg, verb=verb)
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
        ("data.input_dist", lambda v: v in INPUT_DISTS, f"one of {INPUT_DISTS}"),
        ("data.modulus", lambda v: v >= 2, "an integer >= 2"),
        ("data.operation", lambda v: v in OPERATIONS, f"one of {OPERATIONS}"),
        ("data.train_fraction", lambda v: 0 < v < 1, "a number strictly between 0 and 1"),
        ("data.target", lambda v: v in TARGETS, f"one of {TARGETS}"),
        ("model.family", lambda v: v in FAMILIES, f"one of {FAMILIES}"),
        ("model.width", *atleast1),
        ("model.init_scale", *pos),
        ("model.features", lambda v: v in FEATURE_MAPS, f"one of {FEATURE_MAPS}"),
        ("model.fourier_variance", *pos),
        ("model.ridge_features", lambda v: v in RIDGE_FEATURES, f"one of {RIDGE_FEATURES}"),
        ("model.n_layers", *atleast1),
        ("model.d_model", *atleast1),
        ("model.n_heads", *atleast1),
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
        ("trainer.accelerator", lambda v: v in ACCELERATORS, f"one of {ACCELERATORS}"),
        ("trainer.devices", devices_form_ok, DEVICES_ALLOWED),
        ("trainer.kernel", lambda v: v in KERNELS, f"one of {KERNELS}"),
        ("trainer.precision", lambda v: v in PRECISIONS, f"one of {PRECISIONS}"),
        ("trainer.checkpoint_every", *nonneg),
        ("trainer.checkpoint_minutes", *nonneg),
        ("trainer.eval_every", *nonneg),
        ("trainer.threads", *nonneg),
        ("wandb.mode", lambda v: v in WANDB_MODES, f"one of {WANDB_MODES}"),
        ("wandb.log_points", *atleast1),
    ]


def devices_form_ok(spec: object) -> bool:
    """``trainer.devices`` is auto, -1, a count >= 1, or distinct device indices >= 0 joined by commas."""
    text = str(spec).strip()
    if text in ("auto", "-1"):
        return True
    if "," not in text:
        return text.isdigit() and int(text) >= 1
    parts = [p.strip() for p in text.split(",") if p.strip()]
    return bool(parts) and all(p.isdigit() for p in parts) and len({int(p) for p in parts}) == len(parts)


def _out_of_int64(tree: Any, prefix: str = "") -> tuple[str, int] | None:
    """The first integer outside int64 in a resolved config tree, with its dotted key: YAML reads
    ``99999999999999999999999`` as a Python int, which torch, numpy and Lightning cannot hold."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        full = f"{prefix}{key}" if isinstance(tree, dict) else f"{prefix[:-1]}[{key}]"
        if isinstance(value, int) and not isinstance(value, bool) and not -INT64_MAX - 1 <= value <= INT64_MAX:
            return full, value
        found = _out_of_int64(value, f"{full}.")
        if found:
            return found
    return None


def _non_finite(tree: Any, prefix: str = "") -> tuple[str, float] | None:
    """The first float that is nan or +-inf in a resolved config tree, with its dotted key."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        full = f"{prefix}{key}" if isinstance(tree, dict) else f"{prefix[:-1]}[{key}]"
        if isinstance(value, float) and not math.isfinite(value):
            return full, value
        found = _non_finite(value, f"{full}.")
        if found:
            return found
    return None


def validate(cfg: DictConfig, *, verb: str | None = "fit") -> None:
    """Range checks that a type cannot express, then the memory estimate of ``verb`` (see ``load_config``).
    Raises ConfigError naming key, value and what is allowed."""
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        raise _explain(exc, "config") from None
    bad = _non_finite(resolved)
    if bad:
        # every float of the schema is a rate, a scale, a size or a threshold: none may be nan or infinite
        raise ConfigError(f"invalid value for '{bad[0]}': {bad[1]!r} (allowed: a finite number)")
    huge = _out_of_int64(resolved)
    if huge:
        raise ConfigError(
            f"invalid value for '{huge[0]}': {huge[1]} is outside the int64 range (allowed: an integer from "
            f"{-INT64_MAX - 1} to {INT64_MAX})"
        )
    for key, ok, allowed in _rules():
        value = OmegaConf.select(cfg, key)
        if not ok(value):
            raise ConfigError(f"invalid value for '{key}': {value!r} (allowed: {allowed})")
    if not cfg.phases.c >= cfg.phases.eps:
        raise ConfigError(
            f"invalid value for 'phases.c': {cfg.phases.c!r} (allowed: c >= phases.eps = {cfg.phases.eps})"
        )
    _validate_features(cfg)
    _validate_population(cfg)
    _validate_split(cfg)
    if cfg.data.kind == "regression" and cfg.data.teacher == "student" and cfg.model.family == "two_layer":
        raise ConfigError(
            "invalid value for 'data.teacher': 'student' (allowed with model.family=two_layer: zero, linear, relu)"
        )
    if cfg.data.kind == "modular" and cfg.data.target == "index" and cfg.model.family not in CROSS_ENTROPY_FAMILIES:
        raise ConfigError(
            f"invalid value for 'data.target': 'index' with model.family={cfg.model.family!r}"
            f" (allowed: onehot; cross-entropy needs model.family in {CROSS_ENTROPY_FAMILIES})"
        )
    _validate_transformer(cfg)
    cross_entropy = cfg.data.kind == "modular" and cfg.data.target == "index"
    if cfg.seeds > 1 and (
        cfg.optim.name != "gd" or cfg.optim.batch_size or cross_entropy or "mixed" in cfg.trainer.precision
    ):
        raise ConfigError(
            f"invalid value for 'seeds': {cfg.seeds} with optim.name={cfg.optim.name!r}, "
            f"optim.batch_size={cfg.optim.batch_size!r}, data.target={cfg.data.target!r}, "
            f"trainer.precision={cfg.trainer.precision!r} (allowed: 1; several seeds are batched by the fused GD "
            "GD loops: full-batch optim.name=gd on the squared loss, in a *-true precision)"
        )
    if verb is not None:
        # before the primality test below, which takes minutes for an absurd modulus
        check_memory(cfg, verb=verb)
    if cfg.data.kind == "modular" and cfg.data.operation in ("div",) and not _is_prime(cfg.data.modulus):
        raise ConfigError(
            f"invalid value for 'data.modulus': {cfg.data.modulus} (allowed: a prime, since operation "
            f"'{cfg.data.operation}' needs the field Z_p)"
        )


def check_step_size(cfg: DictConfig, limit: float) -> None:
    """Refuse eta at or above the GD stability limit 2/(lambda_max(Phi^T Phi)/n + lambda) of the run's data,
    unless optim.allow_unstable; the caller computes ``limit`` once the data exist (experiment.check_stability)."""
    if cfg.optim.allow_unstable or cfg.optim.lr < limit:
        return
    raise ConfigError(
        f"invalid value for 'optim.lr': {cfg.optim.lr!r} (allowed: below the GD stability limit "
        f"2/(lambda_max(Phi^T Phi)/n + lambda) = {limit:.6g} for this data; set optim.allow_unstable=true to run "
        "anyway)"
    )


def _validate_population(cfg: DictConfig) -> None:
    """data.population=exact needs a closed form: Sigma = I/m with theta* (ridge), the moments of
    theory/population.py (random features, checked in _validate_features); the two-layer network has none yet."""
    data, model = cfg.data, cfg.model
    if data.kind != "regression" or data.population != "exact":
        return
    if model.family == "ridge" and data.teacher not in ("zero", "linear", "student"):
        raise ConfigError(
            f"invalid value for 'data.population': 'exact' with model.family='ridge' and data.teacher={data.teacher!r} "
            "(allowed: 'sampled'; the exact population loss of ridge needs a zero, linear or student teacher)"
        )
    if model.family == "two_layer":
        raise ConfigError(
            "invalid value for 'data.population': 'exact' with model.family='two_layer' (allowed: 'sampled'; the "
            "two-layer network's exact loss is theory.population.two_layer_population_loss, not yet measured "
            "during training)"
        )


def _validate_transformer(cfg: DictConfig) -> None:
    """The transformer reads "a op b =" token sequences and predicts the class of a op b: modular data with index
    targets (cross-entropy), and a residual stream that splits evenly into heads."""
    data, model = cfg.data, cfg.model
    if model.family != "transformer":
        return
    if data.kind != "modular":
        raise ConfigError(
            f"invalid value for 'model.family': 'transformer' with data.kind={data.kind!r} (allowed: data.kind=modular;"
            " the transformer reads the tokens 'a op b =')"
        )
    if data.target != "index":
        raise ConfigError(
            f"invalid value for 'data.target': {data.target!r} with model.family='transformer' (allowed: index; the "
            "transformer is trained by cross-entropy on the class of a op b mod p)"
        )
    if model.d_model % model.n_heads:
        raise ConfigError(
            f"invalid value for 'model.n_heads': {model.n_heads} "
            f"(allowed: a divisor of model.d_model = {model.d_model})"
        )


def _validate_split(cfg: DictConfig) -> None:
    """The modular split leaves at least one training and one test pair."""
    data = cfg.data
    if data.kind != "modular":
        return
    pairs = data.modulus * (data.modulus - 1 if data.operation == "div" else data.modulus)
    n_train = int(round(data.train_fraction * pairs))
    if not 1 <= n_train < pairs:
        raise ConfigError(
            f"invalid value for 'data.train_fraction': {data.train_fraction} (gives {n_train} of {pairs} pairs "
            "for training; allowed: at least one training and one test pair)"
        )


def _validate_features(cfg: DictConfig) -> None:
    """Feature map, input distribution and closed-form population: the combinations that are defined."""
    data, model = cfg.data, cfg.model
    if model.ridge_features != "identity" and (model.family != "ridge" or data.kind != "regression"):
        raise ConfigError(
            f"invalid value for 'model.ridge_features': {model.ridge_features!r} with model.family={model.family!r}, "
            f"data.kind={data.kind!r} (allowed: 'identity'; gaussian_projection is ridge regression's feature map)"
        )
    if model.family == "ridge" and data.kind == "regression" and model.ridge_features == "identity":
        d = data.input_dim
        if d is not None and d != model.width:
            raise ConfigError(
                f"invalid value for 'data.input_dim': {d!r} (allowed: null or model.width = {model.width}"
                " with model.ridge_features=identity, phi(x) = x; model.ridge_features=gaussian_projection"
                " allows any d)"
            )
        if data.input_dist != "gaussian":
            raise ConfigError(
                f"invalid value for 'data.input_dist': {data.input_dist!r} with model.ridge_features=identity "
                "(allowed: gaussian; identity ridge features are x ~ N(0, I/m); the input distribution applies to "
                "the networks and to model.ridge_features=gaussian_projection)"
            )
    if data.kind == "modular" and data.input_dist != "gaussian":
        raise ConfigError(
            f"invalid value for 'data.input_dist': {data.input_dist!r} with data.kind='modular' (allowed: gaussian,"
            " the default; modular inputs are one-hot pairs)"
        )
    if data.kind == "regression" and model.family == "random_features" and data.population == "exact":
        allowed = CLOSED_FORM_TEACHERS[model.features]
        if data.teacher not in allowed or (
            model.features == "fourier" and data.teacher == "linear" and data.input_dist == "sphere"
        ):
            raise ConfigError(
                f"invalid value for 'data.population': 'exact' with model.features={model.features!r}, "
                f"data.teacher={data.teacher!r}, data.input_dist={data.input_dist!r} (allowed: 'sampled'; closed "
                f"forms exist for {model.features} features with teachers {', '.join(allowed)}"
                + (", linear on Gaussian inputs only)" if model.features == "fourier" else ")")
            )


def check_memory(cfg: DictConfig, *, verb: str = "fit") -> None:
    """Refuse a run whose estimated memory (``resources.estimate_memory``) exceeds what the machine has,
    naming the largest components, the keys they grow with, and the available memory."""
    need = estimate_memory(cfg, verb=verb)
    try:
        have, source = available_memory()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    total = sum(need.values())
    if total <= have:
        return
    largest = sorted(need.items(), key=lambda kv: -kv[1])[:3]
    parts = "; ".join(f"{name} {gib(v)} ({COMPONENT_KEYS[name]})" for name, v in largest)
    sizes = ["seeds", "data.modulus" if cfg.data.kind == "modular" else "data.n_train", "model.width"]
    sizes += ["data.n_test"] if cfg.data.kind == "regression" and cfg.data.population == "sampled" else []
    sizes += ["trainer.steps_per_call"] if verb == "fit" else []
    now = ", ".join(f"{key}={OmegaConf.select(cfg, key)}" for key in sizes)
    raise ConfigError(
        f"this run needs about {gib(total)} of memory but {gib(have)} is available ({source}); largest: {parts}. "
        f"Allowed: a run that fits: lower {', '.join(sizes)} (now {now})"
    )


def _is_prime(p: int) -> bool:
    return p >= 2 and all(p % k for k in range(2, math.isqrt(p) + 1))


def to_container(cfg: DictConfig) -> dict:
    """The resolved config as plain Python (for phases.json and W&B)."""
    return OmegaConf.to_container(cfg, resolve=True)
