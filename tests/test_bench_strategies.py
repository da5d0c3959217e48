"""Synthetic latency columns (`hwnas.search.tabular.synthetic_csv`) and `tools/bench_strategies.py`'s merging
of saved runs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from hwnas.search.tabular import SYNTHETIC, synthetic_csv

TOOLS = Path(__file__).resolve().parents[1] / "tools"


@pytest.fixture()
def tool(monkeypatch):
    monkeypatch.syspath_prepend(str(TOOLS))
    import bench_strategies

    return bench_strategies


def _write(path: Path, rows: list[tuple[str, float]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "arch_str", "acc_x", "lat_ms_dev"])
        for i, (arch, lat) in enumerate(rows):
            w.writerow([i, arch, 50.0, lat])


def test_synthetic_columns_round_prune_and_perturb(tmp_path):
    rows = [("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", 7.4),  # output sees no input
            ("|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|", 17.2),
            ("|skip_connect~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|none~0|none~1|nor_conv_3x3~2|", 12.6),
            ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|", 30.1)]
    src, out = tmp_path / "t.csv", tmp_path / "s.csv"
    _write(src, rows)
    added = synthetic_csv(src, ["lat_ms_dev"], list(SYNTHETIC), out)
    assert added == ["lat_ms_dev_wholems", "lat_ms_dev_stairs", "lat_ms_dev_interaction"]
    with out.open() as f:
        got = list(csv.DictReader(f))
    lat = np.array([r[1] for r in rows])
    assert [float(r["lat_ms_dev_wholems"]) for r in got] == [7.0, 17.0, 13.0, 30.0]
    stairs = np.array([float(r["lat_ms_dev_stairs"]) for r in got])
    np.testing.assert_allclose(stairs, [7.4e-3, 17.2, 12.6, 30.1])
    inter = np.array([float(r["lat_ms_dev_interaction"]) for r in got])
    assert not np.allclose(inter, lat) and (inter >= lat.min()).all()
    assert np.abs(inter - lat).max() <= 0.2 * lat.std() * 3  # a standardised term, a fifth of the spread
    synthetic_csv(src, ["lat_ms_dev"], ["interaction"], tmp_path / "again.csv")
    with (tmp_path / "again.csv").open() as f:
        assert [r["lat_ms_dev_interaction"] for r in csv.DictReader(f)] == [r["lat_ms_dev_interaction"] for r in got]


def test_merging_saved_runs_replaces_pairs_and_keeps_the_table_order(tool):
    def row(acc, lat, hv):
        return {"accuracy": acc, "latency": lat, "hv_ratio": hv}

    first = {"a": [row("x", "l2", 0.1), row("x", "l1", 0.2)], "b": [row("x", "l1", 0.5)]}
    second = {"a": [row("x", "l2", 0.9)]}
    merged = tool.merge_results([first, second], ["x"], ["l1", "l2"])
    assert [(r["latency"], r["hv_ratio"]) for r in merged["a"]] == [("l1", 0.2), ("l2", 0.9)]
    assert merged["b"] == [row("x", "l1", 0.5)]


def test_synthetic_columns_refuse_a_missing_column_and_an_existing_output(tmp_path):
    from hwnas.errors import InputError

    src, out = tmp_path / "t.csv", tmp_path / "s.csv"
    _write(src, [("|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|", 17.2)])
    with pytest.raises(InputError, match="no column 'lat_ms_other'") as info:
        synthetic_csv(src, ["lat_ms_other"], ["wholems"], out)
    assert info.value.field == "lat_ms_other" and not out.exists()
    out.write_text("kept\n")
    with pytest.raises(InputError, match="already exists"):
        synthetic_csv(src, ["lat_ms_dev"], ["wholems"], out)
    assert out.read_text() == "kept\n"
    with pytest.raises(InputError, match="unknown kind"):
        synthetic_csv(src, ["lat_ms_dev"], ["fuzzy"], tmp_path / "new.csv")
