"""What each pluggable kind must provide, as runtime-checkable protocols.

hwnas's own classes satisfy these by inheritance (`SearchSpace`, `Backend`, `Strategy`); a
plugin may subclass them or provide the same members. `check_protocol` is called where an
object enters (`get_space`, `get_backend`, `get_strategy`, `get_estimator`, the export
formats, the latency model a search uses) and names every missing member.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from hwnas.errors import InputError


@runtime_checkable
class SearchSpaceLike(Protocol):
    """A family of architectures with a fixed-length integer encoding and op keys."""

    name: str

    def sample(self, rng: Any) -> dict: ...
    def mutate(self, arch: dict, rng: Any, prob: float = 0.1) -> dict: ...
    def crossover(self, a: dict, b: dict, rng: Any) -> dict: ...
    def encode(self, arch: dict) -> Any: ...
    def decode(self, x: Any) -> dict: ...
    def validate(self, arch: dict) -> dict: ...
    def ops(self, arch: dict) -> list[str]: ...
    def all_ops(self) -> list[str]: ...

    @property
    def bounds(self) -> tuple[Any, Any]: ...


@runtime_checkable
class SupernetSpaceLike(SearchSpaceLike, Protocol):
    """A space a weight-sharing supernet can be built for (`hwnas.supernet.build_supernet`)."""

    def config(self) -> dict: ...
    def input_shape(self, arch: dict) -> tuple[int, ...]: ...


@runtime_checkable
class BackendLike(Protocol):
    """Compiles a torch module for one device profile into a Runner that can be timed."""

    name: str
    options_schema: dict

    def check_available(self) -> None: ...
    def prepare(self, module: Any, input_shape: Sequence[int]) -> Any: ...
    def versions(self) -> dict[str, str]: ...
    def describe(self) -> dict[str, Any]: ...


@runtime_checkable
class RunnerLike(Protocol):
    """A compiled model bound to its input: one `run`, and `time(n)` -> n latencies in ms."""

    def run(self) -> None: ...
    def warmup(self, n: int) -> None: ...
    def time(self, n: int) -> list[float]: ...
    def close(self) -> None: ...
    def describe(self) -> dict[str, Any]: ...


@runtime_checkable
class StrategyLike(Protocol):
    """Proposes architectures to `problem.evaluate_archs` until the budget is spent."""

    name: str
    multi_objective: bool

    def run(self, problem: Any, budget: Any, seed: int, on_generation: Any) -> None: ...
    def settings(self) -> dict[str, Any]: ...


@runtime_checkable
class EstimatorLike(Protocol):
    """Scores architectures (accuracy in %, or a proxy where higher is better). An estimator that can
    say how uncertain its scores are also has `stderr(archs)` (a standard error per score, in the
    score's units) and `uncertainty()` (a dict saying how it is computed); the search records them."""

    def predict(self, archs: Sequence[dict]) -> Any: ...


@runtime_checkable
class LatencyModel(Protocol):
    """Predicts the latency (ms) of whole subnets: a calibrated table, a whole-network regressor."""

    def predict(self, archs: Sequence[dict]) -> Any: ...


@runtime_checkable
class ExporterLike(Protocol):
    """Writes one deployable format of a subnet into a bundle folder."""

    name: str

    def export(self, context: Any) -> Any: ...


def missing_members(obj: Any, protocol: type) -> list[str]:
    """The members of `protocol` that `obj` lacks (attributes, methods and properties)."""
    wanted: set[str] = set()
    for klass in protocol.__mro__:
        if klass is object or klass is Protocol or klass.__name__ in ("Protocol", "Generic"):
            continue
        wanted |= {n for n in vars(klass) if not n.startswith("_")}
        wanted |= set(getattr(klass, "__annotations__", {}))
    return sorted(n for n in wanted if not hasattr(obj, n))


def check_protocol(obj: Any, protocol: type, *, what: str, field: str | None = None, path: str | None = None) -> None:
    """InputError naming what `obj` lacks, unless it provides every member of `protocol`."""
    missing = missing_members(obj, protocol)
    if missing or not isinstance(obj, protocol):
        raise InputError(f"{what} ({type(obj).__name__}) is not a {protocol.__name__}: it lacks "
                         f"{', '.join(missing) or 'a member'}", field=field, path=path)
