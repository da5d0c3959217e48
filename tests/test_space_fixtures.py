"""The built-in MobileNetV3 spaces reproduce their frozen behaviour (tests/space_fixtures.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from space_fixtures import CASES, FIXTURES, frozen


@pytest.mark.parametrize("name", sorted(CASES))
def test_space_reproduces_frozen_fixture(name):
    want = json.loads((FIXTURES / f"space_{name}.json").read_text())
    want_arrays = np.load(FIXTURES / f"space_{name}.npz")
    got, got_arrays = frozen(name, want["options"])
    for key in want:  # op keys per resolution, archs, encodings, ops, MACs, params
        assert got[key] == want[key], key
    assert sorted(got_arrays) == sorted(want_arrays)
    for key, expected in want_arrays.items():
        assert np.abs(expected).max() > 0.1  # outputs a wrong weight would visibly change
        np.testing.assert_allclose(got_arrays[key], expected, rtol=1e-5, atol=1e-5)


def test_shipped_latency_tables_name_only_op_keys_of_their_space():
    from hwnas.space import get_space

    tables = [p for p in (FIXTURES.parent.parent / "latency_tables").glob("*.json")
              if not p.name.endswith(".calibration.json")]
    assert tables
    for path in tables:
        table = json.loads(path.read_text())
        config = dict(table["space"]["config"])
        space = get_space(config.pop("name"), **config)
        assert set(table["entries"]) == set(space.all_ops()), path.name
