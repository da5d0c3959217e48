"""Atomic file writes and schema-checked JSON reads shared by every artifact."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from hwnas.errors import InputError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; an artifact is as readable as any file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode())


def read_json(path: str | os.PathLike, *, what: str = "JSON file") -> Any:
    """Read JSON, turning a missing or malformed file into an InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found", path=str(path))
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid JSON ({exc}); expected a {what}", path=str(path)) from exc


def require(obj: dict, key: str, types: type | tuple[type, ...], *, path: str, what: str) -> Any:
    """Fetch `obj[key]` checking its type; an absent key or a wrong type is an InputError."""
    if not isinstance(obj, dict):
        raise InputError(f"expected a mapping for the {what}, got {type(obj).__name__}", path=path)
    if key not in obj:
        raise InputError(f"missing; the {what} needs it", path=path, field=key)
    value = obj[key]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
        names = " or ".join(t.__name__ for t in _as_tuple(types))
        raise InputError(f"expected {names}, got {type(value).__name__} {value!r}", path=path, field=key)
    return value


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)
