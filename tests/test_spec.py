"""Spaces written as data: the spec's checks, the derived space (encoding, variation, op keys, cost),
the generic weight-sharing supernet (extraction == active path, channel sorting) and the built-ins."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from hwnas.cli import main as cli
from hwnas.errors import InputError
from hwnas.space import get_space, parse_spec, space_names
from hwnas.space.layers import build_op_module, op_params
from hwnas.supernet import build_supernet, recalibrate_bn

# the contract, with tiny widths and resolutions: every block type and elastic dimension
CONTRACT = {
    "name": "tiny-all-blocks",
    "input": {"channels": 3, "resolutions": [16, 32]},
    "classes": 5,
    "stem": {"block": "conv", "width": [8, 12], "kernel": 3, "stride": 2, "act": "hswish"},
    "stages": [
        {"block": "mbconv", "width": [8, 16], "depth": [1, 2], "kernel": [3, 5, 7], "expand": [1, 3, 4],
         "stride": 2, "se": True, "act": "relu"},
        {"block": "bottleneck", "width": [16, 24], "depth": [1, 2], "expand": [0.25, 0.5], "kernel": [3, 5],
         "stride": 1, "act": "relu"},
        {"block": "conv", "width": [16, 24], "depth": [1, 2], "kernel": [3, 5], "stride": 1, "act": "relu"},
        {"block": "fused_mbconv", "width": [16, 24], "depth": [1, 2], "kernel": [3, 5], "expand": [1, 2],
         "se": True, "act": "silu"},
        {"block": "basic", "width": [16, 24], "depth": [1, 2], "kernel": [3, 5], "stride": 2},
        {"block": "cell", "width": [16, 24], "nodes": 4, "ops": ["none", "skip", "conv1x1", "conv3x3",
                                                                   "avgpool3x3"], "repeat": [1, 2]},
    ],
    "head": {"width": 32, "act": "hswish", "dropout": 0.1},
}


@pytest.fixture(scope="module")
def space():
    return get_space("tiny", spec=CONTRACT)


@pytest.fixture(scope="module")
def supernet(space):
    torch.manual_seed(0)
    net = build_supernet(space)
    g = torch.Generator().manual_seed(1)
    largest = space.largest()
    recalibrate_bn(net, [torch.randn(4, *space.input_shape(largest), generator=g) for _ in range(2)], largest)
    with torch.no_grad():  # distinct BN affine parameters so every slice matters
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.3 + 0.7)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.05)
        net.classifier.weight.mul_(10.0)  # logits of order 1: a wrong weight would visibly change them
    return net.eval()


def _archs(space, n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(n)]


def test_encoding_is_fixed_length_lossless_and_within_bounds(space):
    xl, xu = space.bounds
    rng = np.random.default_rng(1)
    for arch in _archs(space, 60):
        x = space.encode(arch)
        assert x.shape == xl.shape and np.all(x >= xl) and np.all(x <= xu)
        assert space.decode(x) == arch == space.validate(arch)
        assert json.loads(json.dumps(arch)) == arch
        for child in (space.mutate(arch, rng, 0.3), space.crossover(arch, space.sample(rng), rng)):
            assert space.validate(child) == child
    assert len({json.dumps(space.sample(rng)) for _ in range(200)}) > 190


def test_unused_slots_are_canonical_and_bad_archs_name_the_field(space):
    arch = space.largest()
    arch["d"][1] = 1
    arch["k"][2] = 7  # the second slot of stage 1, now unused
    assert space.validate(arch)["k"][2] == 3
    with pytest.raises(InputError, match=r"arch\.w\[1\]"):
        space.validate({**space.largest(), "w": [8, 9, 16, 16, 16, 16, 16]})
    with pytest.raises(InputError, match="keys r, d, w, k, e, c"):
        space.validate({"r": 16})


def test_op_keys_cover_every_subnet_and_count_its_parameters(space):
    every = set(space.all_ops())
    for arch in _archs(space, 30):
        keys = space.ops(arch)
        assert set(keys) <= every
        net = space.build(arch)
        n_params = sum(p.numel() for p in net.parameters())
        assert space.params(arch) == n_params  # the op keys' cost formulas match the modules
        assert space.flops(space.smallest()) < space.flops(arch) or arch == space.smallest()
    for key in every:  # every key builds the module it names, and counts its parameters
        module, shape = build_op_module(key)
        assert sum(p.numel() for p in module.parameters()) == op_params(key)
        with torch.no_grad():
            module(torch.randn(1, *shape))


def test_extracted_subnet_equals_the_supernets_active_path(space, supernet):
    for arch in _archs(space, 25):
        x = torch.randn(2, *space.input_shape(arch))
        sub = supernet.extract(arch)
        assert not any(type(m).__module__.startswith("hwnas.supernet") for m in sub.modules())
        with torch.no_grad():
            supernet.set_active(arch)
            expected = supernet(x)
            got = sub(x)
        assert got.shape == (2, space.num_classes)
        assert expected.std().item() > 0.05
        assert (got - expected).abs().max().item() <= 1e-5


def test_sorting_channels_keeps_the_largest_subnet_and_extraction_exact(space):
    torch.manual_seed(3)
    net = build_supernet(space)
    largest = space.largest()
    recalibrate_bn(net, [torch.randn(4, *space.input_shape(largest)) for _ in range(2)], largest)
    net.eval()
    x = torch.randn(2, *space.input_shape(largest))
    with torch.no_grad():
        net.set_active(largest)
        before = net(x)
        w0 = net.stages[1].blocks[0].project.weight.clone()
        net.sort_channels()
        after = net(x)
    assert (before - after).abs().max().item() < 1e-4
    assert not torch.equal(w0, net.stages[1].blocks[0].project.weight)  # something moved
    for arch in _archs(space, 5, seed=4):
        xa = torch.randn(2, *space.input_shape(arch))
        with torch.no_grad():
            net.set_active(arch)
            assert (net(xa) - net.extract(arch)(xa)).abs().max().item() <= 1e-5


def test_config_rebuilds_the_space_and_options_override_the_input(space):
    again = get_space(**space.config())
    assert again.spec == space.spec and again.all_ops() == space.all_ops()
    other = get_space("tiny", spec=CONTRACT, in_channels=1, num_classes=3, resolutions=[32])
    assert (other.in_channels, other.num_classes, other.resolutions) == (1, 3, (32,))
    with pytest.raises(InputError, match="depth_mult"):
        get_space("tiny", spec=CONTRACT, depth_mult=2)


def test_width_mult_scales_every_width_rounded_to_multiples_of_8(space):
    wide = get_space("tiny", spec=CONTRACT, width_mult=2)
    assert [st.width for st in wide.stages] == [tuple(2 * w for w in st.width) for st in space.stages]
    assert wide.head.width == 64 and wide.spec.width_mult == 2 and get_space(**wide.config()).spec == wide.spec
    half = get_space("tiny", spec={**CONTRACT, "width_mult": 0.5})
    # 12 * 0.5 = 6 rounds up to 8 (never below 8); 24 * 0.5 = 12 rounds to 16 (not more than 10 % down)
    assert half.stages[0].width == (8,) and half.stages[2].width == (8, 16) and half.head.width == 16
    assert "width_mult" not in space.spec.to_dict()  # defaults stay out of stored specs


def test_ceil_sizes_take_resolutions_the_strides_do_not_divide():
    spec = {**CONTRACT, "input": {"channels": 3, "resolutions": [20, 28], "sizes": "ceil"}}
    ceil = get_space("tiny", spec=spec)
    arch = {**ceil.largest(), "r": 20}
    # stem 2, stage strides 2 and 2: 20 -> 10 -> 5 -> 3 px, as the 'same'-padded convolutions compute
    assert ceil.blocks(arch)[-1][-1].out_size == 3
    net = build_supernet(ceil).eval()
    x = torch.randn(2, *ceil.input_shape(arch))
    with torch.no_grad():
        net.set_active(arch)
        assert (net(x) - net.extract(arch)(x)).abs().max().item() <= 1e-5


def test_a_spec_file_is_a_space_by_its_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(CONTRACT))
    assert get_space(str(path)).name == "tiny-all-blocks"


@pytest.mark.parametrize("name", ["resnet", "chain", "nb201-supernet"])
def test_builtin_spec_spaces_extract_exactly(name):
    assert name in space_names()
    space = get_space(name, in_channels=1)
    torch.manual_seed(0)
    net = build_supernet(space).eval()
    for arch in _archs(space, 2):
        x = torch.randn(1, *space.input_shape(arch))
        with torch.no_grad():
            net.set_active(arch)
            assert (net(x) - net.extract(arch)(x)).abs().max().item() <= 1e-4


def test_nb201_supernet_cells_follow_the_benchmarks_edge_order():
    from hwnas.space.nb201 import EDGES

    space = get_space("nb201-supernet")
    assert [(src, dst) for dst, src in EDGES] == list(space.stages[1].edges)
    assert get_space("nb201").name == "nb201"  # the tabular benchmark space is unchanged


def test_surrogate_genes_of_a_cell_stage_are_its_built_edges_and_their_op_counts():
    from hwnas.search.gp import surrogate_genes
    from hwnas.search.optimize import search

    space = get_space("nb201-supernet")
    stage = space.stages[1]
    ops = ["avgpool3x3", "conv3x3", "conv1x1", "skip", "skip", "none"]  # edge (2, 3) 'none': node 2 is dead
    arch = space.sample(np.random.default_rng(0))
    arch["c"] = [list(ops) if st.block == "cell" else [] for st in space.stages]
    S, upper = space.surrogate_genes(space.encode(arch)[None])
    n_ops, n_edges = len(stage.ops), len(stage.edges)
    per_stage = n_edges + n_ops * n_edges
    assert S.shape == (1, per_stage * len(space.cell_stages)) and (S <= upper).all()
    built, counts = S[0, :n_edges], S[0, n_edges:per_stage].reshape(n_ops, n_edges).sum(axis=1)
    # the edges into node 2 (conv3x3 from 0, conv1x1 from 1) are not built; the others are
    assert [stage.ops[g] for g in built] == ["avgpool3x3", "none", "none", "skip", "skip", "none"]
    assert dict(zip(stage.ops, counts.tolist(), strict=True)) == {
        "none": 3, "skip": 2, "conv1x1": 0, "conv3x3": 0, "avgpool3x3": 1}
    # the view of what the network computes: every gene but the raw edge ops, then the built edges;
    # changing the op of an edge that is not built leaves it as it was
    from hwnas.search.gp import surrogate_views

    other = json.loads(json.dumps(arch))
    other["c"] = [["avgpool3x3", "conv1x1", "skip", "skip", "skip", "none"] if st.block == "cell" else []
                  for st in space.stages]
    X = np.array([space.encode(a) for a in (arch, other)])
    full = np.hstack([X, space.surrogate_genes(X)[0]])
    (view,) = surrogate_views(space, full)
    assert (full[0, view] == full[1, view]).all() and (full[0] != full[1]).any()
    assert not set(view.tolist()) & {i for i, (group, _, _) in enumerate(space.genes) if group == "c"}
    # a space without cell stages has none, and a surrogate then uses the encoding alone
    chain = get_space("chain")
    assert chain.surrogate_views() == []
    assert chain.surrogate_genes(np.zeros((1, len(chain.bounds[0])), dtype=np.int64)) is None
    assert surrogate_genes(chain, np.zeros((1, len(chain.bounds[0])), dtype=np.int64)) is None
    # the default strategy's surrogate runs on them
    macs = lambda archs: np.array([space.flops(a) for a in archs], float)  # noqa: E731
    params = lambda archs: -np.array([space.params(a) for a in archs], float)  # noqa: E731
    result = search(space, {"macs": macs, "params": params}, ("macs", "params"), None, "pareto-local-search",
                    evaluations=60, seed=0, progress=False)
    assert len(result.evaluated) == 60


# --- malformed specs: refused before anything runs, naming the file, the stage and the key -----------
def _with(path: list, value) -> dict:
    spec = json.loads(json.dumps(CONTRACT))
    node = spec
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return spec


MALFORMED = [
    (_with(["stages", 0, "block"], "transformer"), "stages[0].block", "unknown block"),
    (_with(["stages", 1, "width"], []), "stages[1].width", "empty list"),
    (_with(["stages", 2, "depth"], [0, 1]), "stages[2].depth", "positive integer"),
    (_with(["stages", 0, "kernel"], [3, 4]), "stages[0].kernel", "odd"),
    (_with(["stages", 0, "expand"], [-1, 3]), "stages[0].expand", "positive number"),
    (_with(["stages", 0, "expand"], [0.5]), "stages[0].expand", "expand >= 1"),
    (_with(["stages", 4, "stride"], 3), "stages[4].stride", "cannot chain"),
    (_with(["stages", 4, "stride"], 0), "stages[4].stride", "positive integer"),
    (_with(["input", "resolutions"], [16, 20]), "stages[4].stride", "resolution 20"),
    (_with(["stages", 5, "ops"], ["none"]), "stages[5].ops", "connects the cell's input"),
    (_with(["stages", 5, "edges"], [[0, 1], [2, 3]]), "stages[5].edges", "connects the cell's input"),
    (_with(["stages", 5, "ops"], ["conv3x3", "sepconv"]), "stages[5].ops", "unknown cell op"),
    (_with(["stages", 2, "expand"], 2), "stages[2].expand", "unknown key for a 'conv' block"),
    (_with(["stages", 3, "se"], "yes"), "stages[3].se", "true or false"),
    (_with(["stages", 3, "act"], "gelu"), "stages[3].act", "one of"),
    (_with(["stages", 1, "width"], KeyError), "stages[1].width", "missing"),
    (_with(["head", "width"], [32, 64]), "head.width", "fixed"),
    (_with(["stem", "depth"], [1, 2]), "stem.block", "the stem is one block"),
    (_with(["stages"], []), "stages", "non-empty list"),
    (_with(["stages", 1, "expand"], [5.0]), "stages[1].expand", "<= 4"),
    (_with(["input", "sizes"], "floor"), "input.sizes", "one of exact, ceil"),
    (_with(["input"], {"channels": 3, "resolutions": [4, 32], "sizes": "ceil"}), "input.resolutions",
     "below the total stride 8"),
    (_with(["width_mult"], 0), "width_mult", "a number in [0.1, 4]"),
]


@pytest.mark.parametrize(("spec", "field", "message"), MALFORMED, ids=[m[1] + ":" + m[2] for m in MALFORMED])
def test_malformed_spec_exits_2_naming_file_stage_and_key(tmp_path, capsys, spec, field, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert cli(["space", "show", str(path), "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert str(path) in out["error"] and f"field '{field}'" in out["error"] and message in out["error"], out
    with pytest.raises(InputError):
        parse_spec(spec)


def test_unreadable_spec_files_exit_2(tmp_path, capsys):
    bad_yaml = tmp_path / "broken.yaml"
    bad_yaml.write_text("name: [unclosed\n")
    assert cli(["space", "show", str(bad_yaml)]) == 2
    assert cli(["space", "show", str(tmp_path / "absent.yaml")]) == 2
    err = capsys.readouterr().err
    assert "broken.yaml" in err and "absent.yaml" in err


def test_space_show_reports_size_keys_and_cost_range(capsys, space):
    assert cli(["space", "show", "chain", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    chain = get_space("chain")
    assert info["size"] == chain.size() and info["op_keys"] == len(chain.all_ops())
    assert set(info["op_keys_per_resolution"]) == {str(r) for r in chain.resolutions}
    assert info["smallest_macs"] < info["largest_macs"] and info["smallest_params"] < info["largest_params"]
    assert info["largest"] == chain.largest()


# --- any spec: either refused with an InputError, or a space whose subnets extract exactly ------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_VALUES = st.one_of(st.integers(-2, 40), st.floats(-1, 8), st.just(float("nan")), st.booleans(), st.none(),
                    st.text(max_size=6), st.lists(st.integers(-1, 33), max_size=3),
                    st.sampled_from(["relu", "hswish", "none", "conv3x3", "skip", "cell", "basic"]))
_PATHS = st.sampled_from([("name",), ("input", "channels"), ("input", "resolutions"), ("classes",),
                          ("stem", "width"), ("stem", "stride"), ("head", "width"), ("head", "dropout")]
                         + [("stages", i, k) for i in range(6) for k in
                            ("block", "width", "depth", "kernel", "expand", "stride", "se", "act", "nodes", "ops",
                             "edges", "repeat", "extra")])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_PATHS, _VALUES), min_size=1, max_size=3))
def test_any_edited_spec_is_refused_cleanly_or_builds(edits):
    spec = json.loads(json.dumps(CONTRACT))
    for path, value in edits:
        node = spec
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    try:
        space = get_space("edited", spec=spec)
    except InputError as exc:
        assert exc.field  # the message names where the spec is wrong
        return
    arch = space.sample(np.random.default_rng(0))
    assert set(space.ops(arch)) <= set(space.all_ops())
    assert space.params(arch) == sum(p.numel() for p in space.build(arch).parameters())


def test_a_cell_with_no_input_to_output_path_exports_with_its_input():
    """A subnet whose cells are all 'none' outputs a constant; its ONNX graph must still take the input
    (validate and export feed it), and agree with torch."""
    import onnxruntime as ort

    from hwnas.export.onnx import onnx_bytes

    space = get_space("nb201-supernet", resolutions=[8])
    arch = space.largest()
    arch["c"] = [[] if not ops else ["none"] * len(ops) for ops in arch["c"]]
    net = build_supernet(space).eval()
    sub = net.extract(arch)
    session = ort.InferenceSession(onnx_bytes(sub, (1, *space.input_shape(arch))))
    assert len(session.get_inputs()) == 1
    x = torch.randn(1, *space.input_shape(arch))
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        assert np.abs(got - sub(x).numpy()).max() <= 1e-5


def test_a_cells_op_keys_are_what_its_exported_graph_computes():
    """Edges into nodes that reach no output are dead code the exporter drops, and every node adds its
    terms: per cell, the exported graph's Conv, AveragePool, Add and Mul nodes are the keys' (a conv
    edge one Conv, a pool one AveragePool, a sum of n terms n - 1 Adds, a node with no term one Mul)."""
    import onnx

    from hwnas.export import onnx as onnx_export
    from hwnas.space.layers import Cell
    from hwnas.space.spec_space import cell_keys

    stage = get_space("nb201-supernet").stages[1]
    rng = np.random.default_rng(0)
    choices = [["conv3x3", "none", "none", "skip", "none", "avgpool3x3"]]  # node 1 and 2 dead
    choices += [list(rng.choice(stage.ops, size=len(stage.edges))) for _ in range(60)]
    for ops in choices:
        keys = cell_keys(stage, ops, (8, 6, 6))
        want = {"Conv": sum("|conv" in k for k in keys),
                "AveragePool": sum("avgpool" in k for k in keys),
                "Add": sum(int(k.split("|n")[1]) - 1 for k in keys if k.startswith("cellsum") and "|n0" not in k),
                "Mul": sum(k.endswith("|n0") for k in keys)}
        graph = onnx.load_from_string(onnx_export.onnx_bytes(Cell(8, stage.nodes, stage.edges, ops).eval(),
                                                             (1, 8, 6, 6))).graph
        got = {op: sum(n.op_type == op for n in graph.node) for op in want}
        assert got == want, (ops, keys)
