"""The typed config (issue 18, item 2): an Enum for each closed set of values, checked by OmegaConf and listed by
the help; the keys' meanings written once; ``trainer.kernel`` renamed ``trainer.gd_loop`` and ``wandb.log_points``
renamed ``phases.log_points`` without breaking a config, an override, a sweep file or a run directory written before
the renames."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CONFIGS, REPO, write_sweep
from omegaconf import OmegaConf

from lightning_grok.config import ConfigError, Family, GDLoop, choices, load_config, schema_keys, to_container
from lightning_grok.config import load as config_load
from lightning_grok.config.schema import fields
from lightning_grok.confighelp import format_keys
from lightning_grok.rundir import check_identity, fingerprint

RIDGE = CONFIGS / "ridge.yaml"
BEFORE = Path(__file__).parent / "fixtures" / "run_before_gd_loop"  # config.yaml as main wrote it with trainer.kernel
# fingerprint() of that config as main computed it, before the rename: what its checkpoints hold
BEFORE_FINGERPRINT = "76199c7df0d4a480"
DEPRECATION = "config key 'trainer.kernel' is now 'trainer.gd_loop'"
LOG_POINTS_DEPRECATION = "config key 'wandb.log_points' is now 'phases.log_points'"


def _load(*overrides: str):
    return load_config(RIDGE, list(overrides), verb=None)


@pytest.fixture
def fresh_warnings(monkeypatch):
    """The deprecation line is printed once per process: forget that it was."""
    monkeypatch.setattr(config_load, "_warned", set())


@pytest.mark.parametrize("key", sorted(choices()))
def test_an_enum_key_refuses_another_value_naming_key_value_and_allowed_values(tmp_path, key):
    allowed = [m.value for m in choices()[key]]
    with pytest.raises(ConfigError) as override:
        _load(f"{key}=bogus")
    *groups, leaf = key.split(".")
    path = tmp_path / "bad.yaml"
    tree: dict = {leaf: "bogus"}
    for g in reversed(groups):
        tree = {g: tree}
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError) as from_file:
        load_config(path, verb=None)
    for exc in (override, from_file):
        msg = str(exc.value)
        assert f"invalid value for '{key}': 'bogus'" in msg, msg
        assert f"allowed: one of {tuple(allowed)}" in msg, msg


def test_enum_values_are_the_plain_strings_everywhere():
    cfg = _load("model.family=two_layer", "trainer.precision=64", "optim.name=sgd")
    family = cfg.model.family
    assert isinstance(family, Family) and family is Family.two_layer  # OmegaConf returns the member
    assert family == "two_layer" and {"two_layer": 1}[family] == 1 and family in ("two_layer",)
    assert f"{family}" == str(family) == "two_layer" and repr(family) == "'two_layer'"
    assert cfg.trainer.precision == "64"  # YAML's integer 64 is the member "64"
    plain = to_container(cfg)
    assert type(plain["model"]["family"]) is str and type(plain["trainer"]["gd_loop"]) is str
    assert yaml.safe_load(yaml.safe_dump(plain)) == plain  # config.yaml
    assert json.loads(json.dumps(OmegaConf.to_container(cfg, resolve=True)))["model"]["family"] == "two_layer"
    assert yaml.safe_load(OmegaConf.to_yaml(cfg)) == plain  # --print-config


def test_each_members_name_is_its_value():
    """OmegaConf reads an Enum field by member name: names equal to values keep YAML, overrides and dumps alike."""
    for choice in choices().values():
        assert all(m.name == m.value for m in choice)


def test_help_lists_every_key_with_its_meaning_and_the_enum_values():
    text = format_keys()
    lines = text.splitlines()
    for key, (_, f) in fields().items():
        assert f.metadata.get("help"), f"{key} has no help"
        i = next(i for i, line in enumerate(lines) if line.split()[:1] == [key])
        assert f.metadata["help"] in lines[i + 1]
    for key, choice in choices().items():
        i = next(i for i, line in enumerate(lines) if line.split()[:1] == [key])
        assert f"allowed: one of {tuple(m.value for m in choice)}" in lines[i + 1]
    assert "trainer.gd_loop" in schema_keys() and "trainer.kernel" not in schema_keys()
    assert "trainer.kernel (now trainer.gd_loop)" in text


def test_the_old_key_is_read_as_the_new_with_one_deprecation_line(capsys, fresh_warnings):
    new = _load("trainer.gd_loop=rowspace")
    assert capsys.readouterr().err == ""
    old = _load("trainer.kernel=rowspace")
    again = _load("--trainer.kernel=rowspace")  # W&B's form
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and DEPRECATION in err[0], err
    assert old.trainer.gd_loop is GDLoop.rowspace
    assert to_container(old) == to_container(new) == to_container(again)


def test_the_old_key_in_a_config_file_and_in_a_group_override(tmp_path, capsys, fresh_warnings):
    path = tmp_path / "old.yaml"
    path.write_text("trainer:\n  kernel: parameter\n  max_steps: 10\n")
    cfg = load_config(path, verb=None)
    assert cfg.trainer.gd_loop == "parameter" and cfg.trainer.max_steps == 10
    assert load_config(path, ["trainer.gd_loop=rowspace"], verb=None).trainer.gd_loop == "rowspace"  # later wins
    assert _load("trainer={kernel: parameter}").trainer.gd_loop == "parameter"
    assert capsys.readouterr().err.count(DEPRECATION) == 1
    with pytest.raises(ConfigError, match="'trainer.kernel' is the old name of 'trainer.gd_loop' and both"):
        _load("trainer={kernel: parameter, gd_loop: rowspace}")
    with pytest.raises(ConfigError, match=r"invalid value for 'trainer.gd_loop': 'fast'.*'auto', 'parameter'"):
        _load("trainer.kernel=fast")


def test_a_sweep_file_with_the_old_key_still_loads(tmp_path, fresh_warnings):
    from lightning_grok.sweep.spec import load_spec

    params = {"trainer.kernel": {"values": ["parameter", "rowspace"]}, "trainer.max_steps": {"value": 10}}
    spec = load_spec(write_sweep(tmp_path / "old.yaml", params), sweep_dir=tmp_path / "sweep")
    assert [p["trainer.kernel"] for p in spec.points()] == ["parameter", "rowspace"]


def test_a_run_directory_written_with_the_old_key_keeps_its_identity(tmp_path, capsys, fresh_warnings):
    run = tmp_path / "run"
    shutil.copytree(BEFORE, run)
    stored = yaml.safe_load((run / "config.yaml").read_text())
    assert stored["trainer"]["kernel"] == "parameter"  # written before the rename
    same = ["trainer.gd_loop=parameter", "trainer.progress_bar=false", f"output_dir={run}"]
    config = to_container(_load(*same))
    check_identity(run, config)  # resumes: no ConfigError
    assert fingerprint(config) == fingerprint(stored) == BEFORE_FINGERPRINT  # its checkpoints still match
    # the saved file itself loads as a config, under the new name
    assert to_container(load_config(run / "config.yaml", [f"output_dir={run}"], verb=None)) == config
    assert capsys.readouterr().err.count(DEPRECATION) == 1
    other = to_container(_load("trainer.gd_loop=rowspace", f"output_dir={run}"))
    with pytest.raises(ConfigError, match=r"trainer.kernel: 'parameter' -> 'rowspace'"):
        check_identity(run, other)  # a real change of the GD loop is still refused


# ---- wandb.log_points -> phases.log_points: the logged steps (every logger, curves.json, the GD loops' test side)


def test_log_points_is_a_phases_key_and_the_help_names_the_old_one():
    assert "phases.log_points" in schema_keys() and "wandb.log_points" not in schema_keys()
    help_text = fields()["phases.log_points"][1].metadata["help"]
    assert "curves.json" in help_text and "logger" in help_text and "test side" in help_text
    assert "wandb.log_points (now phases.log_points)" in format_keys()


def test_the_old_log_points_override_is_read_as_the_new_with_one_deprecation_line(capsys, fresh_warnings):
    new = _load("phases.log_points=50")
    assert capsys.readouterr().err == ""
    old = _load("wandb.log_points=50")
    again = _load("--wandb.log_points=50")  # W&B's form
    group = _load("wandb={log_points: 50}")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and LOG_POINTS_DEPRECATION in err[0] and "override uses the old name" in err[0], err
    assert old.phases.log_points == 50 and "log_points" not in old.wandb
    assert to_container(old) == to_container(new) == to_container(again) == to_container(group)
    from lightning_grok.plan import RunPlan

    assert RunPlan.from_config(old).log_points == 50  # the plan reads the new name
    with pytest.raises(ConfigError, match="'wandb.log_points' is the old name of 'phases.log_points' and both"):
        config_load._renamed({"wandb": {"log_points": 5}, "phases": {"log_points": 6}}, "override")
    with pytest.raises(ConfigError, match=r"invalid value for 'phases.log_points': 0 \(allowed: an integer >= 1"):
        _load("wandb.log_points=0")  # the range rule, under the new name


def test_the_old_log_points_in_a_config_file(tmp_path, capsys, fresh_warnings):
    path = tmp_path / "old.yaml"
    path.write_text("phases:\n  stop_margin: 0.5\nwandb:\n  mode: disabled\n  log_points: 30\n")
    cfg = load_config(path, verb=None)
    assert cfg.phases.log_points == 30 and cfg.phases.stop_margin == 0.5 and cfg.wandb.mode == "disabled"
    assert load_config(path, ["phases.log_points=70"], verb=None).phases.log_points == 70  # later wins
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and LOG_POINTS_DEPRECATION in err[0] and f"config file {path}" in err[0], err
    both = tmp_path / "both.yaml"
    both.write_text("phases:\n  log_points: 30\nwandb:\n  log_points: 30\n")
    with pytest.raises(ConfigError, match=f"config file {both}: key 'wandb.log_points' is the old name"):
        load_config(both, verb=None)


def test_a_sweep_file_with_the_old_log_points_still_loads(tmp_path, capsys, fresh_warnings):
    from lightning_grok.sweep.spec import load_spec

    params = {"wandb.log_points": {"values": [40, 80]}, "trainer.max_steps": {"value": 10}}
    spec = load_spec(write_sweep(tmp_path / "old.yaml", params), sweep_dir=tmp_path / "sweep")
    points = spec.points()
    assert [p["wandb.log_points"] for p in points] == [40, 80]
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and LOG_POINTS_DEPRECATION in err[0], err  # every point validated, one line
    runs = [load_config(spec.config_path, spec.overrides(p), verb=None) for p in points]
    assert [cfg.phases.log_points for cfg in runs] == [40, 80]
    assert capsys.readouterr().err == ""  # once per process


def test_a_run_directory_written_with_wandb_log_points_keeps_its_identity(tmp_path, capsys, fresh_warnings):
    """The fixture predates both renames: its config.yaml holds wandb.log_points, and its checkpoints hold
    BEFORE_FINGERPRINT; the new name hashes as the old one, so the directory resumes."""
    run = tmp_path / "run"
    shutil.copytree(BEFORE, run)
    stored = yaml.safe_load((run / "config.yaml").read_text())
    assert stored["wandb"]["log_points"] == 400 and "log_points" not in stored["phases"]  # before the rename
    same = ["trainer.gd_loop=parameter", "trainer.progress_bar=false", "phases.log_points=400", f"output_dir={run}"]
    config = to_container(_load(*same))
    assert config["phases"]["log_points"] == 400 and "log_points" not in config["wandb"]
    check_identity(run, config)  # resumes: no ConfigError
    assert fingerprint(config) == fingerprint(stored) == BEFORE_FINGERPRINT  # its checkpoints still match
    loaded = to_container(load_config(run / "config.yaml", [f"output_dir={run}"], verb=None))
    assert loaded == config  # the saved file loads as a config, under the new names
    err = capsys.readouterr().err
    assert err.count(LOG_POINTS_DEPRECATION) == 1 and err.count(DEPRECATION) == 1, err
    # as under its old name (wandb.*), the logged steps may change on resume: same identity, same fingerprint
    fewer = to_container(_load(*same, "phases.log_points=100"))
    check_identity(run, fewer)
    assert fingerprint(fewer) == BEFORE_FINGERPRINT


@pytest.mark.parametrize(
    "override, deprecation, new, old",
    [
        ("trainer.kernel=rowspace", DEPRECATION, ("trainer", "gd_loop", "rowspace"), ("trainer", "kernel")),
        ("wandb.log_points=50", LOG_POINTS_DEPRECATION, ("phases", "log_points", 50), ("wandb", "log_points")),
    ],
)
def test_fit_prints_one_deprecation_line_and_the_new_key(override, deprecation, new, old):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")} | {"WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "-m", "lightning_grok", "fit", str(RIDGE), override, "--print-config"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [
        f"lightning-grok: warning: {deprecation} (same values); override uses the old name, which still works"
    ]
    printed = yaml.safe_load(proc.stdout)
    assert printed[new[0]][new[1]] == new[2] and old[1] not in printed[old[0]]
