"""Trainer settings checked before anything is written, "did you mean" for unknown keys, and a full disk that
names its file (issue 14).

The command-line cases run the real ``lightning-grok fit`` in a subprocess, into an ``output_dir`` that
already exists: each refusal exits 2 with one line naming the key and leaves neither ``config.yaml`` nor
``run.lock`` there, so the corrected command on the same directory just runs. The launcher rules are
checked in-process with the environment variables each launcher sets.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONFIGS, REPO

from lightning_grok.config import ConfigError, load_config, suggest_keys

RIDGE = str(CONFIGS / "ridge.yaml")
TINY = ("model.width=200", "trainer.max_steps=200", "trainer.progress_bar=false", "wandb.mode=disabled")
# what a launcher leaves in the environment; scrubbed so that "no launcher" is true on any test machine
LAUNCHER_PREFIXES = ("SLURM_", "TORCHELASTIC_", "LSB_", "JSM_", "OMPI_", "PMI_")
LAUNCHER_VARS = ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_WORLD_SIZE", "RANK", "LOCAL_RANK", "GROUP_RANK",
                 "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")  # fmt: skip


def _plain_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_PREFIXES) and k not in LAUNCHER_VARS}
    env.update(WANDB_MODE="disabled", **extra)
    return env


def _fit(out: Path, *overrides: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lightning_grok", "fit", RIDGE, f"output_dir={out}", *TINY, *overrides],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env or _plain_env(),
        timeout=180,  # a run waiting for nodes that never come fails here instead of hanging the suite
    )


def _refused(proc: subprocess.CompletedProcess, out: Path, words: list[str]) -> str:
    """Exit 2, one clean line holding every word, and nothing written into ``out``."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    msg = proc.stderr.strip().splitlines()[-1]
    assert msg.startswith("lightning-grok: error: "), msg
    for w in words:
        assert w in msg, (w, msg)
    assert not (out / "config.yaml").exists() and not (out / "run.lock").exists()
    assert list(out.iterdir()) == []
    return msg


# ---- trainer settings: refused before the run directory is touched ----------------------------------


BAD_TRAINER = [
    # checked while the config loads (no Lightning)
    (["trainer.accelerator=tpuu"], ["'trainer.accelerator'", "'tpuu'", "'cpu'", "'gpu'"]),
    (["trainer.devices=abc"], ["'trainer.devices'", "'abc'", "a count >= 1"]),
    (["trainer.devices=0"], ["'trainer.devices'", "'0'", "a count >= 1"]),
    (["trainer.max_steps=99999999999999999999999"], ["'trainer.max_steps'", "99999999999999999999999", "int64"]),
    # checked where the run is prepared, with Lightning's registries and the launcher's environment
    (["trainer.strategy=dpp"], ["'trainer.strategy'", "'dpp'", "did you mean ddp?", "StrategyRegistry"]),
    (["trainer.num_nodes=2"], ["'trainer.num_nodes'", "2", "no multi-node launcher", "wait forever", "srun"]),
]


@pytest.mark.parametrize("overrides, words", BAD_TRAINER, ids=[" ".join(c[0]) for c in BAD_TRAINER])
def test_bad_trainer_value_exits_2_before_config_yaml_or_run_lock(tmp_path, overrides, words):
    out = tmp_path / "run"
    out.mkdir()
    _refused(_fit(out, *overrides), out, words)


def test_gpu_without_one_is_refused_then_the_corrected_command_runs_in_the_same_output_dir(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    no_gpu = _plain_env(CUDA_VISIBLE_DEVICES="")  # a CPU-only machine, even where the tests run on a GPU
    msg = _refused(_fit(out, "trainer.accelerator=gpu", env=no_gpu), out, ["'trainer.accelerator'", "'gpu'"])
    assert "torch.cuda.is_available() is False" in msg and "allowed on this machine: auto, cpu" in msg
    proc = _fit(out, "trainer.accelerator=cpu", env=no_gpu)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "config.yaml").is_file() and (out / "phases.json").is_file()


