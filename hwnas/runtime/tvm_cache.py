"""A cache of compiled TVM libraries on this machine, keyed by everything that determines the binary.

Compiling a subnet with Relax (legalise, fuse, apply the tuning records, generate and link code)
takes seconds a network; `hwnas export` and `hwnas validate` compile the table's anchor subnet
every run, and a repeated validate compiles the same subnets again. A compiled library is a
function of the ONNX bytes, the input shape, the target string (with the host CPU and cores),
the tuning records (their file's sha256) and the TVM version, so the library written for one key
is the library any later compile of that key would produce.

Where: `$HWNAS_CACHE_DIR/tvm` (default `~/.cache/hwnas/tvm`); `HWNAS_CACHE_DIR=off` turns it off.
Each entry is `<key>.so` with `<key>.json` beside it (how it was made); entries are written to a
temporary name and renamed, so a reader never sees half a library. Beyond MAX_BYTES the least
recently used entries are removed. A cache that cannot be written is skipped, never an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

# bump when what a key maps to changes meaning (the compile pipeline)
CACHE_VERSION = 1
MAX_BYTES = 2 * 1024**3


def cache_dir() -> Path | None:
    """The cache's folder, or None when it is turned off."""
    root = os.environ.get("HWNAS_CACHE_DIR")
    if root is not None and root.strip().lower() in ("", "off", "0", "none"):
        return None
    base = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hwnas"
    return base / "tvm"


def cache_key(onnx_data: bytes, input_shape: Any, target: str, database_sha256: str | None) -> str:
    import tvm

    h = hashlib.sha256()
    for part in (f"v{CACHE_VERSION}", tvm.__version__, target, json.dumps([int(d) for d in input_shape]),
                 database_sha256 or "untuned"):
        h.update(part.encode() + b"\0")
    h.update(hashlib.sha256(onnx_data).digest())
    return h.hexdigest()


def lookup(key: str) -> tuple[str, dict[str, Any]] | None:
    """(library path, how it was made) of a cached entry, or None."""
    folder = cache_dir()
    if folder is None:
        return None
    so, meta = folder / f"{key}.so", folder / f"{key}.json"
    try:
        made = json.loads(meta.read_text())
        if not so.is_file():
            return None
        os.utime(so)  # recently used
    except (OSError, ValueError):
        return None
    return str(so), made


def store(key: str, compiled: Any) -> str | None:
    """Write `compiled` (a CompiledModel for this machine) under `key`; its library path, or None."""
    folder = cache_dir()
    if folder is None:
        return None
    from hwnas.runtime.tvm import export_library

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder, prefix=".writing-") as tmp:
            library = export_library(compiled, Path(tmp) / "model")
            if library.so is None:
                return None
            made = {"target": compiled.target, "tune_trials": compiled.tune_trials, "input_dtype": compiled.input_dtype,
                    "tuning": {k: v for k, v in compiled.tuning.items() if k not in ("work_dir",)},
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            (Path(tmp) / "made.json").write_text(json.dumps(made, default=str))
            os.replace(library.so, folder / f"{key}.so")
            os.replace(Path(tmp) / "made.json", folder / f"{key}.json")  # the entry exists once this lands
        _prune(folder)
    except OSError:
        return None
    return str(folder / f"{key}.so")


def _prune(folder: Path) -> None:
    entries = sorted(folder.glob("*.so"), key=lambda p: p.stat().st_mtime)
    total = sum(p.stat().st_size for p in entries)
    for so in entries:
        if total <= MAX_BYTES:
            break
        total -= so.stat().st_size
        so.with_suffix(".json").unlink(missing_ok=True)
        so.unlink(missing_ok=True)
