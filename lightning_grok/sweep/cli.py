"""``lightning-grok sweep`` and ``lightning-grok sweep-table``: argument parsing and exit statuses.

Exit statuses of ``sweep``:

* 0: the agent ran out of points (or reached --count), and at least one run it started produced a result
  (finished, or diverged: divergence is a measured answer), or it started none.
* 1: every run it started failed (none finished or diverged: refused configs, crashes, I/O errors), or it
  gave up (``--max-failures`` unexpected failures in a row), or the state lock could not be had.
* 2: bad input: a bad sweep file (before any run starts), or a ``state.json`` that is damaged or not a
  sweep state (reported in one line naming the file, at start or at the next claim).
* 128+N: stopped by signal N. 130 SIGINT, 143 SIGTERM: the run was stopped (it checkpoints) and recorded
  ``killed``; ``--retry-failed`` resumes it in its directory. 138 SIGUSR1: recorded ``preempted`` and,
  inside SLURM, the job requeued; any agent resumes a preempted point before starting new ones.

``sweep-table`` exits 0, or 2 when the directory holds no readable sweep state.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lightning_grok.exit_codes import EXIT_CONFIG, EXIT_LOCK_TIMEOUT, EXIT_OK
from lightning_grok.sweep.defaults import GRACE_S, HEARTBEAT_EVERY_S, LOCK_TIMEOUT_S, MAX_FAILURES, STALE_AFTER_S
from lightning_grok.sweep.spec import SweepSpecError, default_sweep_dir, load_spec


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sweep`` and ``sweep-table`` verbs to the main parser's subparsers."""
    s = subparsers.add_parser(
        "sweep",
        help="run a W&B sweep file offline with W&B's sweep engine (any number of agents)",
        description="Run a W&B sweep YAML (grid, random, bayes) with no server. Agents started at once, on one "
        "machine or on SLURM nodes sharing a filesystem, split the points through the sweep directory.",
    )
    s.add_argument("sweep_file", help="W&B sweep YAML, e.g. sweeps/fig2_weight_decay.yaml")
    s.add_argument("--count", type=int, default=None, help="at most this many runs from this agent")
    s.add_argument("--sweep-dir", default=None, help="shared sweep directory (default: sweep_runs/<sweep name>)")
    s.add_argument(
        "--retry-failed",
        action="store_true",
        help="also rerun points whose last attempt failed, crashed or was killed (once per agent launch), in the "
        "same run directory, so a run with a checkpoint resumes",
    )
    s.add_argument(
        "--stale-after",
        type=float,
        default=STALE_AFTER_S,
        help="seconds without a heartbeat after which another host's running run counts as crashed "
        f"({STALE_AFTER_S:g})",
    )
    s.add_argument("--heartbeat-every", type=float, default=HEARTBEAT_EVERY_S, help=argparse.SUPPRESS)
    s.add_argument(
        "--grace", type=float, default=GRACE_S, help=f"seconds a run gets after SIGTERM before SIGKILL ({GRACE_S:g})"
    )
    s.add_argument(
        "--max-failures",
        type=int,
        default=MAX_FAILURES,
        help=f"give up after this many unexpected run failures in a row ({MAX_FAILURES}; diverged runs do not count)",
    )
    s.add_argument(
        "--lock-timeout",
        type=float,
        default=LOCK_TIMEOUT_S,
        help=f"seconds to wait for the state lock ({LOCK_TIMEOUT_S:g})",
    )
    s.add_argument(
        "--spawn",
        action="store_true",
        help="start each run in a fresh interpreter instead of a fork of this agent (which imports torch and "
        "Lightning once)",
    )
    s.add_argument(
        "--batch",
        type=int,
        default=1,
        help="claim up to N points at once and train those that differ only in per-member scalars (lambda, eta, "
        "nu^2, label-noise std, teacher norm, seed) as one batched GD loop, each with its own run directory (1: one "
        "point at a time)",
    )
    s.add_argument("--dry-run", action="store_true", help="validate and print the runs' commands, run nothing")
    s.add_argument("--table", action="store_true", help="print the sweep's table when the agent ends")
    s.set_defaults(func=main_sweep)

    t = subparsers.add_parser("sweep-table", help="print a sweep's table: parameters, t1, t2, bound verdicts")
    t.add_argument("sweep_dir", help="the sweep directory (e.g. sweep_runs/fig2_weight_decay)")
    t.add_argument("--all", action="store_true", help="every attempt, not just the latest per point")
    t.add_argument("--json", action="store_true", help="machine-readable rows")
    t.set_defaults(func=main_sweep_table)


