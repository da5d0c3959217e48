"""Latency tables: per op key, the measured median and dispersion, with full provenance.

A table is JSON (schema below); `LatencyTable.load` checks it and turns anything wrong
(missing, corrupt, foreign, truncated, a newer schema, a missing field, a non-numeric
latency) into an InputError naming the file and the field. `save` is atomic, so a
profiling run killed at any moment leaves the previous complete version on disk.

    {"schema_version": 1, "kind": "hwnas-latency-table",
     "space": {"name": ..., "config": {...}}, "profile": {...}, "device": {...},
     "versions": {...}, "protocol": {...}, "created": ISO-8601, "updated": ISO-8601,
     "expected_entries": int, "complete": bool, "conditions": {...},
     "entries": {op_key: {"median_ms", "p25_ms", "p75_ms", "cv", "n", "rounds", "round_medians_ms"}}}

A table measured with compiler tuning (a TVM profile with `tune`) also holds
`"tuning": {"database": file name beside the table, "sha256": ..., "target": ..., ...}`: the
entries are latencies of the tuned code, so `load` refuses the table when that file is missing
or its bytes differ (InputError naming the file and the field).

`cv` is the robust coefficient of variation (p75 - p25) / median; `rounds` (optional, 1 when
absent) and `round_medians_ms` record the profiling passes the entry was chosen from (the
one with the lowest median; see `rounds_needed` for when an entry is settled).
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwnas.errors import InputError
from hwnas.io import file_sha256, json_bytes, read_json, write_or_rescue
from hwnas.runtime.measure import rounds_needed

SCHEMA_VERSION = 1
KIND = "hwnas-latency-table"
ENTRY_FIELDS = ("median_ms", "p25_ms", "p75_ms", "cv", "n")
_TOP_FIELDS = {
    "space": dict,
    "profile": dict,
    "device": dict,
    "versions": dict,
    "protocol": dict,
    "entries": dict,
}


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class LatencyTable:
    """Measured latency (ms) per op key of one search space on one device profile."""

    space: dict[str, Any]  # {"name": str, "config": dict}
    profile: dict[str, Any]  # DeviceProfile.to_dict()
    device: dict[str, Any]  # hwnas.latency.fingerprint.device_fingerprint()
    versions: dict[str, str]
    protocol: dict[str, Any]  # the protocol actually used (with "quick") and the backend's settings
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: str = field(default_factory=now_iso)
    updated: str = field(default_factory=now_iso)
    expected_entries: int | None = None  # how many op keys the full table holds
    conditions: dict[str, Any] = field(default_factory=dict)  # e.g. the system load while measuring
    path: str | None = None
    # compiler tuning records the entries were measured with: {"database": file beside the table, "sha256", ...}
    tuning: dict[str, Any] = field(default_factory=dict)

    # --- queries ------------------------------------------------------------------------
    @property
    def space_name(self) -> str:
        return str(self.space.get("name", ""))

    @property
    def profile_name(self) -> str:
        return str(self.profile.get("name", ""))

    @property
    def complete(self) -> bool:
        """Every op key measured, in every round the protocol asks for."""
        rounds = int(self.protocol.get("rounds", 1))
        done = sum(1 for e in self.entries.values() if rounds_needed(e, rounds) == 0)
        return self.expected_entries is not None and done >= self.expected_entries

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def keys(self) -> list[str]:
        return list(self.entries)

    def entry(self, key: str) -> dict[str, Any]:
        """The full record of one op key; InputError when the table lacks it."""
        if key not in self.entries:
            raise InputError(
                f"op key {key!r} is not in this latency table ({len(self.entries)} entries, space "
                f"{self.space_name!r}, profile {self.profile_name!r}); profile the space again or resume it",
                path=self.path,
                field="entries",
            )
        return self.entries[key]

    def tuning_file(self) -> Path | None:
        """The tuning database file this table's entries were measured with (None: no tuning)."""
        if not self.tuning.get("database"):
            return None
        base = Path(self.path).parent if self.path else Path(".")
        return base / str(self.tuning["database"])

    def check_tuning_file(self) -> None:
        """InputError unless the tuning database is beside the table with the sha256 the table records."""
        path = self.tuning_file()
        if path is None:
            return
        if not path.is_file():
            raise InputError(f"the tuning database {path.name} that this table's latencies were measured with is "
                             "missing; copy it beside the table, or profile again", path=str(path),
                             field="tuning.database")
        found = file_sha256(path)
        if found != self.tuning.get("sha256"):
            raise InputError(f"the tuning database differs from the one this table was measured with (sha256 "
                             f"{found[:16]}..., the table records {str(self.tuning.get('sha256'))[:16]}...); "
                             "restore it or profile again", path=str(path), field="tuning.sha256")

    def lookup(self, key: str) -> float:
        """Median latency (ms) of one op key."""
        return float(self.entry(key)["median_ms"])

    def missing(self, keys: Iterable[str]) -> list[str]:
        return [k for k in keys if k not in self.entries]

    def sum(self, ops: Iterable[str]) -> float:
        """Summed median latency (ms) of a subnet's op keys; InputError naming the first missing key."""
        ops = list(ops)
        absent = self.missing(ops)
        if absent:
            raise InputError(
                f"{len(absent)} of {len(ops)} op keys are not in this latency table; first missing: {absent[0]!r} "
                f"(table of space {self.space_name!r} for profile {self.profile_name!r})",
                path=self.path,
                field="entries",
            )
        return float(sum(self.entries[k]["median_ms"] for k in ops))

    # --- persistence --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": KIND,
            "space": self.space,
            "profile": self.profile,
            "device": self.device,
            "versions": self.versions,
            "protocol": self.protocol,
            "created": self.created,
            "updated": self.updated,
            "expected_entries": self.expected_entries,
            "complete": self.complete,
            "conditions": self.conditions,
            **({"tuning": self.tuning} if self.tuning else {}),
            "entries": self.entries,
        }

    def save(self, path: str | os.PathLike | None = None) -> None:
        """Write atomically (readers see the previous version or this one, never half of one)."""
        target = path if path is not None else self.path
        if target is None:
            raise ValueError("no path to save the latency table to")
        self.updated = now_iso()
        # a folder that fails mid-profile: the entries measured so far are saved elsewhere (the error says where)
        write_or_rescue(target, json_bytes(self.to_dict()), what="latency table")
        self.path = str(target)

    @classmethod
    def load(cls, path: str | os.PathLike, *, check_files: bool = True) -> LatencyTable:
        """Read and check a table; with `check_files`, its tuning database too (see `check_tuning_file`)."""
        path = str(path)
        raw = read_json(path, what="latency table (JSON written by `hwnas profile`)")
        table = cls.from_dict(raw, source=path)
        if check_files:
            table.check_tuning_file()
        return table

    @classmethod
    def from_dict(cls, raw: Any, source: str = "<latency table>") -> LatencyTable:
        def bad(fld: str | None, msg: str) -> InputError:
            return InputError(msg, path=source, field=fld)

        if not isinstance(raw, dict) or raw.get("kind") != KIND:
            found = raw.get("kind") if isinstance(raw, dict) else type(raw).__name__
            raise bad("kind", f"not an hwnas latency table: expected kind {KIND!r}, found {found!r}")
        version = raw.get("schema_version")
        if version != SCHEMA_VERSION:
            raise bad(
                "schema_version",
                f"unsupported schema_version {version!r}; this hwnas reads version {SCHEMA_VERSION} "
                "(profile the device again with this version)",
            )
        for key, typ in _TOP_FIELDS.items():
            if key not in raw:
                raise bad(key, "missing; every latency table has it")
            if not isinstance(raw[key], typ):
                raise bad(key, f"expected a {typ.__name__} (JSON object), got {type(raw[key]).__name__}")
        if not isinstance(raw["space"].get("name"), str):
            raise bad("space.name", "expected the search space's name as a string")
        if not isinstance(raw["space"].get("config", {}), dict):
            raise bad("space.config", "expected an object of the space's options")
        if not isinstance(raw["profile"].get("name"), str):
            raise bad("profile.name", "expected the device profile's name as a string")
        entries: dict[str, dict[str, Any]] = {}
        for key, rec in raw["entries"].items():
            if not isinstance(rec, dict):
                raise bad(f"entries.{key}", f"expected an object with {', '.join(ENTRY_FIELDS)}")
            for fld in ENTRY_FIELDS:
                if fld not in rec:
                    raise bad(f"entries.{key}.{fld}", "missing")
                value = rec[fld]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise bad(f"entries.{key}.{fld}", f"expected a finite number, got {value!r}")
                if value < 0 or (fld == "median_ms" and value <= 0):
                    raise bad(f"entries.{key}.{fld}", f"expected a positive number, got {value!r}")
            rounds = rec.get("rounds", 1)
            if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
                raise bad(f"entries.{key}.rounds", f"expected an integer >= 1, got {rounds!r}")
            entries[key] = dict(rec)
        tuning = raw.get("tuning", {})
        if not isinstance(tuning, dict) or (tuning and not (isinstance(tuning.get("database"), str)
                                                            and isinstance(tuning.get("sha256"), str))):
            raise bad("tuning", "expected an object naming the tuning database file and its sha256")
        if tuning and Path(tuning["database"]).name != tuning["database"]:
            raise bad("tuning.database", f"expected a file name beside the table, got {tuning['database']!r}")
        expected = raw.get("expected_entries")
        if expected is not None and (isinstance(expected, bool) or not isinstance(expected, int) or expected < 0):
            raise bad("expected_entries", f"expected a non-negative integer or null, got {expected!r}")
        return cls(
            space=raw["space"],
            profile=raw["profile"],
            device=raw["device"],
            versions=raw["versions"],
            protocol=raw["protocol"],
            entries=entries,
            created=str(raw.get("created", "")),
            updated=str(raw.get("updated", "")),
            expected_entries=expected,
            conditions=raw.get("conditions") if isinstance(raw.get("conditions"), dict) else {},
            path=source,
            tuning=dict(tuning),
        )


def load_table(path: str | os.PathLike) -> LatencyTable:
    """Load and check a latency table (InputError for anything that is not a valid one)."""
    return LatencyTable.load(path)
