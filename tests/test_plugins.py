"""Plugins by entry point: a separate distribution adds a strategy and a backend; the CLI lists and uses both.

Also: the registries' one shape, and the protocol checks where an object enters.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hwnas.errors import InputError
from hwnas.protocols import SearchSpaceLike, check_protocol
from hwnas.registry import REGISTRIES, Registry

REPO = Path(__file__).resolve().parent.parent
PLUGIN = Path(__file__).resolve().parent / "plugin_example"
TABLE = REPO / "latency_tables" / "cpu-ort-1t_mbv3-small-input.json"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """The plugin distribution, built from its own pyproject in a temporary folder and installed there."""
    root = tmp_path_factory.mktemp("plugin")
    shutil.copytree(PLUGIN, root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "--no-deps",
                    "--no-build-isolation", "--no-index", "-q", "--target", str(root / "site"), str(root / "src")],
                   check=True, capture_output=True, timeout=600)
    return root / "site"


def hwnas_cli(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    return subprocess.run([sys.executable, "-m", "hwnas", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_plugin_strategy_and_backend_are_listed_and_used(plugin_site, tmp_path):
    search_help = hwnas_cli(plugin_site, tmp_path, "search", "--help")
    profile_help = hwnas_cli(plugin_site, tmp_path, "profile", "--help")
    def unwrapped(text: str) -> str:  # argparse wraps help at hyphens
        return re.sub(r"-\s*\n\s*", "-", text)

    assert "toy-random" in unwrapped(search_help.stdout) and "toy-eager" in unwrapped(profile_help.stdout)

    (tmp_path / "toy.yaml").write_text("name: toy\nbackend: toy-eager\noptions: {threads: 1}\n")
    profiled = hwnas_cli(plugin_site, tmp_path, "profile", "toy.yaml", "--space", "mbv3-small-input", "--out",
                         "t.json", "--quick", "--limit", "2", "--no-progress", "--json")
    assert profiled.returncode == 0, profiled.stderr
    assert json.loads(profiled.stdout)["backend"] == "toy-eager"
    table = json.loads((tmp_path / "t.json").read_text())
    assert len(table["entries"]) == 2 and all(e["median_ms"] > 0 for e in table["entries"].values())

    searched = hwnas_cli(plugin_site, tmp_path, "search", "--space", "mbv3-small-input", "--table", str(TABLE),
                         "--objectives", "params,latency_ms", "--budget-ms", "1000", "--algo", "toy-random",
                         "--pop", "10", "--gens", "3", "--out", "run", "--json")
    assert searched.returncode == 0, searched.stderr
    pareto = json.loads((tmp_path / "run" / "pareto.json").read_text())
    assert pareto["settings"]["strategy"] == "toy-random" and pareto["evaluations"] == 30

    bad = hwnas_cli(plugin_site, tmp_path, "search", "--space", "mbv3-small-input", "--table", str(TABLE),
                    "--objectives", "params,latency_ms", "--budget-ms", "1000", "--algo", "no-such", "--out", "r2")
    assert bad.returncode == 2 and "--algo" in bad.stderr and "toy-random" in bad.stderr


def test_registries_share_one_shape_and_read_their_entry_point_group():
    assert set(REGISTRIES) == {"spaces", "backends", "strategies", "estimators", "exporters"}
    for kind, registry in REGISTRIES.items():
        assert isinstance(registry, Registry) and registry.group == f"hwnas.{kind}"
        assert registry.names(), kind


def test_registry_registers_lists_and_rejects_unknown_names():
    registry = Registry("widgets", what="widget", field="widget")

    @registry.register("round")
    class Round:
        def predict(self, archs):
            return [1.0 for _ in archs]

    assert registry.names() == ["round"] and Round.name == "round"
    assert isinstance(registry.create("round"), Round)
    with pytest.raises(InputError, match="unknown widget 'square'; known: round") as err:
        registry.get("square")
    assert err.value.field == "widget"


def test_an_object_missing_protocol_members_is_named_where_it_enters():
    from hwnas.space import get_space, register_space

    class HalfSpace:
        name = "half"

        def sample(self, rng):
            return {}

    register_space("half-space-for-test")(HalfSpace)
    try:
        with pytest.raises(InputError, match="lacks .*all_ops.*encode") as err:
            get_space("half-space-for-test")
        assert err.value.field == "space"
    finally:
        from hwnas.registry import SPACES

        SPACES._entries.pop("half-space-for-test")
    check_protocol(get_space("nb201"), SearchSpaceLike, what="space")  # the built-ins pass


def test_build_supernet_names_what_a_space_lacks():
    from hwnas.supernet import build_supernet

    class Flat:
        name = "flat"

    with pytest.raises(InputError, match="space 'flat'.*lacks .*input_shape") as err:
        build_supernet(Flat())
    assert err.value.field == "space"
