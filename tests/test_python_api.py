"""The README's Python example runs as written, from a folder outside the checkout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_is_15_to_25_lines():
    lines = [line for line in readme_example().splitlines() if line.strip()]
    assert 15 <= len(lines) <= 25


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", readme_example()], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"^87 ops timed in", done.stdout, re.M), done.stdout
    assert "has no calibration yet" in done.stderr  # the uncalibrated table is said so
    assert (tmp_path / "demo" / "search" / "pareto.json").is_file()
    assert (tmp_path / "demo" / "bundle" / "model.onnx").is_file()
    assert re.search(r"predicted [0-9.]+ ms, measured [0-9.]+ ms", done.stdout), done.stdout
