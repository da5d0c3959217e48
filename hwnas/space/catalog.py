"""Spaces by name or as data: the registered spaces, the built-in specs (`specs/*.yaml`, each
registered under its file's name), a spec file's path, or a spec given as `spec=`."""

from __future__ import annotations

import os
from pathlib import Path

from hwnas.errors import InputError
from hwnas.registry import SPACES
from hwnas.space.base import SearchSpace
from hwnas.space.spec_space import SpecSpace, spec_space

SPECS_DIR = Path(__file__).resolve().parent / "specs"
SPEC_SUFFIXES = (".yaml", ".yml", ".json")
SPEC_OPTIONS = ("resolutions", "in_channels", "num_classes", "width_mult")
# built-in specs a Python class serves under the spec's name (`hwnas.space.mbv3`: its own architecture
# dict, encoding and checkpoint names, which latency tables, checkpoints and predictors store)
CLASS_SERVED = ("mbv3", "mbv3-small-input")


def is_spec_path(name) -> bool:
    """Whether a `--space` value names a spec file rather than a registered space."""
    return isinstance(name, (str, os.PathLike)) and str(name).lower().endswith(SPEC_SUFFIXES)


def get_space(name: str, **options) -> SearchSpace:
    """Build a space: a registered one by name (built-in, a built-in spec, or from a plugin), a spec
    file by its path (`my-net.yaml`), or a spec given as `spec=` (a dict, as `space.config()` of a
    spec space stores it; `name` is then the spec's name). Options of a spec space: resolutions,
    in_channels, num_classes, width_mult. An unknown name is an InputError listing the known ones."""
    if "spec" not in options and not is_spec_path(name):
        return SPACES.create(name, **options)
    spec = options.pop("spec", None) or name
    unknown = sorted(set(options) - set(SPEC_OPTIONS))
    if unknown:
        raise InputError(f"unknown option(s) {', '.join(unknown)} for a spec space; known: "
                         f"{', '.join(SPEC_OPTIONS)}", field=unknown[0])
    return spec_space(spec, **options)


def _builtin_spec(path: Path):
    def factory(resolutions=None, in_channels: int | None = None, num_classes: int | None = None,
                width_mult: float | None = None, spec: dict | None = None) -> SpecSpace:
        return spec_space(spec if spec is not None else path, resolutions=resolutions, in_channels=in_channels,
                          num_classes=num_classes, width_mult=width_mult)

    factory.__doc__ = f"The built-in spec space {path.stem!r} ({path.name})."
    return factory


def builtin_spec_path(name: str) -> Path:
    """The file of the built-in spec `name` (hwnas/space/specs/NAME.yaml)."""
    return SPECS_DIR / f"{name}.yaml"


for _path in sorted(SPECS_DIR.glob("*.yaml")):
    if _path.stem not in CLASS_SERVED:
        SPACES.add(_path.stem, _builtin_spec(_path))


def describe(space: str | SearchSpace, **options) -> dict:
    """What `hwnas space show` prints: the number of subnets, the op keys per resolution, the MACs and
    parameters of the smallest and largest subnet (the ends of their ranges in spaces where every
    choice adds cost), and those two subnets."""
    space = get_space(space, **options) if isinstance(space, (str, os.PathLike)) else space
    out: dict = {"space": space.name}
    if hasattr(space, "config"):
        out["config"] = space.config()
    if callable(getattr(space, "size", None)):
        out["size"] = int(space.size())
    resolutions = getattr(space, "resolutions", None)
    if resolutions and "spec" in out.get("config", {}):
        by_r = {r: spec_space(space.spec, resolutions=[r]).all_ops() for r in resolutions}
    elif resolutions and hasattr(space, "config"):
        config = {k: v for k, v in space.config().items() if k != "name"}
        by_r = {r: get_space(space.name, **{**config, "resolutions": [r]}).all_ops() for r in resolutions}
    else:
        by_r = {None: space.all_ops()}
    out["op_keys"] = len(space.all_ops())
    out["op_keys_per_resolution"] = {str(r): keys for r, keys in by_r.items()}
    ends = {"smallest": space.smallest(), "largest": space.largest()} if hasattr(space, "largest") else {}
    for name, arch in ends.items():
        out[name] = arch
        if callable(getattr(space, "flops", None)):
            out[f"{name}_macs"] = int(space.flops(arch))
            out[f"{name}_params"] = int(space.params(arch))
    return out
