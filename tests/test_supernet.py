"""Weight-sharing supernet: subnet parity, extraction, channel sorting, BN recalibration, ONNX."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

from hwnas.errors import InputError
from hwnas.space import get_space
from hwnas.supernet import Supernet, build_supernet, recalibrate_bn, resize_input

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return _calibrated(build_supernet(get_space("mbv3-small-input", in_channels=3)))


@pytest.fixture(scope="module")
def big():
    torch.manual_seed(0)
    return _calibrated(build_supernet(get_space("mbv3", resolutions=[160], num_classes=100)))


def _calibrated(net: Supernet) -> Supernet:
    """BN statistics of real activations and logits of order 1, so parity checks compare
    non-vanishing outputs (an untrained net in eval mode with unit statistics outputs ~1e-5)."""
    space = net.space
    g = torch.Generator().manual_seed(1)
    largest = space.largest()
    recalibrate_bn(net, [torch.randn(8, *space.input_shape(largest), generator=g) for _ in range(2)], largest)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):  # distinct affine params so every slice matters
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.3 + 0.7)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.05)
        net.classifier.linear.weight.mul_(10.0)
    return net.eval()


def _check_parity(net: Supernet, arch: dict, batch: int = 1) -> nn.Module:
    space = net.space
    x = torch.randn(batch, *space.input_shape(arch))
    sub = net.extract(arch)
    with torch.no_grad():
        net.set_active(arch)
        expected = net(x)
        got = sub(x)
    assert got.shape == (batch, space.num_classes)
    assert expected.std().item() > 0.1  # outputs that a wrong weight would visibly change
    assert (got - expected).abs().max().item() <= 1e-5
    return sub


def test_extraction_parity_small_input(small):
    rng = np.random.default_rng(0)
    archs = [small.space.largest(), small.space.smallest()] + [small.space.sample(rng) for _ in range(48)]
    for arch in archs:
        _check_parity(small, arch)


def test_extraction_parity_mbv3(big):
    # 20 archs at r=160 (with largest and smallest) keep the file fast; the code path is the
    # same as the small-input space, which checks 50
    rng = np.random.default_rng(1)
    archs = [big.space.largest(), big.space.smallest()] + [big.space.sample(rng) for _ in range(18)]
    for arch in archs:
        _check_parity(big, arch)


def test_extracted_subnet_is_plain_torch(small):
    arch = small.space.sample(np.random.default_rng(2))
    sub = small.extract(arch)
    assert isinstance(sub, torch.fx.GraphModule)
    for m in sub.modules():
        assert m is sub or type(m).__module__.startswith("torch."), type(m)
    # its weights load into the plain network of the op keys, giving the same function
    plain = small.space.build(arch)
    plain.load_state_dict(sub.state_dict())
    x = torch.randn(2, *small.space.input_shape(arch))
    with torch.no_grad():
        torch.testing.assert_close(plain(x), sub(x), rtol=0, atol=0)
    assert sum(p.numel() for p in sub.parameters()) == small.space.params(arch)


def test_extract_copies_weights_and_leaves_active_arch(small):
    space = small.space
    small.set_active(space.largest())
    sub = small.extract(space.smallest())
    assert small.active_arch == space.largest()
    with torch.no_grad():
        next(sub.parameters()).add_(1.0)
    torch.testing.assert_close(_check_parity(small, space.smallest()).state_dict()["0.conv.weight"],
                               small.stem.conv.weight)


def test_subnets_share_weights(small):
    space = small.space
    rng = np.random.default_rng(3)
    arch = space.sample(rng)
    sub_before = small.extract(arch)
    x = torch.randn(1, *space.input_shape(arch))
    with torch.no_grad():
        small.stages[1][0].project_conv.weight.mul_(2.0)
        changed = small.extract(arch)
        small.stages[1][0].project_conv.weight.div_(2.0)
        assert not torch.allclose(sub_before(x), changed(x))


def test_kernel_transform_is_used(small):
    block = small.stages[0][0]
    w7 = block.depthwise_conv.active_weight(8, 7)
    w3 = block.depthwise_conv.active_weight(8, 3)
    torch.testing.assert_close(w3, w7[:, :, 2:5, 2:5])  # identity transforms: plain centre crop
    with torch.no_grad():
        block.depthwise_conv.transforms["5to3"].mul_(2.0)
        torch.testing.assert_close(block.depthwise_conv.active_weight(8, 3), 2 * w7[:, :, 2:5, 2:5])
        block.depthwise_conv.transforms["5to3"].div_(2.0)


def test_sort_channels_keeps_largest_function():
    torch.manual_seed(4)
    net = _calibrated(build_supernet(get_space("mbv3-small-input", resolutions=[24])))
    arch = net.space.largest()
    x = torch.randn(2, *net.space.input_shape(arch))
    with torch.no_grad():
        net.set_active(arch)
        before = net(x)
        mid = net.space.sample(np.random.default_rng(0))
        mid["e"] = [3] * 20
        net.set_active(mid)
        small_before = net(torch.randn(2, *net.space.input_shape(mid)))
        net.sort_channels()
        net.set_active(arch)
        after = net(x)
    assert (before - after).abs().max().item() <= 1e-5
    importance = net.stages[2][1].project_conv.weight.abs().sum(dim=(0, 2, 3))
    assert torch.all(importance[:-1] >= importance[1:])
    assert small_before.shape == (2, 10)


def test_set_active_rejects_bad_arch(small):
    arch = small.space.largest()
    arch["k"][0] = 4
    with pytest.raises(InputError):
        small.set_active(arch)
    with pytest.raises(InputError):
        small.extract({"r": 28})


def test_build_supernet_needs_elastic_space():
    class Other:
        name = "other"

    with pytest.raises(InputError):
        build_supernet(Other())


def test_config_rebuilds_supernet(small):
    again = build_supernet(get_space(**small.config()))
    again.load_state_dict(small.state_dict())
    arch = small.space.sample(np.random.default_rng(5))
    x = torch.randn(1, *small.space.input_shape(arch))
    again.eval().set_active(arch)
    small.set_active(arch)
    with torch.no_grad():
        torch.testing.assert_close(again(x), small(x), rtol=0, atol=0)


def test_resize_input():
    x = torch.rand(2, 1, 28, 28)
    assert resize_input(x, 28) is x
    y = resize_input(x, 32)
    assert y.shape == (2, 1, 32, 32)
    torch.testing.assert_close(y, torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear"))
    with pytest.raises(InputError):
        resize_input(torch.rand(1, 28, 28), 32)


def test_recalibrate_bn_on_extracted_subnet(small):
    sub = small.extract(small.space.smallest())
    bn = sub.get_submodule("0.bn")
    old_mean = bn.running_mean.clone()
    g = torch.Generator().manual_seed(6)
    batches = [torch.rand(4, 3, 24, 24, generator=g) * 2 + 1 for _ in range(3)]
    recalibrate_bn(sub, batches)
    assert not torch.allclose(bn.running_mean, old_mean)
    # the first BN sees conv(x): its running mean is the mean over all batches (equal sizes)
    with torch.no_grad():
        conv_out = torch.cat([sub.get_submodule("0.conv")(b) for b in batches])
    torch.testing.assert_close(bn.running_mean, conv_out.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.1 and not sub.training


def test_recalibrate_bn_on_supernet_active_arch():
    torch.manual_seed(7)
    net = build_supernet(get_space("mbv3-small-input", resolutions=[24, 28])).eval()
    arch = net.space.smallest()  # r=24, expand 3: only the first channels of each BN are used
    g = torch.Generator().manual_seed(8)
    batches = [(torch.rand(4, 1, 28, 28, generator=g) + 0.5, torch.zeros(4)) for _ in range(3)]
    block = net.stages[0][0]
    seen = []
    hook = block.expand_conv.register_forward_hook(lambda m, inp, out: seen.append(out.detach()))
    recalibrate_bn(net, batches, arch=arch)
    hook.remove()
    assert net.active_arch == arch
    assert len(seen) == 3 and seen[0].shape[-1] == 24  # inputs were resized to the arch's resolution
    mid = seen[0].shape[1]
    expanded = torch.cat(seen)
    bn = block.expand_bn.bn
    torch.testing.assert_close(bn.running_mean[:mid], expanded.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert torch.all(bn.running_mean[mid:] == 0)  # channels the subnet does not use were reset
    # the recalibrated supernet and its extracted subnet agree
    _check_parity(net, arch, batch=2)
    with pytest.raises(InputError):
        recalibrate_bn(net, [], arch=arch)
    with pytest.raises(InputError):
        recalibrate_bn(net.extract(arch), batches, arch=arch)


def test_train_mode_updates_shared_statistics(small):
    net = build_supernet(small.space)
    arch = small.space.smallest()
    net.set_active(arch)
    bn = net.stages[0][0].expand_bn.bn
    net.train()
    net(torch.rand(2, 3, 24, 24))
    mid = net.stages[0][0].expand_conv.active_weight(16, 48).shape[0]
    assert torch.any(bn.running_mean[:mid] != 0) and torch.all(bn.running_mean[mid:] == 0)
    loss = net(torch.rand(2, 3, 24, 24)).sum()
    loss.backward()
    grad = net.stages[0][0].depthwise_conv.weight.grad
    assert grad is not None and torch.all(grad[mid:] == 0) and torch.any(grad[:mid] != 0)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # dynamo=False warns that it is deprecated
def test_onnx_export_of_extracted_subnet(small):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    arch = small.space.smallest()
    sub = small.extract(arch)
    x = torch.randn(1, *small.space.input_shape(arch))
    buf = io.BytesIO()
    torch.onnx.export(sub, (x,), buf, opset_version=17, dynamo=False, input_names=["input"],
                      output_names=["logits"])
    model = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(model)
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, sub(x).numpy(), atol=1e-5, rtol=1e-4)


def test_channels_last_supernet_matches_extracted_subnet():
    # channels_last makes CPU depthwise convs (and their backward) much faster; results must not change
    torch.manual_seed(9)
    net = _calibrated(build_supernet(get_space("mbv3-small-input", resolutions=[28])))
    rng = np.random.default_rng(10)
    for arch in [net.space.largest()] + [net.space.sample(rng) for _ in range(3)]:
        sub = net.extract(arch)
        fast = net.to(memory_format=torch.channels_last)
        x = torch.randn(2, *net.space.input_shape(arch))
        with torch.no_grad():
            fast.set_active(arch)
            assert (fast(x) - sub(x)).abs().max().item() <= 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_extraction_parity_on_cuda():
    torch.manual_seed(11)
    net = _calibrated(build_supernet(get_space("mbv3", resolutions=[160]))).cuda()
    torch.backends.cudnn.deterministic = True
    rng = np.random.default_rng(12)
    for arch in [net.space.largest()] + [net.space.sample(rng) for _ in range(5)]:
        sub = net.extract(arch)
        assert next(sub.parameters()).is_cuda
        x = torch.randn(2, *net.space.input_shape(arch), device="cuda")
        with torch.no_grad():
            net.set_active(arch)
            # TF32 may be on for convs; compare in full precision
            with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
                assert (net(x) - sub(x)).abs().max().item() <= 1e-4
