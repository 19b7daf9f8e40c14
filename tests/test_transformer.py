"""The transformer family on modular arithmetic: a causal decoder on "a op b =" (models/transformer.py), and a
reduced configs/modular/transformer_add.yaml that groks by accuracy on one CPU core (it memorizes the table in a
few dozen steps and generalizes thousands of steps later), with phases.json saying that no theory applies.
"""

from __future__ import annotations

import time

import pytest
import torch
from conftest import fit, load

from lightning_grok.config import ConfigError
from lightning_grok.data.modular import pair_tokens
from lightning_grok.models.transformer import ModularTransformer
from lightning_grok.results import load_curves, load_run

P = 7


def _tokens(n: int, gen: torch.Generator) -> torch.Tensor:
    a, b = torch.randint(0, P, (n,), generator=gen), torch.randint(0, P, (n,), generator=gen)
    return torch.stack([a, torch.full_like(a, P), b, torch.full_like(a, P + 1)], dim=1)


@pytest.mark.parametrize("n_layers", [1, 2])
def test_shapes_and_causality(n_layers):
    gen = torch.Generator().manual_seed(0)
    model = ModularTransformer(P, n_layers=n_layers, d_model=32, n_heads=4, generator=gen).double()
    tokens = _tokens(16, gen)
    per_position = model.logits_per_position(tokens)
    assert per_position.shape == (16, 4, P) and model(tokens).shape == (16, P)
    torch.testing.assert_close(model(tokens), per_position[:, -1], rtol=0, atol=0)
    for i in range(4):  # changing the tokens after position i leaves positions <= i exactly as they were
        changed = tokens.clone()
        changed[:, i + 1 :] = torch.randint(0, P + 2, changed[:, i + 1 :].shape, generator=gen)
        after = model.logits_per_position(changed)
        assert torch.equal(after[:, : i + 1], per_position[:, : i + 1]), f"position {i} sees later tokens"
    changed = tokens.clone()
    changed[:, 0] = (changed[:, 0] + 1) % P  # and the readout at "=" does depend on a
    assert not torch.allclose(model(changed), model(tokens))


def test_one_hot_pairs_are_read_as_tokens():
    gen = torch.Generator().manual_seed(1)
    model = ModularTransformer(P, d_model=16, n_heads=2, generator=gen)
    tokens = _tokens(10, gen)
    eye = torch.eye(P, dtype=torch.float64)
    pairs = torch.cat([eye[tokens[:, 0]], eye[tokens[:, 2]]], dim=1)
    assert torch.equal(pair_tokens(pairs, P), tokens)
    assert torch.equal(model(pairs.float()), model(tokens))


def test_initialization_is_seeded_and_leaves_the_global_generator_alone():
    state = torch.random.get_rng_state()
    a = ModularTransformer(P, d_model=16, n_heads=2, generator=torch.Generator().manual_seed(3))
    b = ModularTransformer(P, d_model=16, n_heads=2, generator=torch.Generator().manual_seed(3))
    c = ModularTransformer(P, d_model=16, n_heads=2, generator=torch.Generator().manual_seed(4))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.token.weight, c.token.weight)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["data.target=onehot"], ["'data.target'", "'onehot'", "index"]),
        (["model.n_heads=3"], ["'model.n_heads'", "3", "128"]),
        (["model.d_model=0"], ["'model.d_model'", "0"]),
    ],
)
def test_bad_transformer_settings_name_the_key(overrides, words):
    with pytest.raises(ConfigError) as err:
        load("modular/transformer_add.yaml", *overrides)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_transformer_needs_modular_data():
    with pytest.raises(ConfigError, match="'model.family': 'transformer' with data.kind='regression'"):
        load("ridge.yaml", "model.family=transformer")


# the documented config at a size one CPU core trains to t2 in under a minute (the documented size's times are in
# docs/figures/modular_transformer_fit.json)
SMALL = ("data.modulus=23", "data.train_fraction=0.6", "model.d_model=64", "trainer.max_steps=6000")


def test_reduced_transformer_groks_by_accuracy(tmp_path):
    torch.set_num_threads(1)  # one core, as CI would give it
    start = time.perf_counter()
    status, _ = fit("modular/transformer_add.yaml", tmp_path, *SMALL, "wandb.mode=disabled")
    elapsed = time.perf_counter() - start
    assert status == 0
    run = load_run(tmp_path)
    acc = run.single.accuracy
    assert acc.t_overfit is not None and acc.t_generalize is not None, run.data["accuracy"]
    assert acc.t_generalize > acc.t_overfit, run.data["accuracy"]
    # t1 is the last step with train accuracy < 0.99: full-batch AdamW's loss spikes dip below it now and then while
    # the test accuracy climbs. The table is memorized long before: train accuracy first reaches 0.99 within a few
    # dozen steps, a small fraction of t2 (the logged curve is dense early on: every step up to ~40)
    curves = load_curves(tmp_path)
    memorized = curves.index[curves["train/acc"] >= 0.99][0]
    assert memorized < acc.t_generalize / 10, (memorized, run.data["accuracy"])
    assert run.single.theory_note and "not linear" in run.single.theory_note
    assert run.single.exact is None and not run.single.bounds
    assert run.steps_run < 6000  # stopped 2% of t2 after t2 (phases.stop_margin)
    print(f"transformer p=23: memorized {memorized}, t1={acc.t_overfit}, t2={acc.t_generalize} ({elapsed:.0f} s)")


def test_other_families_keep_their_identity_without_the_transformer_keys(tmp_path):
    """Run directories and checkpoints made before model.n_layers, d_model and n_heads existed still resume."""
    from lightning_grok.config import to_container
    from lightning_grok.rundir import check_identity, fingerprint, store_config

    config = to_container(load("modular/two_layer_add.yaml"))
    before = {k: v for k, v in config["model"].items() if k not in ("n_layers", "d_model", "n_heads")}
    old = config | {"model": before}
    assert fingerprint(old) == fingerprint(config)
    store_config(tmp_path, old)
    check_identity(tmp_path, config)  # no ConfigError
    transformer = to_container(load("modular/transformer_add.yaml"))
    assert fingerprint(transformer) != fingerprint(transformer | {"model": transformer["model"] | {"d_model": 64}})
