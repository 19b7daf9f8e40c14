"""a + b mod p with the two-layer network groks on 2 CPU cores, and more weight decay shortens the delay.

The accuracy times: t1 = last step with train accuracy < 0.99, t2 = first step with test accuracy >= 0.99
(configs/modular/two_layer_add.yaml; each run stops 2% of t2 after both are found).
"""

from __future__ import annotations

import time

from conftest import fit


def test_modular_addition_groks_and_weight_decay_shortens_the_delay(tmp_path):
    start = time.perf_counter()
    status, base = fit("modular/two_layer_add.yaml", tmp_path / "wd0.5")
    elapsed = time.perf_counter() - start
    assert status == 0
    acc = base["accuracy"]
    t1, t2 = acc["t_overfit"], acc["t_generalize"]
    assert t1 is not None and t2 is not None, acc
    assert t2 >= 5 * t1, acc
    assert elapsed < 300
    _, stronger = fit("modular/two_layer_add.yaml", tmp_path / "wd1.0", "optim.weight_decay=1.0")
    acc2 = stronger["accuracy"]
    assert acc2["t_generalize"] is not None and acc2["t_generalize"] >= 5 * acc2["t_overfit"]
    assert acc2["grokking_time"] < acc["grokking_time"], (acc2, acc)
    print(f"wd=0.5: t1={t1} t2={t2} ({elapsed:.0f} s); wd=1.0: t1={acc2['t_overfit']} t2={acc2['t_generalize']}")
