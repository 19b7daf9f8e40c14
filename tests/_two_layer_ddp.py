"""The DDP check of tests/test_two_layer_kernel.py: a module light enough (torch and the kernels, no Lightning)
for the spawned gloo processes to import in a second or two."""

from __future__ import annotations

import torch

from lightning_grok.gd_loops import Chunk, EvalSpec, TwoLayerGDLoop
from lightning_grok.models.two_layer import TwoLayerModel


def ddp_problem(rank: int, world: int, reduce=None) -> tuple[Chunk, torch.Tensor, torch.Tensor]:
    """400 fused GD steps of a zero-teacher network on rank ``rank``'s rows (r, r + W, ...), test loss sparse."""
    gen = torch.Generator().manual_seed(5)
    n, d, m, n_test, steps = 40, 10, 32, 80, 400
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    x_test = torch.randn(n_test, d, generator=gen, dtype=torch.float64)
    model = TwoLayerModel(d, m, 1.0, 1, gen)
    ev = EvalSpec(x_test=x_test[None], y_test=torch.zeros(1, n_test, 1, dtype=torch.float64), c=0.01)
    xs = x[rank::world][None].contiguous()
    ys = torch.zeros(1, xs.shape[1], 1, dtype=torch.float64)
    kw = {"reduce": reduce} if reduce is not None else {}
    kernel = TwoLayerGDLoop(xs, ys, m, 0.05, 0.1, n, ev, steps, eval_every=23, **kw)
    w, a = model.weight.detach().clone()[None], model.a.detach().clone()[None]
    return kernel.run(w, a, 0, steps), w, a


def ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world, init_method=f"tcp://127.0.0.1:{port}")

    def reduce(t: torch.Tensor) -> torch.Tensor:
        torch.distributed.all_reduce(t)
        return t

    chunk, w, a = ddp_problem(rank, world, reduce)
    if rank == 0:
        torch.save({"train": chunk.train_loss, "test": chunk.test_loss, "w": w, "a": a}, out)
    torch.distributed.destroy_process_group()
