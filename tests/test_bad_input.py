"""Bad input (issue part 7): each case exits 2 with one line naming the key or file, before Lightning is imported.

Every case runs the real command line in a subprocess and checks: exit status 2, the key (or file) and
what is wrong in the message, no traceback, and no output directory. They fail while the config loads, so
each process takes well under a second (importing Lightning alone takes about 9 s here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONFIGS, REPO

from lightning_grok.cli import theory_json
from lightning_grok.config import ConfigError, load_config
from lightning_grok.resources import MEMORY_ENV, auto_steps_per_call, available_memory, estimate_memory

RIDGE = str(CONFIGS / "ridge.yaml")
GIB = 1 << 30


def _cli(*args: str, env: dict[str, str] | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != MEMORY_ENV}  # the machine's real memory
    full_env.update(WANDB_MODE="disabled", **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "lightning_grok", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=full_env,
        timeout=timeout,
    )


def _refused(proc: subprocess.CompletedProcess, out: Path, words: list[str]) -> str:
    """Exit 2, one clean message holding every word, no traceback, no output directory; returns the message."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    msg = proc.stderr.strip().splitlines()[-1]
    assert msg.startswith("lightning-grok: error: "), msg
    for w in words:
        assert w in msg, (w, msg)
    assert not out.exists()
    return msg


NON_FINITE = [
    ("phases.eps=inf", "phases.eps"),  # on main: a false verdict
    ("model.init_scale=inf", "model.init_scale"),  # on main: a traceback
    ("optim.weight_decay=inf", "optim.weight_decay"),  # on main: blamed optim.lr
    ("optim.lr=nan", "optim.lr"),
    ("optim.lr=1e400", "optim.lr"),  # overflows to inf when parsed
    ("data.teacher_norm=-inf", "data.teacher_norm"),
    ("phases.stop_margin=.inf", "phases.stop_margin"),  # an optional float
    ("data.train_fraction=NaN", "data.train_fraction"),
]


@pytest.mark.parametrize("override, key", NON_FINITE)
def test_every_float_key_refuses_nan_and_inf(tmp_path, override, key):
    out = tmp_path / "out"
    msg = _refused(_cli("fit", RIDGE, override, f"output_dir={out}"), out, [f"'{key}'", "finite"])
    other = {"optim.lr", "optim.weight_decay"} - {key}
    assert not any(f"'{o}'" in msg for o in other), msg  # the key at fault, not a neighbour


TOO_BIG = [
    (["model.width=100000000"], "model.width=100000000"),  # 80 GB of features
    (["data.n_train=1000000000"], "data.n_train=1000000000"),
    (["trainer.steps_per_call=1000000000", "trainer.max_steps=1000000000"], "trainer.steps_per_call=1000000000"),
    (["data.kind=modular", "data.modulus=100000"], "data.modulus=100000"),  # a 10^10-pair table
    (["seeds=100000"], "seeds=100000"),  # ran silently for minutes on main
]


@pytest.mark.parametrize("overrides, key", TOO_BIG, ids=[c[1] for c in TOO_BIG])
def test_a_run_bigger_than_the_machine_is_refused_with_the_estimate(tmp_path, overrides, key):
    out = tmp_path / "out"
    have, _ = available_memory()
    msg = _refused(
        _cli("fit", RIDGE, *overrides, f"output_dir={out}"), out, ["needs about", "GiB", "is available", key]
    )
    needed = float(msg.split("needs about ")[1].split(" GiB")[0])
    assert needed * GIB > have  # the printed estimate is what was compared with the machine's memory
    assert "MemAvailable" in msg or "cgroup" in msg


def test_theory_refuses_a_model_too_big_to_build(tmp_path):
    out = tmp_path / "out"
    _refused(_cli("theory", RIDGE, "model.width=100000000", f"output_dir={out}"), out, ["model.width", "available"])


