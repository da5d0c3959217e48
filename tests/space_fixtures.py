"""Frozen behaviour of the built-in elastic MobileNetV3 spaces (the fixtures under tests/fixtures/).

    python tests/space_fixtures.py   # rewrites tests/fixtures/space_<name>.{json,npz}

Per space: every op key per resolution, the op keys, encodings, MACs and parameters of a few
seeded subnets, and the outputs of those subnets extracted from a seeded supernet (BatchNorm
statistics estimated on seeded inputs, distinct affine parameters, so outputs are of order 1 and
every weight slice matters) on seeded inputs. `test_space_fixtures.py` checks the code against them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hwnas.space import get_space
from hwnas.supernet import build_supernet, recalibrate_bn

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# (space name, options): mbv3 at two resolutions so the supernet stays small
CASES = {
    "mbv3": {"resolutions": [160, 192], "num_classes": 10},
    "mbv3-small-input": {},
}


def frozen(name: str, options: dict) -> tuple[dict, dict[str, np.ndarray]]:
    space = get_space(name, **options)
    rng = np.random.default_rng(0)
    archs = [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(3)]
    record = {
        "space": name,
        "options": options,
        "config": space.config(),
        "ops_per_resolution": {str(r): get_space(name, **{**options, "resolutions": [r]}).all_ops()
                               for r in space.resolutions},
        "all_ops": space.all_ops(),
        "archs": archs,
        "encodings": [space.encode(a).tolist() for a in archs],
        "ops": [space.ops(a) for a in archs],
        "params": [space.params(a) for a in archs],
        "flops": [space.flops(a) for a in archs],
    }
    net, g = seeded_supernet(space)
    arrays = {}
    for i, arch in enumerate(archs):
        x = torch.randn(2, *space.input_shape(arch), generator=g)
        with torch.no_grad():
            arrays[f"y{i}"] = net.extract(arch)(x).numpy()
    return record, arrays


def seeded_supernet(space) -> tuple[nn.Module, torch.Generator]:
    """The fixtures' supernet (eval mode) and the generator its inputs are then drawn from."""
    torch.manual_seed(0)
    net = build_supernet(space)
    g = torch.Generator().manual_seed(1)
    largest = space.largest()
    recalibrate_bn(net, [torch.randn(4, *space.input_shape(largest), generator=g) for _ in range(2)], largest)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.3 + 0.7)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.05)
        net.classifier.linear.weight.mul_(10.0)
    return net.eval(), g


def main() -> None:
    torch.set_num_threads(1)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for name, options in CASES.items():
        record, arrays = frozen(name, options)
        (FIXTURES / f"space_{name}.json").write_text(json.dumps(record, indent=1) + "\n")
        np.savez_compressed(FIXTURES / f"space_{name}.npz", **arrays)
        print(name, len(record["all_ops"]), "op keys", [float(np.abs(a).max()) for a in arrays.values()])


if __name__ == "__main__":
    main()
