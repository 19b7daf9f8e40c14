"""The checks a type cannot express: ranges of numbers, combinations of keys, the machine's memory.

OmegaConf has checked every type and every closed set of values (the Enums of schema.py) by the time these run.
Each refusal is a ConfigError naming the key, its value and what is allowed.
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lightning_grok.config.schema import ConfigError, Family, FeatureMap, Teacher, choices, explain, one_of
from lightning_grok.plan import RunPlan
from lightning_grok.primes import is_prime
from lightning_grok.resources import COMPONENT_KEYS, available_memory, estimate_memory, gib

# (random feature map, teacher) pairs whose population loss has a closed form (theory/population.py)
CLOSED_FORM_TEACHERS = {
    FeatureMap.relu: (Teacher.zero, Teacher.linear, Teacher.relu, Teacher.student),
    FeatureMap.fourier: (Teacher.zero, Teacher.linear, Teacher.fourier, Teacher.student),
}
# teachers whose population loss against the two-layer ReLU network has a closed form (arc-cosine kernel)
TWO_LAYER_CLOSED_FORM_TEACHERS = (Teacher.zero, Teacher.linear, Teacher.relu)
CROSS_ENTROPY_FAMILIES = (Family.two_layer, Family.transformer)  # the networks that train on class indices
DEVICES_ALLOWED = "auto, -1 (every device), a count >= 1 such as 2, or device indices such as 0,1"
INT64_MAX = 2**63 - 1  # torch and numpy hold integers as int64: a larger one overflows (or runs forever)


def _rules() -> list[tuple[str, Any, str]]:
    """(dotted key, test of its value, what is allowed) for every key with a range."""
    pos = (lambda v: v > 0, "a number > 0")
    nonneg = (lambda v: v >= 0, "a number >= 0")
    atleast1 = (lambda v: v >= 1, "an integer >= 1")
    return [
        ("seeds", *atleast1),
        ("data.n_train", *atleast1),
        ("data.input_dim", lambda v: v is None or v >= 1, "null or an integer >= 1"),
        ("data.teacher_norm", *nonneg),
        ("data.label_noise_std", *nonneg),
        ("data.n_test", *atleast1),
        ("data.n_sigma_samples", *atleast1),
        ("data.modulus", lambda v: v >= 2, "an integer >= 2"),
        ("data.train_fraction", lambda v: 0 < v < 1, "a number strictly between 0 and 1"),
        ("model.width", *atleast1),
        ("model.init_scale", *pos),
        ("model.fourier_variance", *pos),
        ("model.n_layers", *atleast1),
        ("model.d_model", *atleast1),
        ("model.n_heads", *atleast1),
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
        ("phases.log_points", *atleast1),
        ("trainer.max_steps", *atleast1),
        ("trainer.steps_per_call", *nonneg),
        ("trainer.num_nodes", *atleast1),
        ("trainer.devices", devices_form_ok, DEVICES_ALLOWED),
        ("trainer.checkpoint_every", *nonneg),
        ("trainer.checkpoint_minutes", *nonneg),
        ("trainer.eval_every", *nonneg),
        ("trainer.threads", *nonneg),
    ]


def allowed() -> dict[str, str]:
    """Dotted key -> what it allows, for the help: the Enum's values for a closed set, else its range rule."""
    out = {key: one_of(choice) for key, choice in choices().items()}
    out.update({key: text for key, _, text in _rules()})
    return out


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
        raise explain(exc, "config") from None
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
    for key, ok, allowed_text in _rules():
        value = OmegaConf.select(cfg, key)
        if not ok(value):
            raise ConfigError(f"invalid value for '{key}': {value!r} (allowed: {allowed_text})")
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
    RunPlan.from_config(cfg)  # refuses seeds > 1 without a fused GD loop (the rule is the plan's)
    if verb is not None:
        # before the primality test below, which takes minutes for an absurd modulus
        check_memory(cfg, verb=verb)
    if cfg.data.kind == "modular" and cfg.data.operation in ("div",) and not is_prime(cfg.data.modulus):
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
    theory/population.py (random features, checked in _validate_features), the arc-cosine kernel for the two-layer
    network with a zero, linear or ReLU teacher (theory/two_layer_population.py). Optimizers without a fused GD
    loop (sgd, adamw, mini-batches, mixed precision) measure the drawn test set instead, as for random features."""
    data, model = cfg.data, cfg.model
    if data.kind != "regression" or data.population != "exact":
        return
    if model.family == "ridge" and data.teacher not in ("zero", "linear", "student"):
        raise ConfigError(
            f"invalid value for 'data.population': 'exact' with model.family='ridge' and data.teacher={data.teacher!r} "
            "(allowed: 'sampled'; the exact population loss of ridge needs a zero, linear or student teacher)"
        )
    if model.family == "two_layer" and data.teacher not in TWO_LAYER_CLOSED_FORM_TEACHERS:
        raise ConfigError(
            f"invalid value for 'data.population': 'exact' with model.family='two_layer' and "
            f"data.teacher={data.teacher!r} (allowed: 'sampled'; the two-layer network's closed-form population "
            f"loss (arc-cosine kernel) needs a teacher in {TWO_LAYER_CLOSED_FORM_TEACHERS})"
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
