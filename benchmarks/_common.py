"""Shared by the benchmark scripts: the ridge config, one run's tensors, and lightning_grok's fused GD loop
driven directly (no Lightning). Not a benchmark itself."""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from lightning_grok.config import load_config
from lightning_grok.experiment import Built, build
from lightning_grok.gd_loops import EvalSpec, LinearGDLoop

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "ridge.yaml"


def quiet() -> None:
    """Lightning's start-up chatter and hints that do not apply to a CPU benchmark."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for pattern in (".*srun.*", ".*LeafSpec.*", ".*does not have many workers.*", ".*GPU available.*"):
        warnings.filterwarnings("ignore", message=pattern)


def ridge_cfg(*overrides: str) -> DictConfig:
    """configs/ridge.yaml on the CPU, W&B disabled, no progress bar, plus ``overrides``."""
    base = ["trainer.accelerator=cpu", "trainer.devices=1", "trainer.progress_bar=false", "wandb.mode=disabled"]
    return load_config(CONFIG, [*base, *overrides])


@dataclass
class Problem:
    """One run's tensors (float64, CPU) and hyperparameters, exactly as the Lightning path trains on them."""

    phi: torch.Tensor  # (n, m) training features
    y: torch.Tensor  # (n, 1)
    theta0: torch.Tensor  # (m, 1)
    theta_star: torch.Tensor  # (m, 1)
    sigma_scale: float  # Sigma = sigma_scale * I (= 1/m for the ridge features)
    lr: float
    weight_decay: float
    auto_k: int  # what trainer.steps_per_call=0 resolves to

    @property
    def n(self) -> int:
        return self.phi.shape[0]

    @property
    def m(self) -> int:
        return self.phi.shape[1]


def load_problem(*overrides: str) -> tuple[Problem, Built]:
    """``build(cfg)`` of the ridge config; its tensors as the hand-written loops see them."""
    cfg = ridge_cfg("trainer.max_steps=1000000000", "trainer.steps_per_call=0", *overrides)
    built = build(cfg)
    model = built.model
    t = built.datamodule.tensors
    with torch.no_grad():
        phi = model.features(t.x_train).to(torch.float64).contiguous()
    if not torch.equal(phi, torch.from_numpy(built.problem.phi)):
        raise AssertionError("Phi differs from the theory's")
    if t.sigma_scale != 1.0 / phi.shape[1]:
        raise AssertionError("the ridge features should have Sigma = I/m exactly")
    problem = Problem(
        phi=phi,
        y=t.y_train.to(torch.float64).clone(),
        theta0=model.theta_init.detach().to(torch.float64).clone(),
        theta_star=t.theta_star.to(torch.float64).clone(),
        sigma_scale=float(t.sigma_scale),
        lr=float(cfg.optim.lr),
        weight_decay=float(cfg.optim.weight_decay),
        auto_k=int(built.module.steps_per_call),
    )
    return problem, built


class FusedGD:
    """lightning_grok's ``LinearGDLoop`` for one run, called directly in a Python loop (no Lightning).

    Works with the single-run kernel (Phi of shape (n, m)) and with a kernel batched over ensemble members
    (Phi of shape (B, n, m), here B = 1): whichever the installed kernel accepts.
    """

    def __init__(self, p: Problem, per_call: int):
        self.per_call = per_call
        ev = EvalSpec(theta_star=p.theta_star, sigma_scale=p.sigma_scale)
        errors = []
        for lead in ((), (1,)):
            try:
                phi, y = self._shape(p.phi, lead), self._shape(p.y, lead)
                kernel = LinearGDLoop(phi, y, p.lr, p.weight_decay, p.n, ev, per_call)
                kernel.run(self._shape(p.theta0, lead).clone(), 0, 1)
            except (IndexError, RuntimeError, ValueError) as exc:
                errors.append(exc)
                continue
            self.kernel, self.lead = kernel, lead
            return
        raise RuntimeError(f"LinearGDLoop accepts neither the (n, m) nor the (B, n, m) layout: {errors}")

    @staticmethod
    def _shape(t: torch.Tensor, lead: tuple[int, ...]) -> torch.Tensor:
        return t.reshape(*lead, *t.shape).contiguous()

    @property
    def layout(self) -> str:
        return "batched (B=1)" if self.lead else "single run"

    def start(self, theta0: torch.Tensor) -> torch.Tensor:
        """A fresh iterate in the kernel's layout."""
        return self._shape(theta0, self.lead).clone()

    def run(self, theta: torch.Tensor, start: int, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``steps`` GD steps (at most ``per_call``), theta updated in place; per-step train and population loss."""
        chunk = self.kernel.run(theta, start, steps)
        return chunk.train_loss.reshape(steps), chunk.test_loss.reshape(steps)

    def iterate(self, theta: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``steps`` GD steps in calls of ``per_call``; the last records (of theta_{steps-1})."""
        done, last = 0, None
        while done < steps:
            k = min(self.per_call, steps - done)
            last = self.run(theta, done, k)
            done += k
        return last[0][-1], last[1][-1]


@contextlib.contextmanager
def timed(owner: object, name: str, sink: list[float], keep: Callable[[tuple], None] | None = None) -> Iterator[None]:
    """Replace ``owner.name`` by a wrapper that appends each call's wall time to ``sink``
    (and hands the call's positional arguments to ``keep``)."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            sink.append(time.perf_counter() - start)
            if keep is not None:
                keep(args)

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        setattr(owner, name, original)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)
