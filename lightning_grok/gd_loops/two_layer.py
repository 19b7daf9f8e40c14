"""``TwoLayerGDLoop``: fused full-batch GD for the two-layer ReLU network of Sec. 5.3, its members stepped in
groups (``_Group``, sized by ``CPU_GROUP_BYTES`` on a CPU) shared among threads (``_one_thread_each``), the test
side evaluated sparsely with replays of the blocks where a threshold is crossed (cost: ``_two_layer_eval_cost``)."""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from lightning_grok.gd_loops.records import Chunk, EvalSpec, Reduce, _identity
from lightning_grok.gd_loops.sparse_eval import _crossed, _every, eval_points
from lightning_grok.theory.two_layer_population import evaluation_cost


def _two_layer_eval_cost(ev: EvalSpec, m: int, d: int, k: int) -> float:
    """Multiply-adds of one member's test-side evaluation in the two-layer GD loop: N m (d + k) on a test set of
    N points; with the closed form ``theory.two_layer_population.evaluation_cost`` (d for the Gram entry and
    ELEMENT_COST for the kernel, per entry of K(W, W)'s upper block triangle, plus K a and the teacher's columns)."""
    if ev.two_layer is not None:
        return evaluation_cost(m, d, k, ev.two_layer.teacher_units)
    n_test = 0 if ev.x_test is None else ev.x_test.shape[1]
    return n_test * m * (d + k)


# A member group's step touches about 2 n m + m d + n d numbers (Z and H share one (n, m) buffer, relu in place;
# the outer product R a^T and its masked copy share the other); on a CPU the group is sized so that these stay in a
# core's L2 cache (1 MiB a core on this machine's AMD EPYC): 16 default-size members batched together run at
# 0.55-0.65x the member-steps/s of one at a time (the (B, n, m) activations no longer fit), and two at 0.6x, so a
# CPU runs one default-size member after another within a call. With the two buffers a default-size member's step
# (0.6 MB) stays in L2; with four (1 MB, as before) it did not, and ran at 0.83-0.93x (one thread).
CPU_GROUP_BYTES = 1 << 20


@dataclass
class _Group:
    """Members g0..g1-1 of a two-layer GD loop: their data and the buffers their steps use (views, no copies).
    ``z`` and ``h`` are one buffer (relu in place), as are ``g`` and ``gz`` (the mask applied in place)."""

    rows: slice
    x: torch.Tensor
    y: torch.Tensor
    ev: EvalSpec
    z: torch.Tensor
    h: torch.Tensor
    g: torch.Tensor
    gz: torch.Tensor
    r: torch.Tensor
    grad: torch.Tensor
    grad_w: torch.Tensor
    grad_a: torch.Tensor
    kept_w: torch.Tensor
    kept_a: torch.Tensor
    scratch_w: torch.Tensor
    scratch_a: torch.Tensor
    scratch_out: torch.Tensor
    test_h: torch.Tensor | None
    test_out: torch.Tensor | None
    test_err: torch.Tensor | None


