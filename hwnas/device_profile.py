"""Device profiles: which backend measures, with which options, batch, resolutions and protocol.

A profile is a YAML file in `device_profiles/`. Loading validates every field: an unknown
key, a wrong type, an unknown backend or option value is an InputError naming the file,
the field and the allowed values.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hwnas.errors import InputError
from hwnas.io import read_yaml
from hwnas.registry import BACKENDS
from hwnas.resources import profile_dir

# the shipped profiles (the checkout's device_profiles/, or the installed package's copy)
PROFILE_DIR = profile_dir()

@dataclass(frozen=True)
class Option:
    """One backend option a profile may set: its types, allowed values (None: any) and default.

    Each backend declares its own (`Backend.options_schema`); `profile_from_dict` validates against it.
    """

    types: tuple[type, ...]
    allowed: tuple | None
    default: Any
    # an extra rule: returns what was expected when the value breaks it, else None
    check: Callable[[Any], str | None] | None = None


def _threads_rule(value: Any) -> str | None:
    if value == "all" or (isinstance(value, int) and value >= 1):
        return None
    return "an integer >= 1 or 'all'"


# an int >= 1, or "all" for every core
THREADS = Option((int, str), None, 1, check=_threads_rule)

TIMING_METHODS = ("wallclock", "cuda_events", "cuda_graph")
# protocol.anchor besides true (= "per-call") and false
ANCHOR_MODES = ("per-call", "bracket")


@dataclass
class MeasurementProtocol:
    """How one latency number is taken (DESIGN.md, measurement protocol)."""

    warmup: int = 10
    min_repeats: int = 30
    max_repeats: int = 500
    max_seconds: float = 1.0  # time cap per measured model
    rel_ci: float = 0.02  # stop once the median's 95 % CI half-width is below this fraction
    max_cv: float = 0.10  # an entry whose IQR/median is above this is re-measured
    remeasure: int = 2  # at most this many re-measurements of a noisy entry
    timing: str = "wallclock"
    # profiling passes over all ops; each op keeps its least-disturbed pass (bursts of load last seconds)
    rounds: int = 3
    # time against a fixed reference network (hwnas.latency.anchor), for shared machines whose speed
    # changes over seconds: true or "per-call" pairs every call with a call of it (one thread);
    # "bracket" divides each measurement by the reference's measurements just before and after it
    # (thread teams, whose spinning pools must not be interleaved call by call)
    anchor: bool | str = False

    _RANGES = {
        "warmup": (0, 10_000),
        "min_repeats": (3, 1_000_000),
        "max_repeats": (3, 1_000_000),
        "max_seconds": (0.001, 3600.0),
        "rel_ci": (0.0, 1.0),
        "max_cv": (0.0, 10.0),
        "remeasure": (0, 100),
        "rounds": (1, 100),
    }


@dataclass
class DeviceProfile:
    name: str
    backend: str
    options: dict[str, Any] = field(default_factory=dict)
    batch: int = 1
    resolutions: list[int] | None = None  # None: the search space's own resolutions
    protocol: MeasurementProtocol = field(default_factory=MeasurementProtocol)
    description: str = ""
    path: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("path")
        return d

    def threads(self) -> int:
        """The thread count the backend must use ("all" -> every core of this machine)."""
        t = self.options.get("threads", 1)
        if t == "all":
            return os.cpu_count() or 1
        return int(t)


_TOP_KEYS = {"name", "backend", "options", "batch", "resolutions", "protocol", "description"}


def load_profile(path_or_name: str | os.PathLike) -> DeviceProfile:
    """Load and validate a profile from a YAML path, or by name from device_profiles/."""
    path = Path(path_or_name)
    if not path.exists() and not path.suffix and (PROFILE_DIR / f"{path}.yaml").exists():
        path = PROFILE_DIR / f"{path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")))
        raise InputError(f"device profile not found (shipped profiles: {known})", path=str(path))
    raw = read_yaml(path, what="device profile")
    return profile_from_dict(raw, source=str(path))


def profile_from_dict(raw: Any, source: str = "<profile>") -> DeviceProfile:
    def bad(fld: str, msg: str) -> InputError:
        return InputError(msg, path=source, field=fld)

    if not isinstance(raw, dict):
        raise InputError(f"expected a mapping of profile fields, got {type(raw).__name__}", path=source)
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise bad(sorted(unknown)[0], f"unknown key; allowed keys: {', '.join(sorted(_TOP_KEYS))}")
    for key in ("name", "backend"):
        if key not in raw:
            raise bad(key, "missing; every profile needs 'name' and 'backend'")
    name = raw["name"]
    if not isinstance(name, str) or not name.strip():
        raise bad("name", f"expected a non-empty string, got {name!r}")
    backend = raw["backend"]
    if not isinstance(backend, str):
        raise bad("backend", f"expected a backend name, got {backend!r}; known: {', '.join(BACKENDS.names())}")
    backend_class = BACKENDS.get(backend, path=source)  # built-in or from a plugin

    options_raw = raw.get("options") or {}
    if not isinstance(options_raw, dict):
        raise bad("options", f"expected a mapping of backend options, got {type(options_raw).__name__}")
    schema: dict[str, Option] = getattr(backend_class, "options_schema", {})
    options: dict[str, Any] = {}
    for key, value in options_raw.items():
        if key not in schema:
            raise bad(f"options.{key}", f"unknown option for backend {backend!r}; allowed: {', '.join(schema)}")
        option = schema[key]
        if value is None and option.default is None:
            # an option left unset (a table's profile record lists every option, defaults included)
            options[key] = None
            continue
        if isinstance(value, bool) or not isinstance(value, option.types):
            raise bad(f"options.{key}", f"expected {' or '.join(t.__name__ for t in option.types)}, got {value!r}")
        if option.allowed is not None and value not in option.allowed:
            raise bad(f"options.{key}", f"got {value!r}; allowed: {', '.join(map(str, option.allowed))}")
        expected = option.check(value) if option.check is not None else None
        if expected is not None:
            raise bad(f"options.{key}", f"expected {expected}, got {value!r}")
        options[key] = value
    for key, option in schema.items():
        options.setdefault(key, option.default)

    batch = raw.get("batch", 1)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise bad("batch", f"expected an integer >= 1, got {batch!r}")

    resolutions = raw.get("resolutions")
    if resolutions is not None:
        if (
            not isinstance(resolutions, list)
            or not resolutions
            or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 8 for r in resolutions)
        ):
            raise bad("resolutions", f"expected a non-empty list of integers >= 8, got {resolutions!r}")

    protocol = _protocol_from_dict(raw.get("protocol") or {}, bad)
    check = getattr(backend_class, "check_settings", None)
    problem = check(options, protocol) if check is not None else None
    if problem is not None:
        raise bad(*problem)
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise bad("description", f"expected a string, got {description!r}")
    return DeviceProfile(
        name=name,
        backend=backend,
        options=options,
        batch=batch,
        resolutions=resolutions,
        protocol=protocol,
        description=description,
        path=source,
    )


def _protocol_from_dict(raw: Any, bad) -> MeasurementProtocol:
    if not isinstance(raw, dict):
        raise bad("protocol", f"expected a mapping, got {type(raw).__name__}")
    proto = MeasurementProtocol()
    allowed = [k for k in MeasurementProtocol.__dataclass_fields__ if not k.startswith("_")]
    for key, value in raw.items():
        if key not in allowed:
            raise bad(f"protocol.{key}", f"unknown protocol setting; allowed: {', '.join(allowed)}")
        if key == "timing":
            if value not in TIMING_METHODS:
                raise bad("protocol.timing", f"got {value!r}; allowed: {', '.join(TIMING_METHODS)}")
        elif key == "anchor":
            if not isinstance(value, bool) and value not in ANCHOR_MODES:
                raise bad("protocol.anchor", f"expected true, false or one of {', '.join(map(repr, ANCHOR_MODES))}, "
                                             f"got {value!r}")
        else:
            lo, hi = MeasurementProtocol._RANGES[key]
            want_int = isinstance(getattr(proto, key), int)
            ok_type = isinstance(value, int) if want_int else isinstance(value, (int, float))
            if isinstance(value, bool) or not ok_type or not lo <= value <= hi:
                kind = "an integer" if want_int else "a number"
                raise bad(f"protocol.{key}", f"expected {kind} in [{lo}, {hi}], got {value!r}")
        setattr(proto, key, value)
    if proto.max_repeats < proto.min_repeats:
        raise bad("protocol.max_repeats", f"must be >= min_repeats ({proto.min_repeats}), got {proto.max_repeats}")
    return proto
