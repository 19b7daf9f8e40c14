"""The figure registry: what each figure of the paper is (its panels, their sweep files under ``sweeps/``, the
swept key and how it is drawn, the ``--quick`` settings, the scaling laws fitted) and the settings shown under a
panel's title. Data only: nothing here reads files or imports the training stack."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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
class BoundSpec:
    """A bound of ``theory.bounds`` (its name, e.g. ``eq6_t_overfit_upper``) checked at every seed of one
    panel (``scaling.check_bound``): x, as in FitSpec, is what the ratio measured / bound is followed along,
    transformed as ``x_label`` says (``log``/``ln``: its logarithm)."""

    bound: str
    panel: str
    x: str = "x"
    x_label: str = "log x"


@dataclass(frozen=True)
class ClaimSpec:
    """One statement of a caption, judged by ``scaling.check_claim`` on one panel's seeds: ``time`` (t1 or
    t2, by the panel's ``times``) ``increases``, ``decreases`` or stays ``flat`` along the swept value."""

    text: str
    panel: str
    time: str
    kind: str


@dataclass(frozen=True)
class Figure:
    name: str
    title: str
    panels: tuple[Panel, ...]
    fits: tuple[FitSpec, ...] = ()
    claim: str = ""  # the paper's statement the figure illustrates
    bounds: tuple[BoundSpec, ...] = ()  # bounds judged as bounds, per seed
    claims: tuple[ClaimSpec, ...] = ()  # the parts of ``claim`` the times can judge


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

_TRANSFORMER_QUICK = {  # groks (by accuracy) in 1,000-2,500 steps, 20-40 s a run on one core
    "data.modulus": 23,
    "data.train_fraction": 0.6,
    "model.d_model": 64,
    "trainer.max_steps": 5000,
    "optim.weight_decay": [1.0, 1.5, 2.0],
}