class TwoLayerGDLoop:
    """Fused full-batch GD for the two-layer ReLU network of Sec. 5.3, N(x) = sum_j a_j relu(<w_j, x>), both layers
    trained, for B independent members at once: x (B, n, d), y (B, n, k), W (B, m, d), a (B, m, k).

    One step of Eq. (2) on theta = (W, a), with Z = X W^T (B, n, m), H = relu(Z), R = H a - Y:

        L_n(theta_t) = ||R||^2 / (2n)                     (Eq. 1's data term; recorded at every step)
        a_{t+1} = (1 - eta lambda) a_t - (eta/n) H^T R
        W_{t+1} = (1 - eta lambda) W_t - (eta/n) ((R a_t^T) * 1[Z > 0])^T X

    which is ``torch.optim.SGD(lr=eta, weight_decay=lambda)`` on the autograd gradient of Eq. (1) (relu'(0) = 0,
    as in torch), equal to it up to rounding. Four batched matrix products a step (n m (2d + 3k) multiply-adds)
    into preallocated buffers. Under DDP each rank holds a shard of the rows: the gradient sums and the training
    loss are all-reduced (one all-reduce a step), so every rank follows the single-process trajectory.

    Members are stepped in groups of ``group`` (None: all of them on a GPU; on a CPU as many as keep a step's
    numbers within ``CPU_GROUP_BYTES``, one at a time at the paper's sizes), each group through the whole call.
    On a CPU (one process, no DDP) the groups are shared among ``workers`` Python threads (None: torch's intra-op
    thread count at each call, ``torch.get_num_threads()``), each stepping its own members with one intra-op thread:
    parallel across members instead of inside the small matrix products of one member, so T threads do not
    oversubscribe T cores. A member's operations are the same in every schedule, so its iterates are bit for bit
    those of its single run with ``group=1`` (matrix products at the paper's sizes give the same bits on 1 and 2
    intra-op threads).

    Test side: (1/N) sum_i ||N(x_i) - y_i||^2 on the test set costs N m (d + k) multiply-adds, about five steps
    at the paper's defaults, so it is evaluated sparsely (package docstring): at the evaluated steps the state is
    kept, and when a threshold is crossed before the next evaluated step, that block is replayed from the kept
    state on scratch buffers with an evaluation at every step (the same operations, so the same iterates).
    Under DDP the decision to replay is all-reduced, so every rank replays (and all-reduces) the same blocks.

    With ``evaluation.two_layer`` (``data.population=exact``) the test side is the closed-form population loss
    E||N(x) - f*(x)||^2 (theory/two_layer_population.py: arc-cosine kernel, float64), no test set: about m^2 d / 2
    multiply-adds plus m^2 / 2 kernel entries (``_two_layer_eval_cost``), 30-70 steps at the defaults, so s is
    larger (133 there, against 20). Every rank computes it from the full parameters, so it needs no all-reduce.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        width: int,
        lr: float,
        weight_decay: float,
        n_global: int,
        evaluation: EvalSpec,
        max_steps_per_call: int,
        reduce: Reduce = _identity,
        eval_every: int = 0,
        group: int | None = None,
        workers: int | None = None,
    ):
        b, n, d = x.shape  # n: this rank's rows
        k, m = y.shape[2], width
        self.y, self.k, self.width = y, k, m
        self.decay = 1.0 - lr * weight_decay
        self.step_scale = -lr / n_global
        self.n_global = n_global
        self.ev = evaluation
        self.reduce = reduce
        self.distributed = reduce is not _identity
        # the global n, so that every DDP world size evaluates the same steps
        self.every = _every(
            eval_every, evaluation, n_global * m * (2 * d + 3 * k), _two_layer_eval_cost(evaluation, m, d, k)
        )
        if group is None:
            per_member = (2 * n * m + m * (d + k) + n * (d + k)) * x.element_size()
            group = b if x.device.type != "cpu" else max(1, CPU_GROUP_BYTES // per_member)
        self.group = g = int(min(max(1, group), b))
        if workers is not None and int(workers) < 1:
            raise ValueError(f"TwoLayerGDLoop: workers must be >= 1 or None (torch's thread count), got {workers!r}")
        self.workers = None if workers is None else int(workers)
        opts = {"dtype": x.dtype, "device": x.device}
        self.outputs = torch.empty(max_steps_per_call, b, n, k, **opts)  # N(x_i; theta_t) of every step
        self._inputs = (x, y, evaluation, opts)
        self.groups = self._make_groups(range(0, b, g))
        self._shares: dict[int, list[list[_Group]]] = {}  # by thread count: each share on its own buffers

    def _make_groups(self, starts: range) -> list[_Group]:
        """The groups of members starting at ``starts`` (``group`` members each, fewer at the end), on one new
        set of step buffers: groups that share a set are stepped one after another, never at once."""
        x, y, evaluation, opts = self._inputs
        b, n, d = x.shape
        k, m, g = y.shape[2], self.width, self.group
        n_test = 0 if evaluation.x_test is None or evaluation.two_layer is not None else evaluation.x_test.shape[1]
        z_h, g_gz = torch.empty(g, n, m, **opts), torch.empty(g, n, m, **opts)
        acts = [z_h, z_h, g_gz, g_gz]  # z, h, g, gz: in-place relu and mask keep a member's step in L2
        r = torch.empty(g, n, k, **opts)
        grad = torch.empty(g * m * (d + k), **opts)  # DDP: both layers' gradient sums, one all-reduce a step
        # kept state at the last evaluated step, and scratch state for replays
        kept_w, scratch_w = torch.empty(g, m, d, **opts), torch.empty(g, m, d, **opts)
        kept_a, scratch_a = torch.empty(g, m, k, **opts), torch.empty(g, m, k, **opts)
        scratch_out = torch.empty(g, n, k, **opts)
        tests = [torch.empty(g, n_test, *shape, **opts) if n_test else None for shape in ((m,), (k,), (k,))]
        groups = []
        for g0 in starts:
            rows = slice(g0, min(b, g0 + g))
            s = rows.stop - g0

            def cut(t: torch.Tensor | None, rows: slice = rows) -> torch.Tensor | None:
                return None if t is None else t[rows]

            grad_s = grad[: s * m * (d + k)]  # [W part of the s members | a part], each contiguous
            ev = dataclasses.replace(evaluation)
            ev.x_test, ev.y_test, ev.test_labels = cut(ev.x_test), cut(ev.y_test), cut(ev.test_labels)
            ev.train_labels = cut(ev.train_labels)
            groups.append(
                _Group(
                    rows,
                    x[rows],
                    y[rows],
                    ev,
                    *(t[:s] for t in acts),
                    r[:s],
                    grad_s,
                    grad_s[: s * m * d].view(s, m, d),
                    grad_s[s * m * d :].view(s, m, k),
                    kept_w[:s],
                    kept_a[:s],
                    scratch_w[:s],
                    scratch_a[:s],
                    scratch_out[:s],
                    *(None if t is None else t[:s] for t in tests),
                )
            )
        return groups

    def _step(self, gr: _Group, w: torch.Tensor, a: torch.Tensor, out: torch.Tensor) -> None:
        """theta_t -> theta_{t+1} in place for one group; ``out`` receives N(X; theta_t)."""
        z, h, g, gz, r, x = gr.z, gr.h, gr.g, gr.gz, gr.r, gr.x
        torch.bmm(x, w.transpose(1, 2), out=z)
        torch.clamp(z, min=0, out=h)  # relu
        torch.bmm(h, a, out=out)
        torch.sub(out, gr.y, out=r)
        if self.k == 1:
            torch.mul(r, a.transpose(1, 2), out=g)  # the outer product R a^T, elementwise (exact products)
        else:
            torch.bmm(r, a.transpose(1, 2), out=g)
        torch.ops.aten.threshold_backward.grad_input(g, h, 0, grad_input=gz)  # * 1[Z > 0], as autograd's relu
        decay, scale = self.decay, self.step_scale
        if self.distributed:
            torch.bmm(h.transpose(1, 2), r, out=gr.grad_a)
            torch.bmm(gz.transpose(1, 2), x, out=gr.grad_w)
            self.reduce(gr.grad)
            a.mul_(decay).add_(gr.grad_a, alpha=scale)
            w.mul_(decay).add_(gr.grad_w, alpha=scale)
        else:
            a.baddbmm_(h.transpose(1, 2), r, beta=decay, alpha=scale)  # uses H and R of theta_t, before W moves
            w.baddbmm_(gz.transpose(1, 2), x, beta=decay, alpha=scale)

    def _evaluate(self, gr: _Group, w: torch.Tensor, a: torch.Tensor) -> dict[str, torch.Tensor]:
        """Test side of one group's (W, a): {"loss": (G,), "test_acc" or "test_surrogate_acc": (G,)}; with the
        closed form (``ev.two_layer``) the population loss L(W, a) alone, computed in float64 and stored in the
        run's dtype (a float32 record holds it to 6e-8 relative)."""
        if self.ev.two_layer is not None:
            return {"loss": self.ev.two_layer.loss(w, a, gr.rows).to(w.dtype)}
        ev, hid, out, err = gr.ev, gr.test_h, gr.test_out, gr.test_err
        torch.bmm(ev.x_test, w.transpose(1, 2), out=hid)
        hid.clamp_(min=0)
        torch.bmm(hid, a, out=out)
        torch.sub(out, ev.y_test, out=err)
        sq = err.square().sum(dim=2)  # (G, N)
        vals = {"loss": sq.mean(dim=1)}
        if ev.test_labels is not None:
            vals["test_acc"] = (out.argmax(dim=2) == ev.test_labels).to(out.dtype).mean(dim=1)
        elif ev.surrogate_eps is not None:
            vals["test_surrogate_acc"] = (sq <= ev.surrogate_eps).to(out.dtype).mean(dim=1)
        return vals

    def _must_replay(self, prev: dict[str, torch.Tensor], now: dict[str, torch.Tensor]) -> bool:
        crossed = _crossed(prev, now, self.ev)
        if self.distributed:  # every rank must take the same branch: replays all-reduce gradients
            crossed = self.reduce(crossed.to(self.outputs.dtype)) > 0
        return bool(crossed.any())  # a host sync once per evaluated step

    def _replay(self, gr: _Group, i0: int, i1: int, record: Callable[[int, dict[str, torch.Tensor]], None]) -> None:
        """Re-run GD from the state kept at call index i0 and evaluate every iterate strictly before i1."""
        w, a = gr.scratch_w, gr.scratch_a
        w.copy_(gr.kept_w)
        a.copy_(gr.kept_a)
        for i in range(i0 + 1, i1):
            self._step(gr, w, a, gr.scratch_out)
            record(i, self._evaluate(gr, w, a))

    @torch.no_grad()
    def run(self, w: torch.Tensor, a: torch.Tensor, start: int, steps: int, wanted: np.ndarray | None = None) -> Chunk:
        """Advance W (B, m, d) and a (B, m, k) in place by ``steps`` GD steps; records of theta_start...
        ``wanted``: absolute steps whose test side must be evaluated (the loggers' schedule)."""
        dtype, dev, b = w.dtype, w.device, w.shape[0]
        points = eval_points(start, steps, self.every, wanted).tolist()
        records: dict[str, torch.Tensor] = {}
        evaluated = torch.zeros(steps, b, dtype=torch.bool)
        lock = threading.Lock()  # guards the creation of ``records`` entries; the writes are to disjoint columns

        def run_groups(groups: list[_Group]) -> None:
            for gr in groups:
                self._run_group(gr, w[gr.rows], a[gr.rows], steps, points, records, evaluated, (dtype, dev, b), lock)

        workers = self._workers(dev)
        if workers <= 1:
            run_groups(self.groups)
        else:
            _one_thread_each(run_groups, self._shares_for(workers))
        res = self.outputs[:steps] - self.y  # (K, B, n, k)
        train = self.reduce(res.square().sum(dim=(2, 3))) / (2 * self.n_global)
        extras = {}
        if self.ev.train_labels is not None:
            correct = (self.outputs[:steps].argmax(dim=3) == self.ev.train_labels).sum(dim=2)
            extras["train_acc"] = self.reduce(correct.to(dtype)) / self.n_global
        test = records.pop("loss")
        extras.update(records)
        return Chunk(start, train, test, extras, None if bool(evaluated.all()) else evaluated.to(dev))

    def _workers(self, device: torch.device) -> int:
        """Threads that share the member groups in this call: 1 on a GPU, under DDP or with one group; else
        ``workers`` (or torch's intra-op thread count), at most one per group."""
        if device.type != "cpu" or self.distributed or len(self.groups) < 2:
            return 1
        want = torch.get_num_threads() if self.workers is None else self.workers
        return max(1, min(want, len(self.groups)))

    def _shares_for(self, workers: int) -> list[list[_Group]]:
        """The groups cut into ``workers`` contiguous shares, as equal as they divide, each share on its own step
        buffers (the first on those of ``self.groups``); made once per thread count."""
        if workers not in self._shares:
            count, g = len(self.groups), self.group
            cut = [i * count // workers for i in range(workers + 1)]
            first = self.groups[: cut[1]]
            rest = [self._make_groups(range(i * g, j * g, g)) for i, j in zip(cut[1:-1], cut[2:], strict=True)]
            self._shares[workers] = [first, *rest]
        return self._shares[workers]

    def _run_group(
        self,
        gr: _Group,
        w: torch.Tensor,
        a: torch.Tensor,
        steps: int,
        points: list[int],
        records: dict[str, torch.Tensor],
        evaluated: torch.Tensor,
        like: tuple[torch.dtype, torch.device, int],
        lock: threading.Lock,
    ) -> None:
        """One group of members through the whole call; test-side values into the (K, B) ``records``."""
        dtype, dev, b = like
        outs = [o[gr.rows] for o in self.outputs.unbind(0)[:steps]]

        def record(i: int, vals: dict[str, torch.Tensor]) -> None:
            for key, v in vals.items():
                if key not in records:
                    with lock:
                        if key not in records:
                            records[key] = torch.full((steps, b), math.nan, dtype=dtype, device=dev)
                records[key][i, gr.rows] = v
            evaluated[i, gr.rows] = True

        sparse = self.every > 1
        nxt, prev, prev_i = 0, None, 0
        for i in range(steps):
            if nxt < len(points) and i == points[nxt]:
                vals = self._evaluate(gr, w, a)
                if prev is not None and i > prev_i + 1 and self._must_replay(prev, vals):
                    self._replay(gr, prev_i, i, record)
                record(i, vals)
                if sparse:
                    gr.kept_w.copy_(w)
                    gr.kept_a.copy_(a)
                    prev, prev_i = vals, i
                nxt += 1
            self._step(gr, w, a, outs[i])


def _one_thread_each(work: Callable[[list], None], shares: list[list]) -> None:
    """``work(share)`` for every share at once, each in its own thread with one torch intra-op thread (the first in
    the calling thread); torch's thread count is restored afterwards. torch ops release the GIL, so the threads'
    matrix products run in parallel. The first exception of any share is raised after all have ended."""
    errors: list[BaseException] = []

    def guarded(share: list) -> None:
        try:
            torch.set_num_threads(1)  # this thread's own OpenMP/MKL setting (set before its first op)
            work(share)
        except BaseException as e:  # re-raised in the calling thread
            errors.append(e)

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # also the default of threads that start now
    try:
        threads = [threading.Thread(target=guarded, args=(s,), name="gd-members") for s in shares[1:]]
        for t in threads:
            t.start()
        guarded(shares[0])
        for t in threads:
            t.join()
    finally:
        torch.set_num_threads(before)
    if errors:
        raise errors[0]
