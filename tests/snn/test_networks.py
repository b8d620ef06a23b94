"""Networks from the paper's notation, encodings, time folding."""

import pytest
import torch

from dpap.snn.encoding import encode
from dpap.snn.networks import PRESETS, ArchError, build_network, parse_arch, resolve_arch
from dpap.snn.neurons import LIF


def test_parse_paper_strings():
    specs = parse_arch("15C3-AP2-40C3-AP2-300FC-10FC")
    assert [(s.op, s.size, s.kernel) for s in specs] == [
        ("conv", 15, 3), ("ap", 2, 0), ("conv", 40, 3), ("ap", 2, 0), ("fc", 300, 0), ("fc", 10, 0)
    ]
    assert [s.op for s in parse_arch("128C3-BN-128C3-BN-MP2-512FC-10FC")] == ["conv", "bn", "conv", "bn", "mp", "fc", "fc"]


@pytest.mark.parametrize("bad", ["", "15X3", "15C3-AP2-", "BN-10FC", "15C3-FC"])
def test_bad_arch_strings_say_what_is_wrong(bad):
    with pytest.raises(ArchError, match="model.arch"):
        build_network(bad, (1, 28, 28), 10)


def test_output_layer_must_match_classes_and_is_appended_for_presets():
    assert resolve_arch("mnist-snn", 11) == "15C3-AP2-40C3-AP2-300FC-11FC"
    with pytest.raises(ArchError, match="11 classes"):
        build_network("15C3-AP2-40C3-AP2-300FC-10FC", (2, 32, 32), 11)


def test_mnist_snn_shapes_and_parameter_count():
    net = build_network("15C3-AP2-40C3-AP2-300FC-10FC", (1, 28, 28), 10)
    out = net(torch.rand(3, 1, 28, 28))
    assert out.shape == (4, 3, 10)
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    dense = (15 * 9 + 15) + (40 * 15 * 9 + 40) + (40 * 7 * 7 * 300 + 300) + (300 * 10 + 10)
    assert sum(p.numel() for p in net.parameters()) == dense
    assert net.blocks[2].in_spatial == 49 and net.blocks[2].flatten


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_for_its_input(name):
    shape = (3, 32, 32) if name in ("cifar10-snn", "vgg16-bn") else (2, 32, 32) if name == "dvs-gesture-snn" else (1, 28, 28)
    classes = 11 if name == "dvs-gesture-snn" else 10
    net = build_network(name, shape, classes, kind=PRESETS[name][1], time_steps=2)
    x = torch.rand(2, *shape)
    out = net(x)
    assert out.shape == (net.time_steps, 2, classes)


def test_dnn_has_relu_no_time_and_logit_output():
    net = build_network("mnist-dnn", (1, 28, 28), 10, kind="dnn")
    assert not any(isinstance(m, LIF) for m in net.modules())
    out = net(torch.rand(2, 1, 28, 28))
    assert out.shape == (1, 2, 10)
    assert (out < 0).any()  # logits, not rectified


def test_direct_encoding_computes_the_first_layer_once_and_matches_repetition():
    torch.manual_seed(0)
    net = build_network("6C3-AP2-10FC", (1, 8, 8), 10, time_steps=5)
    x = torch.rand(4, 1, 8, 8)
    calls = []
    net.blocks[0].synapse.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    once = net(x)
    repeated = net(x.unsqueeze(0).expand(5, *x.shape).contiguous())
    assert calls == [4, 20]  # static: N samples; repeated: T·N samples
    assert torch.equal(once, repeated)


def test_poisson_and_event_encodings():
    g = torch.Generator().manual_seed(0)
    x = torch.tensor([[0.0, 1.0, 0.5]]).expand(2000, 3)
    s = encode(x, "poisson", 4, g)
    assert s.shape == (4, 2000, 3)
    rate = s.mean((0, 1))
    assert rate[0] == 0 and rate[1] == 1 and abs(float(rate[2]) - 0.5) < 0.03
    frames = torch.rand(5, 7, 2, 4, 4)  # [N, T, C, H, W]
    assert encode(frames, "events", 7).shape == (7, 5, 2, 4, 4)
    assert encode(frames, "direct", 7) is frames


def test_event_frames_run_through_the_network_as_they_are():
    net = build_network("4C3-AP2-10FC", (2, 8, 8), 10, time_steps=6)
    out = net(torch.rand(6, 3, 2, 8, 8))
    assert out.shape == (6, 3, 10)
