"""Atomic file writes, schema-checked JSON reads, and the safety rules every artifact shares.

- Temporary files (`.NAME.pidPID-XXXX.tmp`) and partial folders (`.NAME.partial-pidPID-XXXX`) carry
  the owner's PID; `remove_stale` deletes those whose owner is gone (a run killed with -9), so an
  interrupted run leaves nothing that a later run trips on.
- `artifact_lock(path)`: one writer per artifact (an fcntl advisory lock held for the run, in
  `.NAME.lock` beside it); a second process gets an InputError naming the holder's PID.
- `check_writable(path)`: an output that cannot be written is reported before any long work.
- `write_or_rescue`: a result whose destination fails while it is written is saved in
  `rescue_dir()` and the error says where.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hwnas.errors import InputError, OutputError


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (of any user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale_pattern(name: str) -> re.Pattern[str]:
    # .NAME.pidPID-XXXX.tmp (files), .NAME.partial-pidPID-XXXX (folders), .NAME.old-pidPID (replaced bundles)
    return re.compile(rf"^\.{re.escape(name)}\.(?:pid(\d+)-.*\.tmp|partial-pid(\d+)-.*|old-pid(\d+))$")


def temp_prefix(path: str | os.PathLike, kind: str = "") -> str:
    """The prefix of a temporary entry beside `path` owned by this process (see `remove_stale`)."""
    return f".{Path(path).name}.{kind}pid{os.getpid()}-"


def remove_stale(path: str | os.PathLike) -> list[str]:
    """Delete the temporary files and partial folders of `path` whose owning process is gone."""
    path = Path(path)
    pattern = _stale_pattern(path.name)
    removed = []
    try:
        names = os.listdir(path.parent)
    except OSError:
        return removed
    for entry in names:
        match = pattern.match(entry)
        if not match:
            continue
        pid = int(next(g for g in match.groups() if g is not None))
        if pid == os.getpid() or pid_alive(pid):
            continue
        stale = path.parent / entry
        try:
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale)
            else:
                stale.unlink()
            removed.append(str(stale))
        except FileNotFoundError:
            pass  # another process cleaned it first
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
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


def json_bytes(obj: Any) -> bytes:
    """The bytes of a JSON artifact as hwnas writes them."""
    return (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode()


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, json_bytes(obj))


def rescue_dir() -> Path:
    """Where results go whose destination failed while they were written ($HWNAS_RESCUE_DIR, else
    hwnas-rescued/ in the system's temporary folder)."""
    return Path(os.environ.get("HWNAS_RESCUE_DIR") or Path(tempfile.gettempdir()) / "hwnas-rescued")


def write_or_rescue(path: str | os.PathLike, data: bytes, *, what: str) -> None:
    """`atomic_write_bytes`, except that when `path` cannot be written the data is saved in
    `rescue_dir()` and an OutputError names the failure and where the result now is."""
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        path = Path(path)
        saved = rescue_dir() / f"{path.stem}.pid{os.getpid()}{path.suffix}"
        try:
            atomic_write_bytes(saved, data)
        except OSError as again:
            raise OutputError(f"cannot write the {what} ({exc.strerror or exc}), nor a copy to {saved} "
                              f"({again.strerror or again}); the result is lost", path=str(path)) from exc
        raise OutputError(f"cannot write the {what} ({exc.strerror or exc}); the result is saved at {saved}",
                          path=str(path)) from exc


def check_writable(path: str | os.PathLike, *, field: str | None = None, folder: bool = False) -> None:
    """InputError unless `path` (a file, or with `folder` a folder) can be created or replaced here.

    Checked before long work starts: the nearest existing ancestor must be a writable folder (a
    probe file is created and removed there, which also catches read-only file systems), and an
    existing `path` must be of the right kind.
    """
    path = Path(path)
    if path.exists():
        if folder and not path.is_dir():
            raise InputError("exists and is not a folder", path=str(path), field=field)
        if not folder and path.is_dir():
            raise InputError("is a folder; expected a file path", path=str(path), field=field)
    base = path if folder and path.is_dir() else path.parent
    while not base.exists():
        if base.parent == base:
            break
        base = base.parent
    if not base.is_dir():
        raise InputError(f"cannot be written: {base} is not a folder", path=str(path), field=field)
    try:
        fd, probe = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=base)
    except OSError as exc:
        raise InputError(f"cannot be written: {base}: {exc.strerror or exc}", path=str(path), field=field) from exc
    os.close(fd)
    os.unlink(probe)


@contextlib.contextmanager
def artifact_lock(path: str | os.PathLike, *, what: str = "artifact") -> Iterator[Path]:
    """Hold the one-writer lock of `path` (`.NAME.lock` beside it) for the duration of the block.

    An fcntl advisory lock: the kernel releases it when the holder dies, however it dies. A second
    writer gets an InputError naming the holder's PID. Stale temporary entries of `path` are removed
    once the lock is held.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.parent / f".{path.name}.lock"
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            holder = _read_pid(lock_path)
            who = f"process {holder}" if holder else "another process"
            raise InputError(f"{who} is writing this {what} (lock {lock_path}); wait for it to finish or "
                             f"stop it", path=str(path)) from exc
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the lock file after we opened it: take the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        remove_stale(path)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock_path)  # still holding it: a waiting opener retries on the new inode
        os.close(fd)


def _read_pid(lock_path: Path) -> int | None:
    try:
        text = lock_path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def read_json(path: str | os.PathLike, *, what: str = "JSON file") -> Any:
    """Read JSON, turning a missing or malformed file into an InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found", path=str(path))
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid JSON ({exc}); expected a {what}", path=str(path)) from exc


def read_yaml(path: str | os.PathLike, *, what: str) -> Any:
    """Read YAML safely, turning an unreadable, binary or malformed file into an InputError naming it."""
    import yaml

    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InputError(f"cannot read the {what}: {exc.strerror or exc}", path=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"not a text file ({exc.reason} at byte {exc.start}); expected a YAML {what}",
                         path=str(path)) from exc
    except yaml.YAMLError as exc:
        raise InputError(f"not valid YAML: {exc}", path=str(path)) from exc


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


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
