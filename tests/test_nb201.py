"""The NAS-Bench-201 cell space: encoding, arch_str conversion, variation, op keys."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from hwnas.errors import InputError
from hwnas.space import get_space
from hwnas.space.nb201 import EDGES, OPS, from_arch_str, to_arch_str

NB201_CSV = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks" / "nb201.csv"


@pytest.fixture
def space():
    return get_space("nb201")


def test_arch_str_edge_order_follows_the_benchmark_string():
    text = "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"
    arch = from_arch_str(text)
    assert arch["edges"] == ["nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3", "skip_connect", "none",
                             "nor_conv_3x3"]
    assert EDGES == ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
    assert to_arch_str(arch) == text


def test_encode_decode_is_lossless_over_the_whole_space(space):
    archs = space.all_archs()
    assert len(archs) == len(OPS) ** 6
    X = np.array([space.encode(a) for a in archs])
    xl, xu = space.bounds
    assert (X >= xl).all() and (X <= xu).all()
    assert len({x.tobytes() for x in X}) == len(archs)
    assert all(space.decode(x) == a for x, a in zip(X[::97], archs[::97], strict=True))


@pytest.mark.skipif(not NB201_CSV.is_file(), reason=f"benchmark table not found at {NB201_CSV}")
def test_every_benchmark_arch_str_round_trips_and_covers_the_space(space):
    with NB201_CSV.open() as f:
        strings = [row["arch_str"] for row in csv.DictReader(f)]
    archs = [from_arch_str(s) for s in strings]
    assert [to_arch_str(a) for a in archs] == strings
    assert len({space.encode(a).tobytes() for a in archs}) == len(OPS) ** 6


@pytest.mark.parametrize("bad", [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|",  # two nodes
    "|conv_5x5~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|none~1|none~2|",  # unknown op
    "|nor_conv_3x3~1|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|none~1|none~2|",  # wrong source
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|+|skip_connect~0|none~1|none~2|",  # node 2 has one input
])
def test_malformed_arch_str_is_an_input_error(bad):
    with pytest.raises(InputError, match="arch_str"):
        from_arch_str(bad)


def test_validate_rejects_unknown_ops_and_wrong_length(space):
    with pytest.raises(InputError):
        space.validate({"edges": ["nor_conv_5x5"] * 6})
    with pytest.raises(InputError):
        space.validate({"edges": ["none"] * 5})


def test_mutation_changes_only_chosen_edges_to_other_ops(space):
    rng = np.random.default_rng(0)
    parent = space.sample(rng)
    assert space.mutate(parent, rng, prob=0.0) == parent
    child = space.mutate(parent, rng, prob=1.0)
    assert all(a != b for a, b in zip(parent["edges"], child["edges"], strict=True))


def test_crossover_takes_each_edge_from_a_parent(space):
    rng = np.random.default_rng(1)
    a, b = {"edges": ["none"] * 6}, {"edges": ["nor_conv_3x3"] * 6}
    children = [space.crossover(a, b, rng) for _ in range(20)]
    assert all(set(c["edges"]) <= {"none", "nor_conv_3x3"} for c in children)
    assert len({tuple(c["edges"]) for c in children}) > 1


def test_ops_list_each_stage_cell_edge_and_skip_none(space):
    arch = {"edges": ["nor_conv_3x3", "none", "none", "skip_connect", "none", "avg_pool_3x3"]}
    keys = space.ops(arch)
    # stem + 2 reductions + head + 3 stages x 5 cells x 3 non-'none' edges
    assert len(keys) == 4 + 3 * 5 * 3
    assert not any("|none|" in k for k in keys)
    assert "nb201|nor_conv_3x3|i64x8x8|o64x8x8" in keys
    assert set(keys) <= set(space.all_ops())
    assert len(space.ops(space.smallest())) == 4


def _cell(ops: str) -> dict:  # "-s13p": none, skip, conv 1x1, conv 3x3, avg pool; edges in arch_str order
    code = {"-": "none", "s": "skip_connect", "1": "nor_conv_1x1", "3": "nor_conv_3x3", "p": "avg_pool_3x3"}
    return {"edges": [code[c] for c in ops]}


@pytest.mark.parametrize("ops, live", [
    ("333333", "LLLLLL"),
    ("------", "......"),
    ("---3--", "...L.."),   # input -> output directly; nodes 1 and 2 feed nothing
    ("3p13--", "...L.."),   # the same function: the convolutions into nodes 1, 2 are dead
    ("3---s-", "L...L."),   # input -> node 1 -> output
    ("-3-s--", "...L.."),   # skip input -> output; node 2 feeds only 'none' edges
    ("--3--1", "......"),   # node 2 reachable only through node 1, which nothing feeds
    ("1-1s-1", "L.LL.L"),
])
def test_live_edges_are_those_on_an_input_output_path(space, ops, live):
    assert "".join("L" if v else "." for v in space.live_edges(_cell(ops))) == live


def test_removing_dead_edges_keeps_live_ones_and_vectorises(space):
    assert space.without_dead_edges(_cell("3p13--")) == _cell("---3--")
    assert space.without_dead_edges(_cell("1-1s-1")) == _cell("1-1s-1")
    archs = space.all_archs()
    X = np.array([space.encode(a) for a in archs])
    S, upper = space.structure_genes(X)
    assert S.shape == X.shape and (upper == len(OPS) - 1).all()
    # live edges keep their op, dead ones become 'none'; doing it twice changes nothing
    assert ((S == X) | (S == 0)).all() and (space.structure_genes(S)[0] == S).all()
    picks = np.random.default_rng(0).choice(len(archs), 200, replace=False)
    assert all(space.decode(S[i]) == space.without_dead_edges(archs[i]) for i in picks)
    # 9,445 distinct functions among the 15,625 cells, all but one (the empty cell) connected
    assert len({row.tobytes() for row in S}) == 9445


def test_surrogate_genes_add_op_counts_of_the_live_cell_and_of_the_whole_cell(space):
    X = np.array([space.encode(_cell(c)) for c in ("3p13--", "1-1s-1", "------")])
    S, upper = space.surrogate_genes(X)
    n_ops = len(OPS)
    assert S.shape == (3, 6 + 2 * n_ops * 6) and len(upper) == S.shape[1] and (S <= upper).all()
    assert (S[:, :6] == space.structure_genes(X)[0]).all()
    # counts come as thermometer codes: a code's ones are its count
    codes = S[:, 6:].reshape(3, 2, n_ops, 6)
    assert (np.diff(codes, axis=-1) <= 0).all()
    live_counts, all_counts = codes.sum(axis=-1).transpose(1, 0, 2)
    assert (all_counts.sum(axis=1) == 6).all() and (live_counts.sum(axis=1) == 6).all()
    # "3p13--": one live 3x3 convolution; the whole cell runs two of them, a pool and a 1x1
    conv3, conv1, pool, none = (OPS.index(o) for o in ("nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3", "none"))
    assert live_counts[0, conv3] == 1 and live_counts[0, none] == 5
    assert all_counts[0, conv3] == 2 and all_counts[0, pool] == 1 and all_counts[0, conv1] == 1
    assert live_counts[2, none] == 6 and all_counts[2, none] == 6


def test_the_surrogate_view_of_what_a_cell_computes_ignores_its_dead_edges(space):
    from hwnas.search.gp import surrogate_views
    from hwnas.space.base import count_codes

    # "3p13--" and "1s13--" differ in the dead edges 0 and 1 alone; "3p13-3" in a live one
    X = np.array([space.encode(_cell(c)) for c in ("3p13--", "1s13--", "3p13-3")])
    full = np.hstack([X, space.surrogate_genes(X)[0]])
    (view,) = surrogate_views(space, full)
    live = space.structure_genes(X)[0]
    np.testing.assert_array_equal(full[:, view], np.hstack([live, count_codes(live, len(OPS))]))
    assert (full[0, view] == full[1, view]).all() and (full[0] != full[1]).sum() >= 4
    assert (full[0, view] != full[2, view]).any()
    # rows without the surrogate columns get no view
    assert surrogate_views(space, X) == []


@pytest.mark.skipif(not NB201_CSV.is_file(), reason=f"benchmark table not found at {NB201_CSV}")
def test_surrogate_fit_ranks_unseen_cells_and_accuracy_fits_on_what_the_cell_computes():
    from hwnas.errors import InputError
    from hwnas.search.tabular import load_table, surrogate_fit

    table = load_table("nb201", NB201_CSV, "acc_cifar10_test_200ep", "lat_ms_fpga")
    fit = surrogate_fit(table, n_train=120, draws=2)
    # fpga latency is nearly a sum of op costs: well ranked from 120 cells; accuracy less so, but ranked
    assert fit["latency"]["spearman"] > 0.8 and fit["accuracy"]["spearman"] > 0.5
    assert fit["accuracy"]["view_per_draw"] == [1, 1] and fit["latency"]["view_per_draw"] == [0, 0]
    with pytest.raises(InputError, match="n_train"):
        surrogate_fit(table, n_train=1)


def test_count_codes_differ_by_as_much_as_the_counts_do():
    from hwnas.space.base import count_codes, value_counts

    Z = np.array([[3, 0, 0, 0], [3, 3, 0, 0], [3, 3, 3, 3]])
    codes = count_codes(Z, 4)
    assert codes.shape == (3, 4 * 4) and set(np.unique(codes)) <= {0, 1}
    np.testing.assert_array_equal(codes.reshape(3, 4, 4).sum(axis=-1), value_counts(Z, 4))
    hamming = lambda a, b: int((codes[a] != codes[b]).sum())  # noqa: E731
    # one conv against two: 2 columns differ (a conv and a zero); one against four: 6
    assert hamming(0, 1) == 2 and hamming(0, 2) == 6 and hamming(1, 2) == 4