def test_memory_override_names_the_estimate_and_the_limit(tmp_path):
    """The available figure can be set (a shared node): the ridge defaults then do not fit in 100 MB."""
    out = tmp_path / "out"
    proc = _cli("fit", RIDGE, f"output_dir={out}", env={MEMORY_ENV: "100000000"})
    _refused(proc, out, ["needs about", "95 MiB is available", f"${MEMORY_ENV}", "framework"])


BAD_OVERRIDES = [
    ("seed=${nope}", ["'seed'", "nope", "not found"]),  # interpolation to a missing key
    ("seed=${oc.env:LG_SURELY_UNSET_VAR}", ["'seed'", "LG_SURELY_UNSET_VAR"]),
    ("optim.lr=[1", ["'optim.lr'", "unparseable", "[1"]),
    ("optim=3", ["'optim'", "group of keys", "single value 3", "optim.name="]),  # on main: "key '?'"
    ("data=${model}", ["'data'", "group of keys"]),
    ("seed=${wandb.project}", ["'seed'", "Integer"]),
]


@pytest.mark.parametrize("override, words", BAD_OVERRIDES)
def test_bad_override_names_its_key(tmp_path, override, words):
    out = tmp_path / "out"
    _refused(_cli("fit", RIDGE, override, f"output_dir={out}"), out, words)


