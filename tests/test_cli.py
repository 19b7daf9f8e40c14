"""Bad input stops before any training with one clear message and exit status 2; nothing is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONFIGS, REPO


def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="disabled")
    return subprocess.run(
        [sys.executable, "-m", "lightning_grok", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


RIDGE = str(CONFIGS / "ridge.yaml")


@pytest.mark.parametrize(
    "override, words",
    [
        ("optim.lerning_rate=1", ["unknown key", "optim.lerning_rate", "weight_decay"]),
        ("optim.lr=fast", ["optim.lr", "fast"]),
        ("optim.weight_decay=-1e-4", ["optim.weight_decay", "-0.0001", ">= 0"]),
        ("optim.lr=0", ["optim.lr", "0", "> 0"]),
        ("data.n_train=0", ["data.n_train", "0", ">= 1"]),
        ("model.width=0", ["model.width", "0", ">= 1"]),
        ("phases.eps=0", ["phases.eps", "0", "> 0"]),
        ("phases.c=0.001", ["phases.c", "0.001", "c >= phases.eps"]),
        ("optim.name=lbfgs", ["optim.name", "lbfgs", "gd"]),
        ("noequals", ["noequals", "key=value"]),
    ],
)
def test_bad_override_exits_2_and_writes_nothing(tmp_path, override, words):
    out = tmp_path / "run"
    proc = _cli("fit", RIDGE, override, f"output_dir={out}")
    assert proc.returncode == 2, proc.stderr
    msg = proc.stderr.strip().splitlines()[-1]
    for w in words:
        assert w in msg, (w, msg)
    assert not out.exists()


def test_missing_config_file(tmp_path):
    proc = _cli("fit", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2 and "config file not found" in proc.stderr and "nope.yaml" in proc.stderr


def test_malformed_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: [1\n")
    proc = _cli("fit", str(bad), f"output_dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and "cannot parse config file" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_wrong_type_in_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  n_train: many\n")
    proc = _cli("fit", str(bad))
    assert proc.returncode == 2 and "data.n_train" in proc.stderr and "many" in proc.stderr


def test_learning_rate_above_the_stability_limit_is_refused(tmp_path):
    out = tmp_path / "run"
    proc = _cli("fit", RIDGE, "optim.lr=150", f"output_dir={out}")
    assert proc.returncode == 2
    assert "optim.lr" in proc.stderr and "stability limit" in proc.stderr
    limit = float(proc.stderr.split("lambda) = ")[1].split()[0])
    assert 100 < limit < 150  # 2/(lambda_max/n + lambda) with lambda_max(Phi^T Phi) ~ (1 + sqrt(n/m))^2
    assert not out.exists()


def test_a_diverging_run_stops_early_and_says_so(tmp_path):
    out = tmp_path / "run"
    proc = _cli(
        "fit",
        RIDGE,
        "optim.lr=150",
        "optim.allow_unstable=true",
        "trainer.max_steps=100000",
        "trainer.progress_bar=false",
        f"output_dir={out}",
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    res = json.loads((out / "phases.json").read_text())
    assert res["status"] == "diverged" and res["diverged_at"] is not None
    assert res["steps_run"] < 100000


def test_theory_verb_prints_predictions_without_training(tmp_path):
    proc = _cli("theory", RIDGE, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["exact"]["t_generalize"] > out["exact"]["t_overfit"] > 0
    assert {"eq6_t_overfit_upper", "eq7_t_generalize_lower", "eq8_t_overfit_upper", "eq8_t_generalize_lower"} <= set(
        out["bounds"]
    )
    assert not any(tmp_path.iterdir())  # nothing written


def _leaf_keys(node, prefix=""):
    from omegaconf import DictConfig

    for key, value in node.items_ex(resolve=False) if isinstance(node, DictConfig) else node.items():
        if isinstance(value, DictConfig):
            yield from _leaf_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_fit_help_names_every_key_of_the_schema_with_its_default():
    from omegaconf import OmegaConf

    from lightning_grok.config import RunConfig

    proc = _cli("fit", "--help")
    assert proc.returncode == 0
    keys = list(_leaf_keys(OmegaConf.structured(RunConfig)))
    assert len(keys) > 40
    lines = proc.stdout.splitlines()
    for key in keys:
        (line,) = [ln for ln in lines if ln.split()[:1] == [key]]
        assert "default" in line, line
    assert "allowed: one of ('gd', 'sgd', 'adamw')" in proc.stdout  # allowed values come from validation
    assert "eta" in proc.stdout and "lambda" in proc.stdout  # the meanings, in the paper's symbols


def test_print_config_loads_back_as_the_same_config(tmp_path):
    from omegaconf import OmegaConf

    from lightning_grok.config import load_config

    args = ("optim.weight_decay=1e-5", "seed=3", "model.width=500")
    proc = _cli("fit", RIDGE, *args, "--print-config", f"output_dir={tmp_path / 'never'}")
    assert proc.returncode == 0, proc.stderr
    printed = tmp_path / "printed.yaml"
    printed.write_text(proc.stdout)
    again = load_config(printed)
    assert OmegaConf.to_container(again) == OmegaConf.to_container(
        load_config(RIDGE, [*args, f"output_dir={tmp_path / 'never'}"])
    )
    assert not (tmp_path / "never").exists()  # printing trains nothing


def test_a_default_run_prints_only_its_own_lines_and_its_directory(tmp_path):
    """make demo's command: no third-party warnings, tips or hints; the run directory is named."""
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["HOME"] = str(tmp_path)  # no ~/.netrc: W&B resolves to offline
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightning_grok",
            "fit",
            RIDGE,
            "wandb.mode=offline",
            "trainer.accelerator=cpu",
            f"output_dir={out}",
            "trainer.max_steps=3000",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout + proc.stderr
    assert f"lightning-grok: run directory {out}" in text
    assert "site-packages" not in text  # a Python warning names the file that raised it
    for word in ("warn", "hint", "tip:", "srun", "leafspec", "wandb:", "gpu available", "weights_only", "training:"):
        assert word not in text.lower(), word