def _error(msg: str) -> None:
    print(f"lightning-grok sweep: error: {msg}", file=sys.stderr)


def main_sweep(args: argparse.Namespace) -> int:
    """Validate the sweep file, then run one agent on it. Returns the exit status."""
    from filelock import Timeout

    from lightning_grok.sweep.agent import Agent, AgentOptions
    from lightning_grok.sweep.state import SweepDir, SweepStateError

    if args.count is not None and args.count < 1:
        _error(f"--count must be >= 1, got {args.count}")
        return EXIT_CONFIG
    if args.batch < 1:
        _error(f"--batch must be >= 1, got {args.batch}")
        return EXIT_CONFIG
    try:
        spec = load_spec(args.sweep_file, sweep_dir=args.sweep_dir)
    except SweepSpecError as exc:
        _error(str(exc))
        return EXIT_CONFIG
    for warning in spec.warnings:
        print(f"lightning-grok sweep: warning: {warning}", file=sys.stderr)
    root = Path(args.sweep_dir) if args.sweep_dir else default_sweep_dir(spec.name)
    if args.dry_run:
        points = spec.points()
        kind = "grid points" if spec.method == "grid" else f"sample draws ({spec.method} never runs out)"
        print(f"{spec.path}: {len(points)} {kind}, run directories under {root / 'runs'}")
        for i, point in enumerate(points, 1):
            print(" ".join(spec.argv(point, root.resolve() / "runs" / f"{spec.name}-{i:04d}")))
        return EXIT_OK
    sweep_dir = SweepDir(root, lock_timeout=args.lock_timeout)
    options = AgentOptions(
        count=args.count,
        retry_failed=args.retry_failed,
        stale_after=args.stale_after,
        heartbeat_every=args.heartbeat_every,
        grace=args.grace,
        max_failures=args.max_failures,
        fork=not args.spawn,
        batch=args.batch,
    )
    try:
        sweep_dir.init(spec)
        status = Agent(spec, sweep_dir, options).run()
    except (SweepSpecError, SweepStateError) as exc:
        _error(str(exc))
        return EXIT_CONFIG
    except Timeout:
        _error(f"could not take the lock {sweep_dir.lock.lock_file} within {args.lock_timeout} s")
        return EXIT_LOCK_TIMEOUT
    if args.table:
        from lightning_grok.sweep.table import render

        try:
            print(render(root))
        except SweepStateError as exc:
            _error(str(exc))
            return EXIT_CONFIG
    return status


def main_sweep_table(args: argparse.Namespace) -> int:
    """Print the table of a sweep directory. Returns the exit status."""
    from lightning_grok.sweep.state import SweepStateError
    from lightning_grok.sweep.table import render

    root = Path(args.sweep_dir)
    if not (root / "state.json").is_file():
        print(f"lightning-grok sweep-table: error: no sweep in {root} (state.json missing)", file=sys.stderr)
        return EXIT_CONFIG
    try:
        text = render(root, all_attempts=args.all, as_json=args.json)
    except SweepStateError as exc:
        print(f"lightning-grok sweep-table: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `sweep-table --json | head`: the reader has what it wanted
        # stdout's buffer still holds bytes for the closed pipe; point it at /dev/null so the exit flush is quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK
