"""The search-space protocol and the registry of spaces by name.

An architecture is a plain JSON-able dict. Every space gives it a lossless fixed-length
integer encoding (for pymoo), and names the measurable units ("op keys") it is made of.

Optional methods a space may add, which search strategies use where present:
- `neighbours(arch)`: the architectures one step away (local search; else one-gene mutants);
- `structure_genes(X)`: (features, upper bounds) of rows of encodings saying what they compute,
  equal for encodings of the same function (e.g. a cell without its dead edges);
- `surrogate_genes(X)`: (features, upper bounds) that surrogate models add to the encodings
  (else `structure_genes`), e.g. how many of each op a cell runs, which latency roughly sums over;
- `surrogate_views()`: subsets of the columns of [encoding, surrogate_genes] that a surrogate may
  fit an objective on instead of all of them (chosen per objective by marginal likelihood), e.g.
  the columns that say what the network computes, which its accuracy depends on alone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from hwnas.errors import InputError
from hwnas.registry import SPACES

Arch = dict
OpKey = str  # canonical, e.g. "mbconv|i24x56x56|o40x28x28|k5|e4|s2|se1|relu|res0"


class SearchSpace(ABC):
    """A family of architectures. Subclasses are registered with `@register_space`."""

    name: str = ""

    # --- sampling and variation -------------------------------------------------------
    @abstractmethod
    def sample(self, rng: np.random.Generator) -> Arch: ...

    @abstractmethod
    def mutate(self, arch: Arch, rng: np.random.Generator, prob: float = 0.1) -> Arch: ...

    @abstractmethod
    def crossover(self, a: Arch, b: Arch, rng: np.random.Generator) -> Arch: ...

    # --- encoding (pymoo works on integer vectors in [xl, xu]) -------------------------
    @abstractmethod
    def encode(self, arch: Arch) -> np.ndarray: ...

    @abstractmethod
    def decode(self, x: np.ndarray) -> Arch: ...

    @property
    @abstractmethod
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Inclusive integer bounds (xl, xu) of `encode`'s vector."""

    def validate(self, arch: Arch) -> Arch:
        """Return `arch` in canonical form, or raise InputError naming the bad field."""
        try:
            x = self.encode(arch)
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise InputError(f"not an architecture of space '{self.name}': {exc}", field="arch") from exc
        return self.decode(x)

    # --- what an architecture is made of ----------------------------------------------
    def ops(self, arch: Arch) -> list[OpKey]:
        """The op keys of a subnet, in order, covering it from input to output."""
        raise NotImplementedError(f"space '{self.name}' has no op keys")

    def all_ops(self) -> list[OpKey]:
        """Every op key that any subnet of this space can contain (what profiling measures)."""
        raise NotImplementedError(f"space '{self.name}' has no op keys")


def value_counts(Z: np.ndarray, n_values: int) -> np.ndarray:
    """(rows, n_values): how many entries of each row of `Z` take each value 0..n_values-1 (e.g. how
    many edges of a cell run each op, a feature latency roughly sums over)."""
    Z = np.asarray(Z, dtype=np.int64)
    return np.stack([(Z == v).sum(axis=1) for v in range(n_values)], axis=1)


def count_codes(Z: np.ndarray, n_values: int) -> np.ndarray:
    """`value_counts` of the rows of `Z` as 0/1 features for a Hamming kernel: per value v, columns
    "at least 1, 2, ..., Z.shape[1] entries are v" (a thermometer code). Two rows then differ in as
    many columns as their counts differ, so 1 conv is nearer 2 convs than 6: a count is ordinal,
    and as one category per count a Hamming kernel would see 1 and 2 as far apart as 1 and 6."""
    counts = value_counts(Z, n_values)
    steps = np.arange(1, np.asarray(Z).shape[1] + 1)
    return (counts[:, :, None] >= steps).reshape(len(counts), -1).astype(np.int64)


def register_space(name: str):
    """Decorator: register a space factory (`factory(**options) -> SearchSpace`) under `name`."""
    return SPACES.register(name)


def space_names() -> list[str]:
    return SPACES.names()


def get_space(name: str, **options) -> SearchSpace:
    """Build a registered space (built-in, a built-in spec, or from a plugin), checked against
    `SearchSpaceLike`; an unknown name is an InputError listing the known ones. `hwnas.space.get_space`
    also takes a spec file's path or a spec (`spec=`)."""
    return SPACES.create(name, **options)
