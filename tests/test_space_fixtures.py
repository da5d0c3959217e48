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


def spec_arch(arch: dict, space) -> dict:
    """The spec space's form of an elastic MobileNetV3 arch (stem, first block and final conv fixed)."""
    n = len(arch["d"])
    return {"r": arch["r"], "d": [1, 1, *arch["d"], 1],
            "w": [space.stem_width, space.first_block_width, *space.stage_widths, space.final_expand_width],
            "k": [3, 3, *arch["k"], 1], "e": [1, 1, *arch["e"], 1], "c": [[] for _ in range(n + 3)]}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_spec_file_served_by_the_spec_machinery_has_the_frozen_op_keys(name):
    """The package's spec file (specs/NAME.yaml), served by the generic spec space, has the frozen op keys
    at every resolution (20 and 28 px included: 'ceil' sizes), so the latency tables fit it too."""
    from hwnas.space import get_space, spec_space

    want = json.loads((FIXTURES / f"space_{name}.json").read_text())
    mbv3 = get_space(name, **want["options"])
    assert mbv3.spec.source.endswith(f"specs/{name}.yaml")
    spec = spec_space(mbv3.spec)
    assert spec.all_ops() == want["all_ops"]
    for r, keys in want["ops_per_resolution"].items():
        assert spec_space(mbv3.spec, resolutions=[int(r)]).all_ops() == keys
    for arch, keys, macs, params in zip(want["archs"], want["ops"], want["flops"], want["params"], strict=True):
        assert spec.ops(spec_arch(arch, mbv3)) == keys
        assert (spec.flops(spec_arch(arch, mbv3)), spec.params(spec_arch(arch, mbv3))) == (macs, params)


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


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_spec_file_served_by_the_spec_machinery_computes_the_frozen_outputs(name):
    """The generic supernet of the package's spec file, given the MobileNetV3 supernet's weights renamed,
    extracts subnets that compute the frozen outputs at every resolution: the spec machinery reproduces
    mbv3's functions, not only its op keys."""
    import torch

    from hwnas.space import get_space, spec_space
    from hwnas.supernet import build_supernet

    want = json.loads((FIXTURES / f"space_{name}.json").read_text())
    want_arrays = np.load(FIXTURES / f"space_{name}.npz")
    mbv3 = get_space(name, **want["options"])
    net, g = seeded_supernet(mbv3)
    spec_net = build_supernet(spec_space(mbv3.spec)).eval()
    spec_net.load_state_dict(spec_state(net))
    for i, arch in enumerate(want["archs"]):
        x = torch.randn(2, *mbv3.input_shape(arch), generator=g)
        with torch.no_grad():
            got = spec_net.extract(spec_arch(arch, mbv3))(x).numpy()
        np.testing.assert_allclose(got, want_arrays[f"y{i}"], rtol=1e-5, atol=1e-5)
    rng = np.random.default_rng(5)  # and other subnets: the two supernets agree
    for _ in range(3):
        arch = mbv3.sample(rng)
        x = torch.randn(2, *mbv3.input_shape(arch), generator=g)
        with torch.no_grad():
            expected = net.extract(arch)(x)
            got = spec_net.extract(spec_arch(arch, mbv3))(x)
        assert (got - expected).abs().max().item() <= 1e-5 and expected.abs().max().item() > 0.1


def test_the_mobilenet_class_takes_its_configuration_from_the_spec_files(tmp_path):
    """The class serving `mbv3` / `mbv3-small-input` reads layout, choices and defaults from the
    package's spec files; an edited file changes it, and a spec of another shape is refused by stage."""
    import dataclasses

    import yaml

    from hwnas.errors import InputError
    from hwnas.space import get_space, load_spec
    from hwnas.space.catalog import builtin_spec_path
    from hwnas.space.mbv3 import ElasticMobileNetSpace

    for name in CASES:
        space, spec = get_space(name), load_spec(builtin_spec_path(name))
        assert (space.resolutions, space.num_classes, space.in_channels, space.width_mult) == (
            spec.input.resolutions, spec.classes, spec.input.channels, spec.width_mult)
        assert space.stage_widths == [spec.width(st.width[0]) for st in spec.stages[1:-1]]
    raw = yaml.safe_load(builtin_spec_path("mbv3").read_text())
    raw["stages"][3]["width"] = 88
    edited = tmp_path / "mbv3-edited.yaml"
    edited.write_text(yaml.safe_dump(raw))
    assert ElasticMobileNetSpace(load_spec(edited)).stage_widths == [24, 40, 88, 112, 160]
    chain = load_spec(builtin_spec_path("chain"))
    with pytest.raises(InputError, match="not a MobileNetV3 layout") as err:
        ElasticMobileNetSpace(chain)
    assert err.value.field == "stem"
    stages = list(load_spec(builtin_spec_path("mbv3")).stages)
    stages[2] = dataclasses.replace(stages[2], kernel=(3, 5))
    with pytest.raises(InputError, match="sharing one set") as err:
        ElasticMobileNetSpace(dataclasses.replace(load_spec(builtin_spec_path("mbv3")), stages=tuple(stages)))
    assert err.value.field == "stages[1]" or err.value.field == "stages[2]"


def test_the_demo_reuses_a_shipped_table_only_for_its_own_space():
    """The spec file served by the generic spec space has the same op keys but another architecture
    dict: the demo reuses the shipped table of `mbv3-small-input` for that name, not for the file."""
    from hwnas.demo import _same_space
    from hwnas.space import get_space
    from hwnas.space.catalog import builtin_spec_path

    table = FIXTURES.parent.parent / "latency_tables" / "cpu-ort-1t_mbv3-small-input.json"
    assert _same_space(table, get_space("mbv3-small-input").config())
    assert not _same_space(table, get_space(str(builtin_spec_path("mbv3-small-input"))).config())
