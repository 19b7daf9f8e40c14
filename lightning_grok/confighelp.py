"""Every config key, documented from the schema itself: type, default, allowed values, one line of meaning.

Each of these is written once, in config/schema.py: the type and the default are the dataclass field's, the
meaning its ``metadata["help"]``, the allowed values the Enum of a closed set (else the range rule of
config/rules.py). ``lightning-grok fit --help`` and ``lightning-grok config`` print the table, so no key has to
be found by mistyping it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum

from lightning_grok.config import RENAMED_KEYS, allowed
from lightning_grok.config.schema import fields


@dataclass(frozen=True)
class KeyDoc:
    key: str  # dotted, as overrides write it
    type: str
    default: str
    allowed: str
    meaning: str


def _type_name(tp: object) -> str:
    text = tp if isinstance(tp, str) else getattr(tp, "__name__", str(tp))
    return str(text).replace("typing.", "").replace("NoneType", "None")


def describe_keys() -> list[KeyDoc]:
    """One KeyDoc per leaf key of ``RunConfig``, in schema order."""
    rules = allowed()
    docs: list[KeyDoc] = []
    for key, (hint, f) in fields().items():
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        shown = repr(default.value if isinstance(default, Enum) else default)
        docs.append(KeyDoc(key, _type_name(hint), shown, rules.get(key, ""), f.metadata.get("help", "")))
    return docs


def format_keys() -> str:
    """The keys as a plain-text table for ``--help``: key, type, default, then allowed values and meaning."""
    docs = describe_keys()
    kw = max(len(d.key) for d in docs)
    tw = min(18, max(len(d.type) for d in docs))
    lines = ["config keys (override any with key=value; YAML files set the same keys):"]
    for d in docs:
        head = f"  {d.key:<{kw}}  {d.type:<{tw}}  default {d.default}"
        lines.append(head)
        detail = "; ".join(p for p in (d.meaning, f"allowed: {d.allowed}" if d.allowed else "") if p)
        if detail:
            lines.append(f"  {'':<{kw}}    {detail}")
    renamed = ", ".join(f"{old} (now {new})" for old, new in RENAMED_KEYS.items())
    lines.append(f"renamed keys, still read under the old name with a warning: {renamed}")
    return "\n".join(lines)
