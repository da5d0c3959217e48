"""Elastic MobileNetV3 spaces: encoding, sampling, variation, op keys, plain networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hwnas.errors import InputError
from hwnas.space import get_space, space_names
from hwnas.space.layers import parse_op_key

torch.set_num_threads(1)

SPACES = {
    "mbv3": {"resolutions": [32, 40]},
    "mbv3-small-input": {},
}


@pytest.fixture(params=sorted(SPACES), scope="module")
def space(request):
    return get_space(request.param, **SPACES[request.param])


def test_spaces_are_registered():
    assert {"mbv3", "mbv3-small-input"} <= set(space_names())


def test_default_options():
    big = get_space("mbv3")
    assert big.resolutions == (160, 176, 192, 208, 224)
    assert big.stage_widths == [24, 40, 80, 112, 160]
    assert (big.num_classes, big.in_channels) == (1000, 3)
    small = get_space("mbv3-small-input")
    assert small.resolutions == (20, 24, 28) and small.width_mult == 0.5
    assert (small.num_classes, small.in_channels) == (10, 1)
    # (sum over depths of 9^d)^5 subnets per resolution, ~2e19 as in OFA
    assert big.size() == (9**2 + 9**3 + 9**4) ** 5
    assert 1e19 < big.size() < 1e20


def test_config_rebuilds_the_space(space):
    again = get_space(**space.config())
    assert again.config() == space.config()
    assert again.all_ops() == space.all_ops()


def test_encode_decode_round_trip(space):
    rng = np.random.default_rng(0)
    xl, xu = space.bounds
    for _ in range(1000):
        arch = space.sample(rng)
        x = space.encode(arch)
        assert x.shape == xl.shape and np.all(x >= xl) and np.all(x <= xu)
        assert space.decode(x) == arch
        assert space.validate(arch) == arch
    # any vector within bounds decodes to a canonical arch (pymoo may hand us floats)
    for _ in range(200):
        x = rng.integers(xl, xu + 1).astype(float)
        arch = space.decode(x)
        assert space.decode(space.encode(arch)) == arch


def test_validate_canonicalises_unused_slots(space):
    arch = space.smallest()
    arch["k"][3] = 7  # stage 0 uses slots 0,1 only
    arch["e"][19] = 6
    canon = space.validate(arch)
    assert canon == space.smallest()
    assert space.ops(arch) == space.ops(canon)


@pytest.mark.parametrize(
    "mutation, field",
    [
        (lambda a: a.update(r=33), "arch.r"),
        (lambda a: a["d"].__setitem__(0, 5), "arch.d[0]"),
        (lambda a: a["k"].__setitem__(2, 4), "arch.k[2]"),
        (lambda a: a["e"].__setitem__(7, 2.0), "arch.e[7]"),
        (lambda a: a.update(k=a["k"][:-1]), "arch.k"),
        (lambda a: a.update(extra=1), "arch"),
        (lambda a: a.pop("d"), "arch"),
        (lambda a: a["d"].__setitem__(1, True), "arch.d[1]"),
    ],
)
def test_invalid_arch_is_input_error(space, mutation, field):
    arch = space.largest()
    mutation(arch)
    with pytest.raises(InputError) as err:
        space.validate(arch)
    assert err.value.field == field
    with pytest.raises(InputError):
        space.ops(arch)


def test_invalid_encoding_and_options_are_input_errors(space):
    xl, xu = space.bounds
    with pytest.raises(InputError):
        space.decode(xu + 1)
    with pytest.raises(InputError):
        space.decode(xl[:-1])
    with pytest.raises(InputError):
        space.decode(xl + 0.5)
    with pytest.raises(InputError):
        space.validate([1, 2, 3])
    for bad in ({"resolutions": []}, {"resolutions": [2]}, {"width_mult": 0}, {"num_classes": 0},
                {"in_channels": "3"}, {"bogus": 1}):
        with pytest.raises(InputError):
            get_space(space.name, **bad)


def test_mutate_and_crossover_stay_inside(space):
    rng = np.random.default_rng(1)
    parents = [space.sample(rng) for _ in range(50)]
    changed = 0
    for a, b in zip(parents, parents[1:] + parents[:1], strict=True):
        m = space.mutate(a, rng, prob=0.3)
        assert space.validate(m) == m
        changed += m != a
        c = space.crossover(a, b, rng)
        assert space.validate(c) == c
        # every gene of a child comes from a parent where that parent uses it
        assert c["r"] in (a["r"], b["r"])
        assert all(dc in (da, db) for dc, da, db in zip(c["d"], a["d"], b["d"], strict=True))
    assert changed > 40
    assert space.mutate(parents[0], rng, prob=0.0) == parents[0]


def test_ops_are_covered_by_all_ops(space):
    rng = np.random.default_rng(2)
    all_ops = set(space.all_ops())
    assert len(all_ops) == len(space.all_ops())
    seen = set()
    for arch in [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(300)]:
        ops = space.ops(arch)
        assert set(ops) <= all_ops
        seen.update(ops)
        # stem + first block + blocks + final expand, pool, feature mix, classifier
        assert len(ops) == 2 + sum(arch["d"]) + 4
    for key in all_ops:
        assert parse_op_key(key).key == key
    assert len(seen) > 0.8 * len(all_ops)


def test_all_ops_count():
    # per resolution: stem, first block, 5 stages x (first block, later block) x 9 (kernel, expand),
    # final expand, pool (minus the keys that are shared between resolutions)
    assert len(get_space("mbv3", resolutions=[224]).all_ops()) == 2 + 90 + 4
    assert len(get_space("mbv3").all_ops()) == 450
    assert len(get_space("mbv3-small-input").all_ops()) == 237


def test_keys_are_canonical_across_subnets(space):
    a = space.largest()
    b = space.largest()
    b["k"][0] = 3  # only the first elastic block differs
    ka, kb = space.ops(a), space.ops(b)
    assert ka[2] != kb[2]
    assert ka[:2] + ka[3:] == kb[:2] + kb[3:]
    # the op is described by its key alone: same key, same module structure
    m1, shape1 = space.build_op(ka[5])
    m2, shape2 = space.build_op(kb[5])
    assert shape1 == shape2
    assert [p.shape for p in m1.parameters()] == [p.shape for p in m2.parameters()]


def test_op_keys_name_shapes_and_hyperparameters():
    big = get_space("mbv3", resolutions=[224])
    ops = big.ops(big.largest())
    assert ops[0] == "conv|i3x224x224|o16x112x112|k3|s2|bn1|hs"
    assert ops[1] == "mbconv|i16x112x112|o16x112x112|k3|e1|s1|se0|relu|res1"
    assert ops[2] == "mbconv|i16x112x112|o24x56x56|k7|e6|s2|se0|relu|res0"
    assert ops[3] == "mbconv|i24x56x56|o24x56x56|k7|e6|s1|se0|relu|res1"
    assert ops[6] == "mbconv|i24x56x56|o40x28x28|k7|e6|s2|se1|relu|res0"
    assert ops[-4:] == [
        "conv|i160x7x7|o960x7x7|k1|s1|bn1|hs",
        "pool|i960x7x7|o960x1x1",
        "conv|i960x1x1|o1280x1x1|k1|s1|bn0|hs",
        "linear|i1280x1x1|o1000",
    ]


@pytest.mark.parametrize("bad", ["", "conv", "warp|i1x2x2|o1x2x2", "conv|i3x8x8|o8x4x4|k3|s2|bn1|gelu",
                                 "conv|i3x8x8|o8x8x8|k3|s2|bn1|hs", "pool|i8x4x4|o8x2x2",
                                 "mbconv|i8x8x8|o16x8x8|k3|e3|s1|se0|relu|res1", "conv|i3x8x8|o8x4x4|k03|s2|bn1|hs"])
def test_malformed_op_key_is_input_error(space, bad):
    with pytest.raises(InputError):
        space.build_op(bad)


def test_build_op_chain_equals_build(space):
    rng = np.random.default_rng(3)
    for arch in [space.largest(), space.smallest(), space.sample(rng)]:
        ops = space.ops(arch)
        net = space.build(arch)
        assert len(net) == len(ops)
        x = torch.randn(2, *space.input_shape(arch))
        with torch.no_grad():
            for key, module in zip(ops, net, strict=True):
                op, in_shape = space.build_op(key)
                assert tuple(x.shape[1:]) == in_shape
                assert type(op) is type(module)
                assert {k: v.shape for k, v in op.state_dict().items()} == {
                    k: v.shape for k, v in module.state_dict().items()}
                out = module(x)
                assert tuple(out.shape[1:]) == parse_op_key(key).out_shape
                # the standalone op computes the same function given the same weights
                op.load_state_dict(module.state_dict())
                torch.testing.assert_close(op(x), out, rtol=0, atol=0)
                x = out
        assert tuple(x.shape) == (2, space.num_classes)


def test_params_and_flops(space):
    rng = np.random.default_rng(4)
    for arch in [space.largest(), space.smallest(), space.sample(rng)]:
        net = space.build(arch)
        assert space.params(arch) == sum(p.numel() for p in net.parameters())
    assert space.flops(space.largest()) > space.flops(space.sample(rng)) > space.flops(space.smallest())


def test_mbv3_matches_ofa_sizes():
    # OFA-MobileNetV3 (w1.0): largest subnet ~7.7M parameters
    big = get_space("mbv3")
    assert big.params(big.largest()) == 7_664_760
    assert 500e6 < big.flops(big.largest()) < 650e6


def test_sampled_archs_run(space):
    rng = np.random.default_rng(5)
    for _ in range(3):
        arch = space.sample(rng)
        with torch.no_grad():
            y = space.build(arch)(torch.randn(1, *space.input_shape(arch)))
        assert y.shape == (1, space.num_classes) and torch.isfinite(y).all()
