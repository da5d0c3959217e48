"""Shared test settings: one thread (torch and BLAS), so the suite behaves the same on any machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from threadpoolctl import threadpool_limits

torch.set_num_threads(1)
# no compiled-library cache unless a test sets one: a hit would skip the compile a test checks
os.environ["HWNAS_CACHE_DIR"] = "off"
# one BLAS thread too (NumPy / SciPy): a BLAS pool waiting for cores that other work holds made the
# surrogate-driven search tests 5-25x slower on a busy 2-core machine
threadpool_limits(limits=1, user_api="blas")

REPO = Path(__file__).resolve().parent.parent
SHARED_BENCHMARKS = REPO.parent / "shared" / "benchmarks"


@pytest.fixture
def shared_benchmarks() -> Path:
    """The public benchmark tables kept beside the repository (skip where they are absent)."""
    if not SHARED_BENCHMARKS.is_dir():
        pytest.skip(f"public benchmark tables not found at {SHARED_BENCHMARKS}")
    return SHARED_BENCHMARKS


def pytest_collection_modifyitems(config, items):
    """Tests marked `heavy` (minutes each) run only when asked: `-m heavy` or HWNAS_HEAVY_TESTS=1."""
    if os.environ.get("HWNAS_HEAVY_TESTS") == "1" or "heavy" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="heavy (minutes each): run with HWNAS_HEAVY_TESTS=1 or -m heavy")
    for item in items:
        if "heavy" in item.keywords:
            item.add_marker(skip)
