"""The transformer family on modular arithmetic: a causal decoder on "a op b =" (models/transformer.py), and a
reduced configs/modular/transformer_add.yaml that groks by accuracy on one CPU core (it memorizes the table in a
few dozen steps and generalizes thousands of steps later), with phases.json saying that no theory applies.
"""

from __future__ import annotations

import time

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import fit, load
from torch.utils.data import DataLoader, TensorDataset

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


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    """(run directory, seconds) of the reduced config, trained once for the tests below."""
    # one thread, whatever the machine: AdamW's trajectory (and its loss spikes) depends on the reduction order, and
    # the plain-module test below runs the same network on one thread to compare step for step
    out = tmp_path_factory.mktemp("transformer")
    start = time.perf_counter()
    status, _ = fit("modular/transformer_add.yaml", out, *SMALL, "wandb.mode=disabled", "trainer.threads=1")
    assert status == 0
    return out, time.perf_counter() - start


def test_reduced_transformer_groks_by_accuracy(reduced):
    out, elapsed = reduced
    run = load_run(out)
    acc = run.single.accuracy
    assert acc.t_overfit is not None and acc.t_generalize is not None, run.data["accuracy"]
    assert acc.t_generalize > acc.t_overfit, run.data["accuracy"]
    # t1 is the last step with train accuracy < 0.99: full-batch AdamW's loss spikes dip below it now and then while
    # the test accuracy climbs. The table is memorized long before: train accuracy first reaches 0.99 within a few
    # dozen steps, a small fraction of t2 (the logged curve is dense early on: every step up to ~40)
    curves = load_curves(out)
    memorized = curves.index[curves["train/acc"] >= 0.99][0]
    assert memorized < acc.t_generalize / 10, (memorized, run.data["accuracy"])
    assert run.single.theory_note and "not linear" in run.single.theory_note
    assert run.single.exact is None and not run.single.bounds
    assert run.steps_run < 6000  # stopped 2% of t2 after t2 (phases.stop_margin)
    print(f"transformer p=23: memorized {memorized}, t1={acc.t_overfit}, t2={acc.t_generalize} ({elapsed:.0f} s)")


class _UserModule(L.LightningModule):
    """A plain LightningModule around the same network, as a user would write it: full-batch AdamW, the batch's
    accuracy logged in training_step, the held-out accuracy in validation_step."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def training_step(self, batch, batch_idx):
        x, y = batch
        out = self.net(x)
        self.log("train/acc", (out.argmax(-1) == y).float().mean())
        # the mean cross-entropy, summed then divided as the framework's autograd loop does: the same rounding, so
        # the two trajectories are the same to the bit
        return F.cross_entropy(out, y, reduction="sum") / len(y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/acc", (self.net(x).argmax(-1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.AdamW(self.net.parameters(), lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98))


def test_grokking_phases_on_a_plain_module_agrees_with_the_framework(reduced, tmp_path):
    """GrokkingPhases on a user's module (validated every step) finds the framework's t2 exactly, and its t1 one
    step later: the train accuracy logged in training_step is that of the parameters before the step's update."""
    from lightning_grok import GrokkingPhases
    from lightning_grok.members import build_member

    torch.set_num_threads(1)
    framework = load_run(reduced[0]).single.accuracy
    member = build_member(load("modular/transformer_add.yaml", *SMALL))  # the same seeded network and split
    t = member.tensors
    train = DataLoader(TensorDataset(pair_tokens(t.x_train, 23), t.train_labels), batch_size=t.n_train)
    val = DataLoader(TensorDataset(pair_tokens(t.x_test, 23), t.test_labels), batch_size=len(t.test_labels))
    phases = GrokkingPhases("train/acc", "val/acc", 0.99, 0.99, mode="max", margin=0.02, output_dir=tmp_path)
    trainer = L.Trainer(
        max_steps=6000,
        val_check_interval=1,
        check_val_every_n_epoch=None,
        callbacks=[phases],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
    )
    trainer.fit(_UserModule(member.model), train, val)
    run = load_run(tmp_path)
    assert (run.t_overfit, run.t_generalize) == (framework.t_overfit + 1, framework.t_generalize), framework


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
