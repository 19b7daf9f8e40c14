"""The GPU path, checked on a machine that has one (CI has none): run it there as

    python benchmarks/gpu_check.py [--out DIR]

1. ridge defaults, accelerator=gpu, 64-true: measured t1, t2 equal the exact dynamics;
2. the same in 32-true (t2 within a few steps of the float64 one);
3. random features at the paper's width m = 10^4 (Sec. 5.2), 64-true: steps/s;
4. 16 vectorized seeds (row-space GD loop) on the GPU against the same on the CPU: t1, t2 per member equal;
5. the two-layer modular-arithmetic config in bf16-mixed: accuracy phases found.
Prints one JSON object (and writes it to DIR/gpu_check.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from lightning_grok.config import load_config
from lightning_grok.experiment import fit

REPO = Path(__file__).resolve().parents[1]
QUIET = ["wandb.mode=disabled", "trainer.progress_bar=false"]


def run(config: str, tmp: Path, *overrides: str) -> tuple[dict, float]:
    cfg = load_config(REPO / config, [*QUIET, f"output_dir={tmp / str(time.time_ns())}", *overrides])
    start = time.perf_counter()
    _, res = fit(cfg, Path(config).stem)
    return res, time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    out: dict = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.is_available(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    gpu = ["trainer.accelerator=gpu", "trainer.devices=1"]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        r64, s64 = run("configs/ridge.yaml", tmp, *gpu, "trainer.max_steps=24000")
        out["ridge_fp64"] = {
            "t1": r64["t_overfit"],
            "t2": r64["t_generalize"],
            "exact": r64["exact"],
            "verdicts": sorted({b["verdict"] for b in r64["bounds"].values()}),
            "seconds": s64,
            "steps_per_s": 24000 / s64,
        }
        r32, s32 = run("configs/ridge.yaml", tmp, *gpu, "trainer.max_steps=24000", "trainer.precision=32-true")
        out["ridge_fp32"] = {"t1": r32["t_overfit"], "t2": r32["t_generalize"], "seconds": s32}
        rf, srf = run("configs/random_features.yaml", tmp, *gpu, "trainer.max_steps=20000", "data.n_sigma_samples=100")
        out["random_features_m1e4"] = {
            "t1": rf["t_overfit"],
            "exact_t1": rf["exact"]["t_overfit"],
            "seconds": srf,
            "steps_per_s": 20000 / srf,
        }
        ens_g, sg = run("configs/ridge.yaml", tmp, *gpu, "seeds=16", "trainer.max_steps=24000")
        ens_c, sc = run("configs/ridge.yaml", tmp, "trainer.accelerator=cpu", "seeds=16", "trainer.max_steps=24000")
        pairs = lambda r: [(m["t_overfit"], m["t_generalize"]) for m in r["members"]]  # noqa: E731
        out["seeds16"] = {
            "gpu_equals_cpu": pairs(ens_g) == pairs(ens_c),
            "gpu_s": sg,
            "cpu_s": sc,
            "matches_exact": ens_g["aggregate"]["t_generalize_matches_exact"],
        }
        mod, smod = run("configs/modular/two_layer_add.yaml", tmp, *gpu, "trainer.precision=bf16-mixed")
        out["modular_bf16"] = {"accuracy": mod["accuracy"], "steps": mod["steps_run"], "seconds": smod}
    text = json.dumps(out, indent=2, default=str)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_check.json").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