def test_a_huge_integer_in_a_config_file_names_its_key(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("model:\n  width: 99999999999999999999999\n")
    with pytest.raises(ConfigError, match=r"'model\.width': 99999999999999999999999 is outside the int64"):
        load_config(path, verb=None)
    assert load_config(None, [f"seed={2**63 - 1}"], verb=None).seed == 2**63 - 1  # the largest int64 is fine


# ---- the launcher rules (in-process, with each launcher's environment) ---------------------------------


@pytest.fixture
def no_launcher(monkeypatch):
    for key in list(os.environ):
        if key.startswith(LAUNCHER_PREFIXES) or key in LAUNCHER_VARS:
            monkeypatch.delenv(key)
    return monkeypatch


def _nodes(num_nodes: int) -> None:
    from lightning_grok.trainer_checks import check_nodes

    check_nodes(num_nodes, dict(os.environ))


def test_one_node_needs_no_launcher(no_launcher):
    _nodes(1)


def test_several_nodes_without_a_launcher_are_refused(no_launcher):
    with pytest.raises(ConfigError, match=r"'trainer\.num_nodes': 3 \(no multi-node launcher.*Allowed here: 1"):
        _nodes(3)


def test_slurm_job_step_with_that_many_nodes(no_launcher):
    no_launcher.setenv("SLURM_NTASKS", "4")
    no_launcher.setenv("SLURM_NTASKS_PER_NODE", "2")
    no_launcher.setenv("SLURM_JOB_NAME", "lg-ddp")
    no_launcher.setenv("SLURM_NNODES", "2")
    _nodes(2)
    with pytest.raises(ConfigError, match=r"'trainer\.num_nodes': 4 \(this process runs under SLURM .* 2 node"):
        _nodes(4)


def test_an_interactive_slurm_job_is_not_a_launcher(no_launcher):
    no_launcher.setenv("SLURM_NTASKS", "2")
    no_launcher.setenv("SLURM_NNODES", "2")
    no_launcher.setenv("SLURM_JOB_NAME", "interactive")  # Lightning ignores SLURM here: nothing starts the ranks
    with pytest.raises(ConfigError, match="interactive SLURM job is not a launcher"):
        _nodes(2)


def test_torchrun_with_matching_and_other_node_counts(no_launcher):
    no_launcher.setenv("TORCHELASTIC_RUN_ID", "test")
    no_launcher.setenv("WORLD_SIZE", "4")
    no_launcher.setenv("LOCAL_WORLD_SIZE", "2")
    _nodes(2)  # WORLD_SIZE / LOCAL_WORLD_SIZE nodes
    no_launcher.setenv("GROUP_WORLD_SIZE", "2")
    _nodes(2)
    with pytest.raises(ConfigError, match=r"'trainer\.num_nodes': 3 .*torchrun.* 2 node"):
        _nodes(3)


def test_nodes_set_up_by_hand(no_launcher):
    no_launcher.setenv("MASTER_ADDR", "10.0.0.1")
    no_launcher.setenv("NODE_RANK", "1")
    _nodes(2)
    no_launcher.setenv("NODE_RANK", "2")
    with pytest.raises(ConfigError, match="NODE_RANK=2"):
        _nodes(2)


def test_what_else_lightning_refuses_is_named_with_the_trainer_keys(tmp_path, no_launcher):
    """fsdp needs a GPU: Lightning's Trainer refuses it; GPU indices on the CPU are refused by name. Both
    before any directory exists."""
    from lightning_grok.trainer_checks import check_trainer

    no_launcher.setenv("CUDA_VISIBLE_DEVICES", "")
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"trainer\.strategy='fsdp'.*Lightning refuses them \(.*GPU"):
        check_trainer(load_config(RIDGE, ["trainer.strategy=fsdp"], verb=None), out)
    with pytest.raises(ConfigError, match=r"'trainer\.devices': '0,1' on the CPU \(allowed: auto, or a number of"):
        check_trainer(load_config(RIDGE, ["trainer.accelerator=cpu", "trainer.devices=0,1"], verb=None), out)
    check_trainer(load_config(RIDGE, verb=None), out)  # the defaults pass
    assert not out.exists()


# ---- did you mean -------------------------------------------------------------------------------------


DID_YOU_MEAN = [("lr=0.1", "optim.lr"), ("weight_decay=1e-3", "optim.weight_decay"), ("model.widht=10", "model.width")]


@pytest.mark.parametrize("override, meant", DID_YOU_MEAN, ids=[c[0] for c in DID_YOU_MEAN])
def test_an_unknown_key_suggests_the_closest(tmp_path, override, meant):
    out = tmp_path / "run"
    out.mkdir()
    key = override.split("=")[0]
    msg = _refused(_fit(out, override), out, [f"unknown key '{key}'", f"did you mean {meant}?", "allowed keys here"])
    assert msg.count("did you mean") == 1


def test_suggestions():
    assert suggest_keys("lr") == ["optim.lr"]
    assert suggest_keys("name") == ["optim.name", "wandb.name"]  # every key of that name
    assert suggest_keys("wdith") == ["model.width"]
    assert suggest_keys("optim.wieght_decay") == ["optim.weight_decay"]
    assert suggest_keys("completely_unrelated") == []


# ---- a full disk names the file -----------------------------------------------------------------------


def test_a_failed_write_names_the_file_and_leaves_the_old_one(tmp_path):
    from lightning_grok.atomic import atomic_write

    path = tmp_path / "phases.json"
    path.write_text("old")

    def full(f):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what write() says on a full disk: no file name

    with pytest.raises(OSError) as info:
        atomic_write(path, full)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["phases.json"]
    with pytest.raises(PermissionError) as info:  # the errno keeps its OSError subclass
        atomic_write(path, lambda f: (_ for _ in ()).throw(OSError(errno.EACCES, "Permission denied")))
    assert info.value.filename == str(path)
