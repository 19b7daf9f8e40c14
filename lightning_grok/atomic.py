"""Atomic file writes: readers (another agent, a resumed job) see the old file or the new one, never half.

Files are created with the permissions of an ordinary ``open()`` (0666 less the umask, so 0644 by default):
``tempfile.mkstemp`` alone makes them 0600, which would hide a team's shared sweep directory from the group.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[IO[bytes]], None], keep_previous: Path | None = None) -> None:
    """Call ``write(f)`` on a temporary file in the same folder, fsync it, then rename it over ``path``
    (first keeping the current ``path``, if any, as ``keep_previous`` when given; ``path`` never goes missing).

    If anything fails (a full disk, a signal turned into an exception) the temporary file is removed and
    ``path`` keeps its previous content. An OSError names ``path`` (``exc.filename``): a failed write or fsync
    names no file of its own, and the temporary file's name would mean nothing to the reader."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        _raise_naming(exc, path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        if keep_previous is not None and path.exists():
            _keep(path, Path(keep_previous))
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            _raise_naming(exc, path)
        raise


def _raise_naming(exc: OSError, path: Path) -> None:
    """Raise ``exc`` again with ``path`` as its file name (same errno, so the same OSError subclass)."""
    if exc.errno is None:
        raise exc
    raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc


def _keep(path: Path, previous: Path) -> None:
    """Make ``previous`` a second name of ``path``'s current file, atomically, so a reader (or a resume after
    kill -9) always finds both files. File systems without hard links fall back to a rename, which leaves
    ``path`` missing until the new file is renamed over it."""
    link = previous.with_name(f".{previous.name}.link")
    try:
        link.unlink(missing_ok=True)
        os.link(path, link)
        os.replace(link, previous)
    except OSError:
        link.unlink(missing_ok=True)
        os.replace(path, previous)


def atomic_write_text(path: Path, text: str) -> None:
    """``text`` (UTF-8) written atomically to ``path``."""
    atomic_write(path, lambda f: f.write(text.encode()))


def json_safe(obj):
    """``obj`` as strict JSON: nan -> null, +-inf -> "inf" / "-inf", numpy and torch values -> Python, paths ->
    strings, keys -> strings."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy arrays and scalars, tensors
        return json_safe(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item):
        return json_safe(obj.item())
    return obj


def atomic_write_json(path: Path, obj) -> None:
    """JSON with non-finite floats and tensors made safe, written atomically."""
    atomic_write_text(path, json.dumps(json_safe(obj), indent=2) + "\n")
