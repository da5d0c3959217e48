"""A non-editable wheel carries the shipped profiles and tables and works outside the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "hwnas", "device_profiles", "latency_tables")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the wheel, a folder it is installed into with pip --target) built from a copy of the sources."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(source, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(root / "dist"),
                    str(src)], check=True, capture_output=True, timeout=600)
    wheel = next((root / "dist").glob("hwnas-*.whl"))
    target = root / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    return wheel, target


def test_wheel_holds_the_package_profiles_and_tables(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for profile in (REPO / "device_profiles").glob("*.yaml"):
        assert f"hwnas/device_profiles/{profile.name}" in names
    for table in [*(REPO / "latency_tables").glob("*.json"), *(REPO / "latency_tables").glob("*.tuning.json.gz")]:
        assert f"hwnas/latency_tables/{table.name}" in names
    for module in ("hwnas/__init__.py", "hwnas/pipeline.py", "hwnas/runtime/backends/onnxruntime.py",
                   "hwnas/data/fashion_mnist_subset.npz"):
        assert module in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "hwnas = hwnas.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def run_installed(target: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(target)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_installed_package_profiles_by_name_from_another_folder(installed, tmp_path):
    _, target = installed
    where = run_installed(target, tmp_path, "-c", "import hwnas, hwnas.resources as r, hwnas.demo as d; "
                          "print(hwnas.__file__); print(r.profile_dir()); print(d.SHIPPED_TABLES)")
    assert where.returncode == 0, where.stderr
    module, profiles, tables = where.stdout.split()
    assert Path(module).is_relative_to(target) and Path(profiles).is_relative_to(target)
    assert (Path(tables) / "cpu-ort-1t_mbv3-small-input.json").is_file() and Path(tables).is_relative_to(target)
    done = run_installed(target, tmp_path, "-m", "hwnas", "profile", "cpu-ort-1t", "--space", "mbv3-small-input",
                         "--out", "t.json", "--quick", "--limit", "2", "--no-progress", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["measured"] == 2 and result["profile"] == "cpu-ort-1t"
    assert (tmp_path / "t.json").is_file()
