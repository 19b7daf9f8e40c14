"""lightning-grok: the command line.

  lightning-grok fit CONFIG [key=value ...]              train one run (`fit --help` lists every config key)
  lightning-grok theory CONFIG [key=value ...] [--json]  predictions only: exact t1, t2 and every bound
  lightning-grok fit|theory CONFIG [key=value ...] --print-config   the resolved config, then exit
  lightning-grok reproduce FIGURE [--quick] [key=value]  a figure (fig1..fig7, modular, modular_transformer, all)
  lightning-grok sweep SWEEP.yaml [--count N]            run a W&B sweep file offline (any number of agents)
  lightning-grok sweep-table DIR                         a sweep's table: parameters, t1, t2, bound verdicts

Overrides use the ``key=value`` form that W&B sweeps pass with ``${args_no_hyphens}``; ``--key=value``
(W&B's ``${args}``) is accepted too.

exit status (each one named in lightning_grok/exit_codes.py):
fit: 0 completed; 1 a file could not be written (disk full; earlier results intact);
2 bad input, nothing trained; 3 diverged; 130 stopped by SIGINT, 143 by SIGTERM (checkpoint saved:
run the same command again to resume). sweep: 0 done; 1 gave up or every run failed; 2 bad input;
128 + N stopped by signal N. reproduce: 0 every figure drawn; 1 a file could not be written (a full disk: the
file is named, no half-written file is left) or an agent failed; 2 bad input (an unknown figure, an override
the config schema refuses, --out a file, --from missing or holding no run: nothing made under --out);
4 a figure lacks points (missing, failed or interrupted runs: each panel's count is printed and no figure
file is written; run the same command again to finish them, or pass --partial to draw what there is);
130 stopped by SIGINT, 143 by SIGTERM (every agent stops its runs at a checkpoint, recorded ``killed`` in
the sweep's state.json, and nothing is drawn; the same command resumes them).
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys
from pathlib import Path

from lightning_grok import commands
from lightning_grok.commands import RUN_VERBS, add_run_parsers, format_theory, theory_json
from lightning_grok.config import ConfigError
from lightning_grok.exit_codes import EXIT_CONFIG, EXIT_IO, EXIT_OK, exit_for_signal

__all__ = ["EXIT_CONFIG", "format_theory", "main", "theory_json"]  # the last two live in commands


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lightning-grok", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="verb", required=True)
    add_run_parsers(sub)
    from lightning_grok.reproduce.figures import FIGURES

    r = sub.add_parser(
        "reproduce",
        help="run a paper figure's sweep files with the offline agent, then draw it beside the theory",
        description="Run every panel of FIGURE (its sweep files under sweeps/) through the offline agent into "
        "OUT/FIGURE/, reusing finished runs, then write OUT/FIGURE.png, .pdf, .json and OUT/FIGURE_fits.md "
        "(scaling-law fits). key=value overrides apply to every panel's runs (a list such as "
        "optim.weight_decay=[1e-3,1e-4] replaces a swept grid).",
    )
    r.add_argument("figures", nargs="+", metavar="FIGURE", choices=[*FIGURES, "all"], help=", ".join([*FIGURES, "all"]))
    r.add_argument("--quick", action="store_true", help="laptop size (seconds per figure) instead of the paper's scale")
    r.add_argument("--out", type=Path, default=Path("figures"), help="folder for the figures and the runs (figures)")
    r.add_argument(
        "--from",
        dest="from_dir",
        type=Path,
        default=None,
        help="run nothing: draw from runs made elsewhere (DIR/<sweep name>/, e.g. a SLURM array's sweep "
        "directories, or an earlier --out)",
    )
    r.add_argument("--seeds", type=int, default=None, help="seeds per point (default: the sweep file's)")
    r.add_argument("--agents", type=int, default=1, help="offline agents in parallel on the figure's sweeps (1)")
    r.add_argument(
        "--no-batch",
        dest="batch",
        action="store_false",
        help="train every point in its own GD loop; by default an agent trains the points of a panel that differ "
        "only in lambda, eta, nu^2, label noise, teacher norm or seed as one batched loop (ridge, random features)",
    )
    r.add_argument(
        "--partial",
        action="store_true",
        help="draw a figure whose sweep lacks points (missing or interrupted runs) from what there is; without "
        "it such a figure is not drawn and the exit status is 4",
    )
    r.add_argument(
        "--dry-run",
        action="store_true",
        help="print each panel's runs, their GD steps and an estimated time, then exit (nothing run or written)",
    )
    r.set_defaults(func=_reproduce, overrides=[])
    from lightning_grok.sweep.cli import add_parsers as add_sweep_parsers

    add_sweep_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    try:
        if argv and argv[0] == "reproduce":
            # key=value overrides may stand anywhere among the figure names and options
            overrides = [a for a in argv[1:] if "=" in a and not a.startswith("-")]
            args = parser.parse_args([a for a in argv if a not in overrides])
            args.overrides = overrides
            return args.func(args)
        if argv and argv[0] in RUN_VERBS:
            return commands.main(argv, parser)
        args = parser.parse_args(argv)
        return args.func(args)
    except ConfigError as exc:
        print(f"lightning-grok: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _reproduce(args: argparse.Namespace) -> int:
    """Exit status (see the module's docstring): 0; 1 a file could not be written, or the failed agents'
    status; 2 bad input (nothing run, no folder made); 4 a figure lacks points (not drawn without --partial);
    128 + N stopped by signal N."""
    from lightning_grok.reproduce.run import Stopped, reproduce

    if args.agents < 1:
        raise ConfigError(f"invalid value for '--agents': {args.agents} (allowed: an integer >= 1)")
    if args.dry_run:
        from lightning_grok.reproduce.run import dry_run

        print(dry_run(args.figures, quick=args.quick, seeds=args.seeds, overrides=args.overrides, agents=args.agents))
        return EXIT_OK
    try:
        out = reproduce(
            args.figures,
            args.out,
            quick=args.quick,
            overrides=args.overrides,
            seeds=args.seeds,
            agents=args.agents,
            from_dir=args.from_dir,
            partial=args.partial,
            batch=args.batch,
        )
    except Stopped as exc:
        print(
            f"lightning-grok reproduce: {exc}: the runs it stopped are checkpointed and recorded in their sweep's "
            "state.json; nothing was drawn. Run the same command again to resume.",
            file=sys.stderr,
        )
        return exc.exit_status
    except KeyboardInterrupt:  # before the handlers were in place: nothing had started
        print("lightning-grok reproduce: interrupted; the same command resumes it", file=sys.stderr)
        return exit_for_signal(signal.SIGINT)
    except OSError as exc:  # one line naming the file, e.g. a full disk while a figure is saved
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)
        where = f" {exc.filename}" if exc.filename else ""
        what = f"cannot write{where}" if full else (where.strip() or "input/output")
        print(f"lightning-grok reproduce: error: {what}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_IO
    return max((r["status"] for r in out.values()), key=lambda c: (c != 0, c))


if __name__ == "__main__":
    raise SystemExit(main())
