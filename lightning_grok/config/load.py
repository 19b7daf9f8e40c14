"""Reading a run configuration: the schema's defaults <- a YAML file <- ``key=value`` overrides, then the rules.

Each layer is merged into the typed schema (schema.py), so OmegaConf refuses unknown keys, wrong types and values
outside a closed set as they arrive, and the message names the file or the override. A key renamed since
(``schema.RENAMED_KEYS``) is read under its new name, with one deprecation line on stderr.
"""

from __future__ import annotations

import copy
import os
import stat
import sys
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lightning_grok.config.rules import validate
from lightning_grok.config.schema import RENAMED_KEYS, ConfigError, explain, schema


class _StrictLoader(yaml.SafeLoader):
    """yaml's SafeLoader, refusing a key given twice in one mapping (plain yaml keeps the last one silently)."""

    source = "<config>"

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        self._check_duplicates(node, "")
        return self.construct_document(node)

    def _check_duplicates(self, node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._check_duplicates(item, f"{prefix}[{i}].")
        if not isinstance(node, yaml.MappingNode):
            return
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *anchor' keys may be overridden explicitly
                continue
            key = self.construct_object(key_node, deep=True) if isinstance(key_node, yaml.ScalarNode) else None
            line = key_node.start_mark.line + 1
            if key is not None and key in seen:
                raise ConfigError(
                    f"config file {self.source}: key '{prefix}{key}' appears twice (lines {seen[key]} and {line}); "
                    "allowed: each key once"
                )
            seen[key] = line
            self._check_duplicates(value_node, f"{prefix}{key}.")


def _read_yaml(path: Path) -> Any:
    """The parsed YAML file at ``path``; ConfigError naming the file when it is missing, unreadable, not UTF-8
    text, not YAML, or has a duplicate key."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:  # a folder on the way that may not be searched, a broken link loop
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        # a directory; a FIFO or a device would block or never end
        raise ConfigError(f"config file {path} is not a regular file (allowed: a YAML file)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"config file {path} is not UTF-8 text: byte 0x{data[exc.start]:02x} at line {line} "
            f"(offset {exc.start}); allowed: a UTF-8 YAML file"
        ) from None
    loader = _StrictLoader(text)
    loader.source = str(path)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse config file {path}: {_yaml_problem(exc)}") from None
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.YAMLError, where: bool = True) -> str:
    """A YAML error on one line: what is wrong and (``where``) its line and column in the file."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None) if where else None
    context = getattr(exc, "context", None)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{at}" + (f" ({context})" if context else "")


def _check_groups(raw: dict, schema: DictConfig, source: str, prefix: str = "") -> None:
    """A group of keys (``optim``, ``data``...) must be given a mapping, never a single value (``optim=3``)."""
    for key, value in raw.items():
        if not isinstance(key, str) or key not in schema:
            continue  # the merge reports unknown keys, with the allowed ones
        node = schema[key]
        if not isinstance(node, DictConfig):
            continue
        full = f"{prefix}{key}"
        if not isinstance(value, dict):
            keys = list(node.keys())
            raise ConfigError(
                f"{source}: key '{full}' is a group of keys ({', '.join(keys)}), got the single value {value!r} "
                f"(allowed: a mapping, or one of its keys, e.g. {full}.{keys[0]}=...)"
            )
        _check_groups(value, node, source, f"{full}.")


def parse_overrides(overrides: list[str]) -> list[str]:
    """Accept ``key=value`` and W&B's ``--key=value`` forms."""
    cleaned = []
    for item in overrides:
        item = item[2:] if item.startswith("--") else item
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ConfigError(f"override {item!r} is not of the form key=value")
        cleaned.append(item)
    return cleaned


def _parse_override(item: str) -> DictConfig:
    """One ``key=value`` as a config; ConfigError naming the key when the value is not valid YAML (``[1``)."""
    key, value = item.split("=", 1)
    try:
        return OmegaConf.from_dotlist([item])
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"override: key '{key}' has unparseable value {value!r}: {_yaml_problem(exc, where=False)} "
            "(allowed: a YAML scalar, e.g. 1e-3, true, text; or a list such as [a, b])"
        ) from None
    except OmegaConfBaseException as exc:
        raise explain(exc, "override") from None


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | None = None, *, verb: str | None = "fit"
) -> DictConfig:
    """Schema <- YAML file <- overrides, then validation. Raises ConfigError on bad input.

    Interpolations are resolved here, so ``seed=${nope}`` fails now, not mid-run. ``verb`` (``"fit"``,
    ``"theory"``, or None to skip) selects the memory estimate checked against the machine's
    (``resources.estimate_memory``).
    """
    cfg = schema()
    if path is not None:
        path = Path(path)
        raw = _read_yaml(path)
        if raw is not None and not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(raw).__name__}")
        raw = _renamed(raw or {}, f"config file {path}")
        _check_groups(raw, cfg, f"config file {path}")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.create(raw))
        except OmegaConfBaseException as exc:
            raise explain(exc, str(path)) from None
        except (ValueError, TypeError) as exc:  # a YAML value OmegaConf cannot hold (a date, a binary)
            raise ConfigError(f"config file {path}: {exc}") from None
    for item in parse_overrides(overrides or []):
        layer = _parse_override(item)
        tree = OmegaConf.to_container(layer)
        renamed = _renamed(tree, "override")
        if renamed is not tree:
            layer = OmegaConf.create(renamed)
        _check_groups(renamed, cfg, "override")
        try:
            cfg = OmegaConf.merge(cfg, layer)
        except OmegaConfBaseException as exc:
            raise explain(exc, "override") from None
    OmegaConf.set_struct(cfg, True)
    validate(cfg, verb=verb)
    return cfg


_warned: set[str] = set()  # old keys whose deprecation line this process has printed


def _renamed(tree: dict, source: str) -> dict:
    """``tree`` (a YAML file's mapping, or one override's) with each key of ``RENAMED_KEYS`` moved to its new
    name, and one deprecation line on stderr per old key and process; ``tree`` itself when it holds none.
    ConfigError when the old and the new name are both given."""
    for old, new in RENAMED_KEYS.items():
        if _find(tree, old) is _ABSENT:
            continue
        if _find(tree, new) is not _ABSENT:
            raise ConfigError(
                f"{source}: key '{old}' is the old name of '{new}' and both are given (allowed: {new} only)"
            )
        tree = copy.deepcopy(tree)  # the caller's mapping stays as read
        *parents, leaf = old.split(".")
        node = tree
        for p in parents:
            node = node[p]
        value = node.pop(leaf)
        *parents, leaf = new.split(".")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
        if old not in _warned:
            _warned.add(old)
            print(
                f"lightning-grok: warning: config key '{old}' is now '{new}' (same values); {source} uses the old "
                "name, which still works",
                file=sys.stderr,
                flush=True,
            )
    return tree


_ABSENT = object()


def _find(tree: Any, dotted: str) -> Any:
    """The value at the dotted key in nested mappings, or ``_ABSENT``."""
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return _ABSENT
        tree = tree[part]
    return tree


def to_container(cfg: DictConfig) -> dict:
    """The resolved config as plain Python (for config.yaml, phases.json and W&B): each Enum member as its
    string value, so what is written reads exactly as before the schema had Enums."""
    return _plain(OmegaConf.to_container(cfg, resolve=True))


def _plain(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _plain(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_plain(v) for v in tree]
    return tree.value if isinstance(tree, Enum) else tree