# Eq. (6) bounds t1 from above by n ln(6 b^2 ||theta0||^2 / eps) / (2 eta lambda+_min(Phi^T Phi)): judged per
# seed, its tightness followed along n / lambda+_min of each seed (not fitted as a slope-1 law)
_EQ6_ON_N = BoundSpec("eq6_t_overfit_upper", "n_train", x="n_over_lambda_min", x_label="log n/lambda+_min")
_RIDGE_BOUNDS = (
    _EQ6_ON_N,
    BoundSpec("eq8_t_overfit_upper", "n_train", x="n_over_lambda_min", x_label="log n/lambda+_min"),
    BoundSpec("eq7_t_generalize_lower", "weight_decay", x_label="log lambda"),
    BoundSpec("eq8_t_generalize_lower", "weight_decay", x_label="log lambda"),
    # Sec. 4.2: t1 <= c1 ln nu^2 + a1 and t2 >= c2 ln nu^2 + a2, read off Eq. (8)
    BoundSpec("eq8_t_overfit_upper", "init_scale", x_label="ln nu^2"),
    BoundSpec("eq8_t_generalize_lower", "init_scale", x_label="ln nu^2"),
)


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
            ),
            claim="t2 ~ 1/lambda while t1 does not depend on lambda; smaller n speeds up t1; m has little effect; "
            "t1 and t2 grow like ln nu^2",
            bounds=_RIDGE_BOUNDS,
            claims=(
                ClaimSpec("smaller lambda delays t2", "weight_decay", "t2", "decreases"),
                ClaimSpec("smaller n speeds up t1", "n_train", "t1", "increases"),
                ClaimSpec("m has little effect on t1", "width", "t1", "flat"),
                ClaimSpec("m has little effect on t2", "width", "t2", "flat"),
                ClaimSpec("t1 grows with nu^2", "init_scale", "t1", "increases"),
                ClaimSpec("t2 grows with nu^2", "init_scale", "t2", "increases"),
            ),
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
            ),
            claim="smaller lambda delays generalization; smaller n speeds up training; width and init scale "
            "do not prolong grokking much",
            # the ReLU teacher is not realizable: Eq. (6) is not claimed here, its numbers are still given
            bounds=(_EQ6_ON_N,),
            claims=(
                ClaimSpec("smaller lambda delays generalization", "weight_decay", "t2", "decreases"),
                ClaimSpec("smaller n speeds up training", "n_train", "t1", "increases"),
                ClaimSpec("a wider student does not significantly prolong grokking", "width", "t2", "flat"),
                ClaimSpec("a larger init scale does not significantly prolong grokking", "init_scale", "t2", "flat"),
            ),
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
                # the small-decay regime, where the ridge mechanism (decay of what the data cannot see) could act
                FitSpec("t2_vs_weight_decay", "weight_decay", max_x=0.7),
                FitSpec("t1_vs_weight_decay", "weight_decay"),
                FitSpec("t1_vs_log_init_scale", "init_scale"),
                FitSpec("t2_vs_log_init_scale", "init_scale"),
            ),
            claim="the dependencies of t1 and t2 on the hyperparameters match those of Fig. 2 qualitatively",
            claims=(
                ClaimSpec("as in Fig. 2: smaller lambda delays t2", "weight_decay", "t2", "decreases"),
                ClaimSpec("as in Fig. 2: smaller n speeds up t1", "n_train", "t1", "increases"),
                ClaimSpec("as in Fig. 2: m has little effect on t1", "width", "t1", "flat"),
                ClaimSpec("as in Fig. 2: m has little effect on t2", "width", "t2", "flat"),
                ClaimSpec("as in Fig. 2: t1 grows with nu^2", "init_scale", "t1", "increases"),
                ClaimSpec("as in Fig. 2: t2 grows with nu^2", "init_scale", "t2", "increases"),
            ),
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
            claims=(ClaimSpec("the noise level barely changes the grokking time", "noise_levels", "t2", "flat"),),
        ),
        Figure(
            "fig7",
            "Fig. 7: random Fourier features, a fresh Fourier-feature teacher (App. B)",
            (
                Panel(
                    "fourier",
                    "fig7_fourier.yaml",
                    "random Fourier features",
                    draw="ensemble",
                    # d and n as at full scale: with fewer points the fresh Fourier teacher's plateau tops c
                    quick={"model.width": 1000, "optim.weight_decay": 1.0e-3, "trainer.max_steps": 6000},
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
                # the small-decay regime, where the ridge mechanism (decay of what the data cannot see) could act
                FitSpec("t2_vs_weight_decay", "weight_decay", max_x=0.7),
                FitSpec("t1_vs_weight_decay", "weight_decay"),
                FitSpec("t1_vs_log_init_scale", "init_scale"),
                FitSpec("t2_vs_log_init_scale", "init_scale"),
            ),
            claim="more weight decay shortens the delay between fitting and generalizing (Nanda et al.; "
            "the paper's t2 ~ 1/lambda is for ridge regression)",
            claims=(ClaimSpec("more weight decay brings t2 forward", "weight_decay", "t2", "decreases"),),
        ),
        Figure(
            "modular_transformer",
            r"Modular addition $a+b$ mod $p$, one-layer transformer, AdamW: times by accuracy (not in the paper)",
            (
                Panel(
                    "accuracy",
                    "modular_transformer_weight_decay.yaml",
                    r"train and test accuracy, $\lambda$ = 1",
                    draw="accuracy",
                    x_key="optim.weight_decay",
                    quick=_TRANSFORMER_QUICK,
                    quick_seeds=1,
                    select=1.0,
                    times="accuracy",
                ),
                Panel(
                    "weight_decay",
                    "modular_transformer_weight_decay.yaml",
                    r"decoupled weight decay $\lambda$",
                    x_key="optim.weight_decay",
                    x_symbol=LAMBDA,
                    quick=_TRANSFORMER_QUICK,
                    quick_seeds=1,
                    times="accuracy",
                ),
            ),
            fits=(FitSpec("t2_vs_weight_decay", "weight_decay"),),
            claim="the transformer memorizes the training table within a few hundred steps and generalizes "
            "thousands of steps later; more weight decay brings t2 forward (Power et al.; Nanda et al.)",
            claims=(ClaimSpec("more weight decay brings t2 forward", "weight_decay", "t2", "decreases"),),
        ),
    )
}

SETTING_KEYS = (  # (config key, symbol) shown under a panel's title when every run of the panel shares it
    ("data.n_train", "n"),
    ("data.input_dim", "d"),
    ("model.width", "m"),
    ("optim.weight_decay", r"\lambda"),
    ("model.init_scale", r"\nu^2"),
    ("optim.lr", r"\eta"),
)
MODULAR_KEYS = (("data.modulus", "p"), ("data.train_fraction", "train fraction"))
# the transformer's size, shown instead of m and nu^2 (which it does not use)
TRANSFORMER_KEYS = (("model.n_layers", "layers"), ("model.d_model", "d_model"), ("model.n_heads", "heads"))
NOISE_KEYS = (("data.label_noise_std", "noise std"),)
QUICK_SUFFIX = "-quick"  # of a --quick panel's directory, sweep name and W&B group
# where a network teacher is learned (Figs 3, 7) the title says from what inputs and how large the teacher is
INPUT_LAWS = {
    "gaussian": r"$x\sim N(0, I_d)$",
    "gaussian_scaled": r"$x\sim N(0, I_d/d)$",
    "sphere": r"$x\sim$ unif(sphere)",
}
TEACHER_NORM = ("data.teacher_norm", r"\|w^*\|")
