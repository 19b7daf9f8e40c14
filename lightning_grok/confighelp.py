"""Every config key, documented from the schema itself: type, default, allowed values, one line of meaning.

The meaning of a key is the comment on its line in ``config.py`` (one place to write it); the type and
default come from the dataclass field, the allowed values from the validation rules. ``lightning-grok fit
--help`` and ``lightning-grok config`` print the table, so no key has to be found by mistyping it.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import tokenize
import typing
from dataclasses import dataclass

from lightning_grok import config as config_module


@dataclass(frozen=True)
class KeyDoc:
    key: str  # dotted, as overrides write it
    type: str
    default: str
    allowed: str
    meaning: str


def _line_comments() -> dict[int, str]:
    """Source line number -> the comment on that line, for config.py."""
    source = inspect.getsource(config_module)
    comments = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    return comments


def _field_lines(cls: type) -> dict[str, int]:
    """Field name -> line number (in config.py) of its definition in dataclass ``cls``."""
    lines, start = inspect.getsourcelines(cls)
    out = {}
    for i, text in enumerate(lines):
        name, colon, _ = text.strip().partition(":")
        if colon and name.isidentifier():
            out.setdefault(name, start + i)
    return out


def _type_name(tp: object) -> str:
    text = tp if isinstance(tp, str) else getattr(tp, "__name__", str(tp))
    return str(text).replace("typing.", "").replace("NoneType", "None")


def describe_keys() -> list[KeyDoc]:
    """One KeyDoc per leaf key of ``RunConfig``, in schema order."""
    comments = _line_comments()
    allowed = {key: text for key, _, text in config_module._rules()}
    docs: list[KeyDoc] = []

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        lines = _field_lines(cls)
        for f in dataclasses.fields(cls):
            key = f"{prefix}{f.name}"
            hint = hints.get(f.name, f.type)
            if dataclasses.is_dataclass(hint):
                walk(hint, f"{key}.")
                continue
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = "(required)"
            meaning = comments.get(lines.get(f.name, -1), "")
            docs.append(KeyDoc(key, _type_name(hint), repr(default), allowed.get(key, ""), meaning))

    walk(config_module.RunConfig, "")
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
    return "\n".join(lines)
