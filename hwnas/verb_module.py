"""Packages that are also verbs: `hwnas.search(...)`, `hwnas.export(...)`, `hwnas.train(...)`, `hwnas.demo(...)`.

Python binds a subpackage to its parent's attribute of the same name once it is imported, so
`hwnas.search` is the package `hwnas/search/`, whatever `hwnas/__init__.py` says. These four
packages are made callable instead: calling one runs the library verb of its name (looked up
when called, so the package imports nothing above its layer), and everything inside stays
importable as before (`hwnas.search.pareto_front`, `from hwnas.export import bundle`).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


class VerbModule(types.ModuleType):
    """A module whose call runs the function `__verb__` names ("module:function")."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return verb_function(self)(*args, **kwargs)


def verb_function(module: types.ModuleType) -> Any:
    module_name, _, function = module.__verb__.partition(":")
    return getattr(importlib.import_module(module_name), function)


def make_verb(module_name: str, target: str) -> None:
    """Make the (imported) module `module_name` callable as the function `target` ("module:function")."""
    module = sys.modules[module_name]
    module.__verb__ = target
    module.__class__ = VerbModule
