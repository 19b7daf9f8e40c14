"""The ``fit`` and ``theory`` commands: their argument parsers and ``main``, below the CLI and the sweep agent.

``lightning_grok.cli`` adds these verbs to its parser and hands ``fit``/``theory`` argument lists here; the
sweep agent's forked children (``sweep.worker``) and batch children (``batch.config_of``) call this module
directly, so neither imports the CLI, which imports them (the sweep and reproduce verbs).

Overrides use the ``key=value`` form that W&B sweeps pass with ``${args_no_hyphens}``; ``--key=value``
(W&B's ``${args}``) is accepted too.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from omegaconf import OmegaConf

from lightning_grok.config import ConfigError, load_config
from lightning_grok.confighelp import format_keys
from lightning_grok.exit_codes import EXIT_CONFIG, EXIT_OK
from lightning_grok.tables import text_table

PROG = "lightning-grok"
RUN_VERBS = ("fit", "theory")  # the verbs that take CONFIG [key=value ...]; what a sweep run's command may fork


def add_run_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``fit`` and ``theory`` verbs to a parser's subparsers."""
    keys = format_keys()
    f = subparsers.add_parser(
        "fit",
        help="train one run and measure its phase transitions",
        description="Train one run and measure t1, t2 and the grokking time against the theory.",
        epilog=keys,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t = subparsers.add_parser(
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


def parser() -> argparse.ArgumentParser:
    """A parser of the ``fit`` and ``theory`` verbs only (the CLI's full parser adds the others)."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_parsers(p.add_subparsers(dest="verb", required=True))
    return p


def parse(argv: list[str], p: argparse.ArgumentParser | None = None) -> tuple[argparse.Namespace, list[str]]:
    """(parsed arguments, every ``key=value`` override) of ``fit|theory CONFIG ...``: an override may stand
    anywhere, in W&B's ``key=value`` or ``--key=value`` form. ``p``: the parser to use (default ``parser()``)."""
    overrides = [a for a in argv[1:] if "=" in a]
    args = (p or parser()).parse_args([argv[0]] + [a for a in argv[1:] if "=" not in a])
    return args, list(args.overrides) + overrides


def main(argv: list[str], p: argparse.ArgumentParser | None = None) -> int:
    """Run ``fit|theory CONFIG [key=value ...]``; returns the exit status (``exit_codes``: fit's, or
    EXIT_CONFIG for a config the schema refuses)."""
    try:
        args, overrides = parse(argv, p)
        cfg = load_config(args.config, overrides, verb=args.verb)
        if args.print_config:
            print(OmegaConf.to_yaml(cfg, resolve=True), end="")
            return EXIT_OK
        if args.verb == "fit":
            from lightning_grok.experiment import fit
            from lightning_grok.wandb_logger import run_name

            if cfg.wandb.name is None:
                cfg.wandb.name = run_name(cfg, overrides)

            status, _ = fit(cfg, Path(args.config).stem)
            return status
        from lightning_grok.theory.predict import predictions

        out = predictions(cfg)
        print(theory_json(out) if args.json else format_theory(out))
        return EXIT_OK
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG


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
    """The text ``lightning-grok theory`` prints: the run's quantities, the exact t1 and t2, then one line per
    bound with whether its hypotheses hold (and each one that fails)."""
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
    ]
    rows: list[list[object]] = [["bound", "value", "hypotheses"]]
    for name, b in out["bounds"].items():
        rows.append([name, fmt(b["value"]), "met" if b["hypotheses_met"] else "NOT met"])
        rows += [["", "", f"- fails: {h['statement']}"] for h in b["hypotheses"] if h["required"] and not h["met"]]
    return "\n".join(lines + text_table(rows, "<>", (26, 14)))
