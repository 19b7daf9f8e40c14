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
import json
import math
import signal
import sys
from pathlib import Path

from omegaconf import OmegaConf

from lightning_grok.config import ConfigError, load_config
from lightning_grok.confighelp import format_keys
from lightning_grok.exit_codes import EXIT_CONFIG, EXIT_IO, EXIT_OK, exit_for_signal


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lightning-grok", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="verb", required=True)
    keys = format_keys()
    f = sub.add_parser(
        "fit",
        help="train one run and measure its phase transitions",
        description="Train one run and measure t1, t2 and the grokking time against the theory.",
        epilog=keys,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t = sub.add_parser(
        "theory",
        help="print the theory's predictions without training",
        description="Exact t1 and t2 and every bound with its hypotheses, from the tensors a run would train on.",
        epilog=keys,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for verb in (f, t):
        verb.add_argument("config", help="YAML config file (see configs/)")
        verb.add_argument(
            "overrides", nargs="*", default=[], help="key=value overrides, e.g. optim.weight_decay=1e-5 seed=3"
        )
        verb.add_argument(
            "--print-config", action="store_true", help="print the resolved config (YAML) of this command and exit"
        )
    t.add_argument("--json", action="store_true", help="machine-readable output")
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
        if not argv or argv[0] not in ("fit", "theory"):
            args = parser.parse_args(argv)
            return args.func(args)
        # every key=value (or W&B's --key=value) is an override, wherever it stands
        overrides = [a for a in argv[1:] if "=" in a]
        args = parser.parse_args([argv[0]] + [a for a in argv[1:] if "=" not in a])
        cfg = load_config(args.config, list(args.overrides) + overrides, verb=args.verb)
        if args.print_config:
            print(OmegaConf.to_yaml(cfg, resolve=True), end="")
            return EXIT_OK
        if args.verb == "fit":
            from lightning_grok.experiment import fit
            from lightning_grok.wandb_logger import run_name

            if cfg.wandb.name is None:
                cfg.wandb.name = run_name(cfg, list(args.overrides) + overrides)

            status, _ = fit(cfg, Path(args.config).stem)
            return status
        from lightning_grok.theory.predict import predictions

        out = predictions(cfg)
        print(theory_json(out) if args.json else format_theory(out))
        return EXIT_OK
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


def theory_json(out: dict) -> str:
    """``out`` as strict JSON (RFC 8259 has no NaN or Infinity): a non-finite number becomes null, and the
    top-level ``notes`` list says which key held what, e.g. ``exact.train_loss_limit is inf``."""
    notes: list[str] = []

    def clean(value, key: str):
        if isinstance(value, dict):
            return {k: clean(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v, f"{key}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, float) and not math.isfinite(value):
            notes.append(f"{key} is {value} (written as null: JSON has no infinity or NaN)")
            return None
        return value

    strict = clean(out, "")
    strict["notes"] = notes
    return json.dumps(strict, indent=2, default=str, allow_nan=False)


def format_theory(out: dict) -> str:
    if out.get("exact") is None:
        return f"no theory for this run: {out.get('note')}"
    ex, q = out["exact"], out["quantities"]
    from lightning_grok.results import format_value

    def fmt(v) -> str:
        return format_value(v, digits=6)

    lines = [
        f"n={q['n']} m={q['m']} eta={q['lr']} lambda={q['weight_decay']} nu^2={q['nu2']} eps={q['eps']} c={q['c']}",
        f"lambda+_min(Phi^T Phi)={fmt(q['lam_plus_min'])}  lambda_max={fmt(q['lam_max'])}  L={fmt(q['L'])}  "
        f"b^2={fmt(q['b2'])}  ||theta0||^2={fmt(q['theta0_norm2'])}  ||theta*||^2={fmt(q['theta_star_norm2'])}  "
        f"lambda_min(Sigma)={fmt(q['sigma_min'])} ({q['sigma_min_source']})",
        f"GD stability limit 2/(lambda_max/n + lambda) = {fmt(out['stability']['limit'])} "
        f"({'stable' if out['stability']['stable'] else 'UNSTABLE'})",
        f"exact dynamics: t1 = {fmt(ex['t_overfit'])}, t2 = {fmt(ex['t_generalize'])}, "
        f"grokking time = {fmt(ex['grokking_time'])}",
        f"{'bound':28}{'value':>14}  hypotheses",
    ]
    for name, b in out["bounds"].items():
        missing = [h["statement"] for h in b["hypotheses"] if h["required"] and not h["met"]]
        lines.append(f"{name:28}{fmt(b['value']):>14}  {'met' if b['hypotheses_met'] else 'NOT met'}")
        lines.extend(f"{'':44}- fails: {s}" for s in missing)
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
