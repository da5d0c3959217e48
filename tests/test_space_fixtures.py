"""The built-in MobileNetV3 spaces reproduce their frozen behaviour (tests/space_fixtures.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from space_fixtures import CASES, FIXTURES, frozen, seeded_supernet


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


def mbv3_as_spec(space) -> dict:
    """An elastic MobileNetV3 space written as a spec: stem, the fixed first block, the five elastic
    stages, the final 1x1 expansion as a conv stage, the feature-mix conv as the head's."""
    stages = [{"block": "mbconv", "width": space.first_block_width, "kernel": 3, "expand": 1, "act": "relu"}]
    for stage, width in zip(space.layout.stages, space.stage_widths, strict=True):
        stages.append({"block": "mbconv", "width": width, "depth": list(space.depths), "kernel": list(space.kernels),
                       "expand": list(space.expands), "stride": stage.stride, "se": stage.se, "act": stage.act})
    stages.append({"block": "conv", "width": space.final_expand_width, "kernel": 1, "act": "hs"})
    return {"name": f"{space.name}-spec", "input": {"channels": space.in_channels,
                                                    "resolutions": list(space.resolutions)},
            "classes": space.num_classes, "stages": stages, "head": {"width": space.feature_mix_width, "act": "hs"},
            "stem": {"block": "conv", "width": space.stem_width, "kernel": 3, "stride": space.layout.stem_stride,
                     "act": "hs"}}


def spec_arch(arch: dict, space) -> dict:
    """The spec space's form of an elastic MobileNetV3 arch (stem, first block and final conv fixed)."""
    n = len(arch["d"])
    return {"r": arch["r"], "d": [1, 1, *arch["d"], 1],
            "w": [space.stem_width, space.first_block_width, *space.stage_widths, space.final_expand_width],
            "k": [3, 3, *arch["k"], 1], "e": [1, 1, *arch["e"], 1], "c": [[] for _ in range(n + 3)]}


def test_mbv3_written_as_a_spec_has_the_frozen_op_keys():
    """The spec machinery reproduces mbv3's op keys (so its latency tables would stay valid); the
    arch format, encoding and parameter names differ, which is why mbv3 keeps its own implementation."""
    from hwnas.space import get_space

    want = json.loads((FIXTURES / "space_mbv3.json").read_text())
    mbv3 = get_space("mbv3", **want["options"])
    spec = get_space("mbv3-spec", spec=mbv3_as_spec(mbv3))
    assert spec.all_ops() == want["all_ops"]
    for arch, keys in zip(want["archs"], want["ops"], strict=True):
        assert spec.ops(spec_arch(arch, mbv3)) == keys


def spec_state(mbv3_net) -> dict:
    """The MobileNetV3 supernet's weights under the spec supernet's parameter names."""
    out = {}
    for name, value in mbv3_net.state_dict().items():
        head, _, rest = name.partition(".")
        if head == "stem":
            new = "stages.0.blocks.0." + rest.replace("bn.", "conv.bn.bn.")
        elif head == "first_block":
            part, _, leaf = rest.partition(".")
            new = f"stages.1.blocks.0.{part}." + ("weight" if leaf == "conv.weight" else "bn.bn." + leaf[3:])
        elif head == "stages":
            s, j, rest = rest.split(".", 2)
            for old, repl in (("expand_conv.", "expand."), ("expand_bn.", "expand.bn."),
                              ("depthwise_conv.", "depthwise."), ("depthwise_bn.", "depthwise.bn."),
                              ("project_conv.", "project."), ("project_bn.", "project.bn.")):
                rest = rest.replace(old, repl) if rest.startswith(old) else rest
            new = f"stages.{int(s) + 2}.blocks.{j}.{rest}"
        elif head == "final_expand":
            new = f"stages.{len(mbv3_net.stages) + 2}.blocks.0.conv." + ("weight" if rest == "conv.weight"
                                                                        else "bn.bn." + rest[3:])
        elif head == "feature_mix":
            new = "mix.weight"
        else:
            new = "classifier." + rest.partition(".")[2]
        out[new] = value
    return out


def test_mbv3_written_as_a_spec_computes_the_frozen_outputs_with_the_same_weights():
    """The generic supernet, given mbv3's weights renamed, extracts subnets that compute the frozen
    outputs: the spec machinery reproduces mbv3's functions, not only its op keys."""
    from hwnas.space import get_space
    from hwnas.supernet import build_supernet

    want = json.loads((FIXTURES / "space_mbv3-small-input.json").read_text())
    want_arrays = np.load(FIXTURES / "space_mbv3-small-input.npz")
    mbv3 = get_space("mbv3-small-input", **want["options"])
    net, g = seeded_supernet(mbv3)
    spec = mbv3_as_spec(mbv3)
    spec["input"]["resolutions"] = [24]  # 20 and 28 px do not divide by the strides, which a spec refuses
    spec_space = get_space("mbv3-spec", spec=spec)
    spec_net = build_supernet(spec_space).eval()
    spec_net.load_state_dict(spec_state(net))
    import torch

    compared = 0
    for i, arch in enumerate(want["archs"]):
        x = torch.randn(2, *mbv3.input_shape(arch), generator=g)
        if arch["r"] != 24:
            continue
        with torch.no_grad():
            got = spec_net.extract(spec_arch(arch, mbv3))(x).numpy()
        np.testing.assert_allclose(got, want_arrays[f"y{i}"], rtol=1e-5, atol=1e-5)
        compared += 1
    assert compared >= 1
    rng = np.random.default_rng(5)  # and any subnet at 24 px: the two supernets agree
    for _ in range(6):
        arch = {**mbv3.sample(rng), "r": 24}
        x = torch.randn(2, *mbv3.input_shape(arch), generator=g)
        with torch.no_grad():
            expected = net.extract(arch)(x)
            got = spec_net.extract(spec_arch(arch, mbv3))(x)
        assert (got - expected).abs().max().item() <= 1e-5 and expected.abs().max().item() > 0.1
