"""Search spaces, looked up by name (`get_space("mbv3")`) or written as data (`get_space("my-net.yaml")`)."""

from hwnas.space.base import Arch, OpKey, SearchSpace, register_space, space_names
from hwnas.space.catalog import get_space, is_spec_path
from hwnas.space.spec import SpaceSpec, load_spec, parse_spec
from hwnas.space.spec_space import SpecSpace, spec_space

__all__ = ["Arch", "OpKey", "SearchSpace", "SpaceSpec", "SpecSpace", "get_space", "is_spec_path", "load_spec",
           "parse_spec", "register_space", "space_names", "spec_space"]