BAD_FILES = {
    "duplicate": (b"optim:\n  lr: 1.0\n  name: gd\n  lr: 2.0\n", ["'optim.lr'", "twice", "lines 2 and 4"]),
    "duplicate_top": (b"seed: 1\nmodel:\n  width: 10\nseed: 2\n", ["'seed'", "twice", "lines 1 and 4"]),
    "duplicate_flow": (b"optim: {lr: 1, lr: 2}\n", ["'optim.lr'", "twice"]),
    "latin1": ("seed: 0\nwandb:\n  name: caf\xe9\n".encode("latin-1"), ["not UTF-8", "0xe9", "line 3"]),
    "group_scalar": (b"optim: 3\n", ["'optim'", "group of keys"]),
    "interpolation": (b"seed: ${nope}\n", ["'seed'", "nope"]),
    "not_yaml": (b"optim:\n  lr: [1\n", ["cannot parse config file", "line 3"]),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_config_file_names_the_file(tmp_path, name):
    content, words = BAD_FILES[name]
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(content)
    out = tmp_path / "out"
    msg = _refused(_cli("fit", str(path), f"output_dir={out}"), out, words)
    if name in ("duplicate", "duplicate_top", "duplicate_flow", "latin1", "group_scalar"):
        assert str(path) in msg


def test_yaml_merge_key_override(tmp_path):
    """``<<: {...}`` followed by an explicit key is YAML's override, not a duplicate."""
    path = tmp_path / "merge.yaml"
    path.write_text("optim:\n  <<: {lr: 0.5, weight_decay: 0.001}\n  lr: 2.0\n")
    cfg = load_config(path, verb=None)
    assert (cfg.optim.lr, cfg.optim.weight_decay) == (2.0, 0.001)


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_config_path_that_is_not_a_regular_file(tmp_path, kind):
    """A directory cannot be read; a FIFO would block the run forever waiting for a writer."""
    path = tmp_path / "configs.yaml"
    path.mkdir() if kind == "directory" else os.mkfifo(path)
    out = tmp_path / "out"
    _refused(_cli("fit", str(path), f"output_dir={out}", timeout=30), out, [str(path), "not a regular file"])


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_a_file_whose_read_fails_is_named(tmp_path):
    """/proc/self/mem is a regular file whose read fails (EIO) even for root: a real unreadable file."""
    out = tmp_path / "out"
    _refused(_cli("fit", "/proc/self/mem", f"output_dir={out}"), out, ["cannot read config file /proc/self/mem"])


def test_a_file_without_read_permission_is_named(tmp_path):
    path = tmp_path / "secret.yaml"
    path.write_text("seed: 1\n")
    path.chmod(0)
    if os.geteuid() == 0:
        pytest.skip("root reads files without read permission (see test_a_file_whose_read_fails_is_named)")
    out = tmp_path / "out"
    _refused(_cli("fit", str(path), f"output_dir={out}"), out, ["cannot read config file", str(path), "ermission"])


# ---- the memory estimate itself -----------------------------------------------------------------------


def test_ridge_defaults_need_well_under_a_gib():
    need = estimate_memory(load_config(CONFIGS / "ridge.yaml", verb=None))
    assert sum(need.values()) < GIB
    assert {"framework", "iterate_buffers", "theory"} <= set(need)


def test_estimate_grows_with_seeds_width_and_steps_per_call():
    def run_bytes(overrides: list[str], verb: str = "fit") -> int:  # without the fixed framework share
        need = estimate_memory(load_config(CONFIGS / "ridge.yaml", overrides, verb=None), verb=verb)
        return sum(need.values()) - need["framework"]

    total = run_bytes([])
    for override in ("seeds=4", "model.width=4000", "trainer.steps_per_call=40000"):
        assert run_bytes([override]) > total, override
    assert run_bytes(["seeds=20"]) > 5 * total  # not 20x: the automatic K shrinks the per-call buffers
    # the theory verb builds member 0 only, and no kernel
    assert run_bytes(["seeds=20"], verb="theory") < run_bytes(["seeds=20"]) / 5


def test_width_1e8_is_refused_on_this_machine(monkeypatch):
    """The real path: /proc/meminfo (or the cgroup), no override; 80 GB of ridge features alone."""
    monkeypatch.delenv(MEMORY_ENV, raising=False)
    cfg = load_config(CONFIGS / "ridge.yaml", ["model.width=100000000"], verb=None)
    need = estimate_memory(cfg)
    assert need["training_data"] >= 100 * 10**8 * 8
    have, source = available_memory()
    assert 0 < have < sum(need.values()) and source
    with pytest.raises(ConfigError, match="model.width=100000000"):
        load_config(CONFIGS / "ridge.yaml", ["model.width=100000000"])


@pytest.mark.parametrize(
    "config", sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml")), ids=lambda c: c
)
def test_every_shipped_config_fits(config):
    """The estimate must not refuse the configs the project ships (each well under 8 GiB)."""
    cfg = load_config(CONFIGS / config)  # the full check, against this machine
    assert sum(estimate_memory(cfg).values()) < 8 * GIB


def test_auto_steps_per_call_keeps_the_buffer_near_32_mb():
    assert auto_steps_per_call(None) == 256
    assert auto_steps_per_call(100) == 4096  # capped
    assert auto_steps_per_call(10**7) == 64  # floored
    assert auto_steps_per_call(2048) * 2048 * 8 == 32 << 20


def test_config_and_estimate_import_neither_torch_nor_lightning():
    code = (
        "import sys; from lightning_grok.config import load_config; "
        "load_config('configs/ridge.yaml', ['seeds=2']); "
        "print(sorted(m for m in ('torch', 'lightning', 'numpy') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# ---- theory --json is strict JSON ---------------------------------------------------------------------


def _strict(text: str):
    def refuse(constant: str):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_theory_json_writes_infinity_as_null_with_a_note():
    out = {"exact": {"train_loss_limit": float("inf"), "t1": 3}, "bounds": {"b": {"value": float("nan")}}, "x": [1.5]}
    data = _strict(theory_json(out))
    assert data["exact"] == {"train_loss_limit": None, "t1": 3}
    assert data["bounds"]["b"]["value"] is None and data["x"] == [1.5]
    assert any(n.startswith("exact.train_loss_limit is inf") for n in data["notes"])
    assert any(n.startswith("bounds.b.value is nan") for n in data["notes"])


def test_theory_json_of_an_unstable_run_parses_strictly():
    """Above the stability limit the loss limits are infinite: printed as Infinity on main."""
    proc = _cli("theory", RIDGE, "optim.lr=150", "optim.allow_unstable=true", "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = _strict(proc.stdout)
    assert data["exact"]["train_loss_limit"] is None
    assert any("exact.train_loss_limit is inf" in n for n in data["notes"])
