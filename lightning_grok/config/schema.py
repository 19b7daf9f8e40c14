"""The run configuration's schema: OmegaConf structured-config dataclasses, one Enum per closed set of values.

Each key is declared once, with its type, default and one line of meaning (``field(metadata={"help": ...})``);
``lightning-grok fit --help`` prints them (confighelp.py). Each closed set of values is an Enum (``Family``,
``GDLoop``...), so OmegaConf itself refuses any other value, from a YAML file or a ``key=value`` override alike,
and the help lists the members. A member is its value: a ``str`` that compares, hashes, prints and formats as
that string (``cfg.model.family == "ridge"``); ``load.to_container`` writes it as the plain string.

Hyperparameters keep the paper's names (arXiv:2601.19791, Sec. 2): ``optim.lr`` is eta,
``optim.weight_decay`` is lambda, ``data.n_train`` is n, ``model.width`` is m, ``model.init_scale``
is nu^2, ``data.input_dim`` is d, ``phases.eps`` is epsilon and ``phases.c`` is c. All times are
counted in GD steps, never in epochs.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """Bad user input: the message names the key, the value and what is allowed. CLI exit status 2."""


class Choice(str, Enum):
    """One value of a closed set, named by the value itself (``auto()`` gives the member's name), so that
    OmegaConf, which reads Enum fields by member name, accepts exactly the strings a YAML file writes. It is a
    ``str`` that compares, hashes, prints, formats and reprs as that string, as the plain strings did before."""

    @staticmethod
    def _generate_next_value_(name: str, start: int, count: int, last_values: list) -> str:
        return name

    @classmethod
    def _missing_(cls, value: object) -> Choice | None:
        # YAML reads `precision: 64` as the integer 64, which OmegaConf looks up by value: the member "64"
        if isinstance(value, int) and not isinstance(value, bool):
            return cls._value2member_map_.get(str(value))  # type: ignore[return-value]
        return None

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        return str.__format__(str(self), spec)

    def __repr__(self) -> str:
        return repr(str(self))

    def __hash__(self) -> int:
        return str.__hash__(self)


class DataKind(Choice):
    regression = auto()
    modular = auto()


class Teacher(Choice):
    zero = auto()
    linear = auto()
    relu = auto()
    fourier = auto()
    student = auto()


class Population(Choice):
    exact = auto()
    sampled = auto()


class Target(Choice):
    onehot = auto()
    index = auto()


class Operation(Choice):
    add = auto()
    sub = auto()
    mul = auto()
    div = auto()
    x2_plus_y2 = auto()
    x2_plus_xy_plus_y2 = auto()


class Family(Choice):
    ridge = auto()
    random_features = auto()
    two_layer = auto()
    transformer = auto()


class FeatureMap(Choice):
    relu = auto()
    fourier = auto()


class RidgeFeatures(Choice):
    identity = auto()
    gaussian_projection = auto()


class InputDist(Choice):
    gaussian = auto()
    gaussian_scaled = auto()
    sphere = auto()


class Optimizer(Choice):
    gd = auto()
    sgd = auto()
    adamw = auto()


class GDLoop(Choice):
    auto = "auto"  # written out: in this class body the name `auto` is the member from here on
    parameter = "parameter"
    rowspace = "rowspace"


class Accelerator(Choice):
    """Lightning's accelerator names; whether the hardware is there is checked where the run is prepared
    (trainer_checks.py), since asking needs torch and Lightning."""

    auto = "auto"  # written out: in this class body the name `auto` is the member from here on
    cpu = "cpu"
    gpu = "gpu"
    cuda = "cuda"
    mps = "mps"
    tpu = "tpu"


class WandbMode(Choice):
    auto = "auto"  # written out: in this class body the name `auto` is the member from here on
    online = "online"
    offline = "offline"
    disabled = "disabled"


# Lightning's precision names are not identifiers ("64-true"): the functional form names each member by its value
Precision = Choice(
    "Precision",
    [(v, v) for v in ("64-true", "64", "32-true", "32", "bf16-mixed", "16-mixed")],
    module=__name__,
    qualname="Precision",
)


def values(choice: type[Choice]) -> tuple[str, ...]:
    """The allowed values of a closed set, as plain strings in declaration order."""
    return tuple(m.value for m in choice)


DATA_KINDS = values(DataKind)
TEACHERS = values(Teacher)
POPULATIONS = values(Population)
TARGETS = values(Target)
OPERATIONS = values(Operation)
FAMILIES = values(Family)
FEATURE_MAPS = values(FeatureMap)
RIDGE_FEATURES = values(RidgeFeatures)
INPUT_DISTS = values(InputDist)
OPTIMIZERS = values(Optimizer)
PRECISIONS = values(Precision)
WANDB_MODES = values(WandbMode)
GD_LOOPS = values(GDLoop)
ACCELERATORS = values(Accelerator)


def doc(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = dataclasses.MISSING) -> Any:
    """A schema field: its default (or ``factory`` for a list) and its one line of meaning, which ``--help``
    prints beside the type, the default and the allowed values."""
    return field(default=default, default_factory=factory, metadata={"help": help})


@dataclass
class DataConfig:
    kind: DataKind = doc(DataKind.regression, "the task: regression on a teacher, or the modular arithmetic table")
    n_train: int = doc(100, "n, training points (regression)")
    input_dim: int | None = doc(None, "d; ridge uses the identity feature map, so null means d = m")
    teacher: Teacher = doc(Teacher.linear, "the function that labels the regression inputs")
    teacher_norm: float = doc(1.0, "||theta*|| (linear, student) or ||w*|| (relu)")
    label_noise_std: float = doc(0.0, "std of Gaussian noise on training labels only")
    population: Population = doc(
        Population.exact, "the population loss: exact is the closed form where known; sampled is a drawn test set"
    )
    n_test: int = doc(2000, "test points when the population loss is sampled")
    n_sigma_samples: int = doc(4000, "fresh inputs used to estimate lambda_min(Sigma) when it is not known")
    input_dist: InputDist = doc(
        InputDist.gaussian,
        "network inputs (and ridge's gaussian_projection latents): gaussian N(0, I_d), gaussian_scaled N(0, I_d/d),"
        " sphere uniform on the unit sphere; ridge's identity features are always N(0, I/m)",
    )
    modulus: int = doc(97, "p, of the modular arithmetic table a op b mod p")
    operation: Operation = doc(Operation.add, "op of the modular arithmetic table a op b mod p")
    train_fraction: float = doc(0.3, "share of the p*p table used for training (seeded split)")
    target: Target = doc(Target.onehot, "modular labels: onehot (squared loss) or the class index (cross-entropy)")


@dataclass
class ModelConfig:
    family: Family = doc(Family.ridge, "the model; the transformer learns modular arithmetic, by cross-entropy")
    width: int = doc(1000, "m: parameters (ridge) or hidden units (networks); unused by the transformer")
    init_scale: float = doc(1.0, "nu^2: theta0 variance (ridge); hidden-weight scale (networks)")
    features: FeatureMap = doc(FeatureMap.relu, "random_features only: the feature map")
    fourier_variance: float = doc(1.0, "sigma^2 of the Fourier frequencies W ~ N(0, sigma^2 I)")
    ridge_features: RidgeFeatures = doc(
        RidgeFeatures.identity,
        "ridge only: identity phi(x) = x ~ N(0, I/m), d = m; gaussian_projection phi(z) = W z / sqrt(d), any d",
    )
    # transformer only (decoder-only, on the tokens "a op b ="; models/transformer.py)
    n_layers: int = doc(1, "transformer blocks (causal self-attention + MLP of 4 d_model units)")
    d_model: int = doc(128, "transformer: width of the residual stream and the embeddings")
    n_heads: int = doc(4, "transformer: attention heads (d_model must be a multiple)")


@dataclass
class OptimConfig:
    name: Optimizer = doc(
        Optimizer.gd, "gd is full-batch GD, Eq. (2); sgd has momentum; adamw decays the weights decoupled"
    )
    lr: float = doc(1.0, "eta")
    weight_decay: float = doc(1e-4, "lambda")
    momentum: float = doc(0.9, "sgd only")
    beta1: float = doc(0.9, "adamw only")
    beta2: float = doc(0.98, "adamw only")
    batch_size: int | None = doc(None, "null = full batch (the paper's setting)")
    allow_unstable: bool = doc(False, "run even when lr exceeds the GD stability limit")


@dataclass
class PhasesConfig:
    eps: float = doc(0.01, "epsilon: t1 = last step with training loss >= eps")
    c: float = doc(0.01, "c >= eps: t2 = first step with population loss <= c")
    acc_threshold: float = doc(0.99, "tau for the accuracy-based t1, t2 (classification)")
    delta: float = doc(0.05, "failure probability used in the explicit hypothesis checks (A.9)")
    stop_margin: float | None = doc(None, "end the run this fraction of t2 after both are found; null = never")
    log_points: int = doc(
        400,
        "about this many logged steps, geometric in GD steps (formerly wandb.log_points): their curves go to every "
        "logger and curves.json, and the GD loops evaluate the test side there",
    )


@dataclass
class TrainerConfig:
    max_steps: int = doc(50_000, "GD steps")
    steps_per_call: int = doc(0, "GD steps per Lightning training_step; 0 = automatic")
    gd_loop: GDLoop = doc(
        GDLoop.auto,
        "linear models' GD loop (formerly trainer.kernel): parameter space O(nm)/step, row space O(n)/step "
        "(n < m), auto picks rowspace if n < m",
    )
    accelerator: Accelerator = doc(
        Accelerator.auto, "gpu is cuda; checked against this machine before the run directory is written"
    )
    devices: str = doc("auto", "GPUs (or CPU processes) per node")
    num_nodes: int = doc(1, "nodes (each with trainer.devices)")
    strategy: str = doc("auto", "Lightning's strategy name: auto, ddp, ... (its StrategyRegistry)")
    precision: Precision = doc(Precision["64-true"], "Lightning's precision of the run")  # type: ignore[valid-type]
    progress_bar: bool = doc(True, "show Lightning's progress bar")
    checkpoint_every: int = doc(0, "GD steps between checkpoints; 0 = only at the end (and on SLURM signal)")
    checkpoint_minutes: float = doc(5.0, "wall-clock minutes between checkpoints: what a kill -9 can cost; 0 = off")
    eval_every: int = doc(
        0, "test-set population loss every s-th GD step (t1, t2 stay exact); 0 = auto, 1 = every step"
    )
    threads: int = doc(0, "torch intra-op threads; 0 = usable CPUs / lightning_grok runs sharing them (threads.py)")


@dataclass
class WandbConfig:
    mode: WandbMode = doc(WandbMode.auto, "auto is online if logged in, else offline")
    project: str = doc("lightning_grok", "W&B project")
    entity: str | None = doc(None, "W&B entity (user or team); null: the logged-in default")
    group: str | None = doc(
        None,
        "W&B group (every run's job type is fit); null: the sweep name under lightning-grok sweep (the offline agent"
        " passes it), sweep-<id> under wandb agent, else WANDB_RUN_GROUP",
    )
    name: str | None = doc(None, "null: family, the keys set on the command line and the seed, e.g. ridge-wd1e-4-s3")
    tags: list[str] = doc(help="added to the automatic ones: family, data kind, 'ensemble' for seeds > 1", factory=list)
    notes: str | None = doc(None, "the W&B run's notes (its description in the UI)")
    run_id: str | None = doc(None, "reuse to resume the same W&B run (requeue)")


@dataclass
class RunConfig:
    seed: int = doc(0, "the seed of the data, the initialization and the split")
    seeds: int = doc(1, "K > 1: K independent runs (seeds seed..seed+K-1) batched in one process")
    output_dir: str | None = doc(None, "null: runs/<config name>-<time>")
    data: DataConfig = doc(help="the data set", factory=DataConfig)
    model: ModelConfig = doc(help="the model", factory=ModelConfig)
    optim: OptimConfig = doc(help="the optimizer", factory=OptimConfig)
    phases: PhasesConfig = doc(help="the phase transitions t1, t2", factory=PhasesConfig)
    trainer: TrainerConfig = doc(help="the Lightning trainer and the GD loop", factory=TrainerConfig)
    wandb: WandbConfig = doc(help="Weights & Biases", factory=WandbConfig)


# old key -> its new name: accepted under the old name in YAML files, overrides and sweep files, with one
# deprecation line (load.py); run identities keep hashing the old name (rundir.result_keys), so run
# directories and checkpoints written before the rename still resume. wandb.log_points was never a W&B setting:
# it decides the logged steps for every logger, curves.json and the GD loops' test side
RENAMED_KEYS = {"trainer.kernel": "trainer.gd_loop", "wandb.log_points": "phases.log_points"}


def schema() -> DictConfig:
    """The defaults as a struct DictConfig: every key typed, no key may be added."""
    cfg = OmegaConf.structured(RunConfig)
    OmegaConf.set_struct(cfg, True)
    return cfg


def fields() -> dict[str, tuple[Any, dataclasses.Field]]:
    """Every leaf key of ``RunConfig``, dotted as overrides write it (``optim.lr``), in schema order: its type
    and its dataclass field (default and ``metadata["help"]``)."""
    out: dict[str, tuple[Any, dataclasses.Field]] = {}

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            if dataclasses.is_dataclass(hint):
                walk(hint, f"{prefix}{f.name}.")
            else:
                out[f"{prefix}{f.name}"] = (hint, f)

    walk(RunConfig, "")
    return out


def choices() -> dict[str, type[Choice]]:
    """Dotted key -> its Enum, for every key that holds one of a closed set of values."""
    return {k: tp for k, (tp, _) in fields().items() if isinstance(tp, type) and issubclass(tp, Choice)}


def schema_keys() -> list[str]:
    """Every leaf key of the schema, dotted as overrides write it (``optim.lr``), in schema order."""
    return list(fields())


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


def one_of(choice: type[Choice]) -> str:
    """The allowed values of a closed set as the messages and the help write them: ``one of ('gd', 'sgd')``."""
    return f"one of {values(choice)}"


def explain(exc: OmegaConfBaseException, source: str) -> ConfigError:
    """An OmegaConf error as a ConfigError naming ``source`` (a file, ``override``), the key and what is allowed:
    the keys of its group for an unknown key, the Enum's values for a value outside a closed set."""
    key = getattr(exc, "full_key", None) or getattr(exc, "key", None)
    value = getattr(exc, "value", None)
    msg = str(exc).splitlines()[0]
    if key and "Key '" in msg and "not in" in msg:
        parent = key.rsplit(".", 1)[0] if "." in str(key) else ""
        allowed = sorted(OmegaConf.select(schema(), parent).keys()) if parent else sorted(schema().keys())
        close = suggest_keys(str(key))
        hint = f"did you mean {' or '.join(close)}?; " if close else ""
        return ConfigError(f"{source}: unknown key '{key}' ({hint}allowed keys here: {', '.join(allowed)})")
    if "nterpolation" in type(exc).__name__ or "interpolation" in msg:
        return ConfigError(f"{source}: key '{key}' cannot be resolved: {msg}")
    if not key:
        return ConfigError(f"{source}: {msg}")
    choice = choices().get(str(key))
    if choice is not None:
        return ConfigError(f"invalid value for '{key}': {value!r} (allowed: {one_of(choice)})")
    return ConfigError(f"{source}: key '{key}' has invalid value {value!r}: {msg}")
