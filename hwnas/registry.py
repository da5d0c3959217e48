"""Registries by name, one shape for every kind: spaces, backends, strategies, estimators, exporters.

A registry holds the built-in entries (the modules of one package, imported when first needed,
whose decorators register them), entries registered at run time (`@REGISTRY.register("name")`),
and third-party entries from the entry-point group `hwnas.<kind>`, so a plugin is a package of
its own:

    [project.entry-points."hwnas.strategies"]
    my-search = "my_plugin.search:MySearch"

An entry point loads the registered object itself (a class or a factory), or a module whose
import registers it. Objects an entry builds are checked against the kind's protocol
(`hwnas.protocols`) where they enter, and an InputError names what is missing.

This module is the bottom layer's: the built-in packages are named as strings and imported on
demand, so a lower layer (device profiles validating backend options) can look up an entry of
a higher one without importing it.
"""

from __future__ import annotations

import importlib
import pkgutil
import types
from collections.abc import Callable
from importlib import metadata
from typing import Any

from hwnas.errors import InputError
from hwnas.protocols import BackendLike, EstimatorLike, ExporterLike, SearchSpaceLike, StrategyLike, check_protocol


class Registry:
    """Named entries of one kind.

    kind: the plural name, also the entry-point group's suffix (`hwnas.<kind>`)
    what: how an error names one entry ("search space")
    field: the library field an unknown name is reported against ("space")
    package: the package whose modules hold the built-in entries, or the one module that does (imported on demand)
    by_module: a built-in entry's name is its module's name, so one lookup imports one module
               (backends: an absent optional package costs nothing until its backend is asked for)
    protocol: what an object built by `create` must provide
    """

    def __init__(self, kind: str, *, what: str, field: str, package: str | None = None, by_module: bool = False,
                 protocol: type | None = None):
        self.kind = kind
        self.what = what
        self.field = field
        self.package = package
        self.by_module = by_module
        self.protocol = protocol
        self.group = f"hwnas.{kind}"
        self._entries: dict[str, Any] = {}
        self._builtins_loaded = False

    # --- registering ------------------------------------------------------------------
    def register(self, name: str) -> Callable[[Any], Any]:
        """Decorator: register a class or factory under `name` (a class also gets `name` set)."""

        def deco(obj: Any) -> Any:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: Any) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.what} needs a non-empty name, got {name!r}")
        if isinstance(obj, type):
            obj.name = name
        self._entries[name] = obj

    # --- looking up -------------------------------------------------------------------
    def names(self) -> list[str]:
        """Every entry: built-in, registered and from installed plugins."""
        if self.by_module:
            found = set(self._builtin_modules())
        else:
            self._load_builtins()
            found = set()
        return sorted(found | set(self._entries) | {ep.name for ep in self._entry_points()})

    def get(self, name: str, *, path: str | None = None) -> Any:
        """The registered class or factory; an unknown name is an InputError listing the known ones."""
        if name not in self._entries and isinstance(name, str):
            if self.by_module and name in self._builtin_modules():
                importlib.import_module(f"{self.package}.{name}")
            elif not self.by_module:
                self._load_builtins()
            if name not in self._entries:
                self._load_entry_point(name)
        if name not in self._entries:
            raise InputError(f"unknown {self.what} {name!r}; known: {', '.join(self.names())}",
                             path=path, field=self.field)
        return self._entries[name]

    def create(self, name: str, *args: Any, path: str | None = None, **kwargs: Any) -> Any:
        """Build the entry `name` with these arguments and check it against the kind's protocol."""
        obj = self.get(name, path=path)(*args, **kwargs)
        if self.protocol is not None:
            check_protocol(obj, self.protocol, what=f"{self.what} {name!r}", field=self.field)
        return obj

    # --- where entries come from -----------------------------------------------------
    def _builtin_modules(self) -> list[str]:
        if self.package is None:
            return []
        pkg = importlib.import_module(self.package)  # a plain module registers its entries on import
        if not hasattr(pkg, "__path__"):
            return []
        return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")
                      and m.name != "base")

    def _load_builtins(self) -> None:
        if self._builtins_loaded:
            return
        self._builtins_loaded = True
        for module in self._builtin_modules():
            importlib.import_module(f"{self.package}.{module}")

    def _entry_points(self) -> list[metadata.EntryPoint]:
        return list(metadata.entry_points(group=self.group))

    def _load_entry_point(self, name: str) -> None:
        for ep in self._entry_points():
            if ep.name != name:
                continue
            try:
                obj = ep.load()
            except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, whatever it raised
                raise InputError(f"the plugin entry point {ep.value!r} of {self.what} {name!r} failed to load: "
                                 f"{type(exc).__name__}: {exc}", field=self.field) from exc
            if not isinstance(obj, types.ModuleType):  # a module registers itself on import
                self.add(name, obj)
            return


# where each kind's built-ins live (imported on demand: this module imports none of them)
SPACES = Registry("spaces", what="search space", field="space", package="hwnas.space", protocol=SearchSpaceLike)
BACKENDS = Registry("backends", what="backend", field="backend", package="hwnas.runtime.backends", by_module=True,
                    protocol=BackendLike)
STRATEGIES = Registry("strategies", what="search strategy", field="strategy", package="hwnas.search.strategies",
                      protocol=StrategyLike)
ESTIMATORS = Registry("estimators", what="accuracy estimator", field="estimator", package="hwnas.estimate",
                      protocol=EstimatorLike)
EXPORTERS = Registry("exporters", what="export format", field="formats", package="hwnas.export.formats",
                     protocol=ExporterLike)

REGISTRIES = {r.kind: r for r in (SPACES, BACKENDS, STRATEGIES, ESTIMATORS, EXPORTERS)}
