"""Search spaces, looked up by name: `get_space("mbv3")`."""

from hwnas.space.base import Arch, OpKey, SearchSpace, get_space, register_space, space_names

__all__ = ["Arch", "OpKey", "SearchSpace", "get_space", "register_space", "space_names"]
