"""Compaction: a pruned network rebuilt without its dead units computes what the masked
network computes, and holds exactly the retained parameters (plus the masked zeros it
must keep)."""

import pytest
import torch

from dpap.compaction import CompactionError, compact, compact_pruned
from dpap.training.model_file import compact_model
from dpap.pruning.compression import count_parameters
from dpap.config import Config
from dpap.snn.encoding import encode
from dpap.training.model_file import load_model, save_model
from dpap.snn.networks import build_network
from dpap.snn.neurons import firing_rate_mse
from dpap.pruning import Pruner, PruningMethod
from dpap.training.loop import TrainingRun


def _pruner(net, units=None, synapses=None):
    """A pruner holding the given masks (bool per block; None: all alive), applied."""
    pruner = Pruner(net, PruningMethod())
    for i in range(len(net.blocks)):
        if units is not None and units[i] is not None:
            pruner.units[i] = units[i].clone()
        if synapses is not None and synapses[i] is not None:
            pruner.synapses[i] = synapses[i].clone()
    pruner.refresh_masks()
    pruner.apply_masks()
    return pruner


def _random_masks(net, unit_keep, synapse_keep, generator):
    units, synapses = [], []
    for block in net.blocks:
        n, pre = block.synapse.weight.shape[:2]
        u = torch.rand(n, generator=generator) < unit_keep
        if block.is_output:
            u[:] = True
        elif not u.any():
            u[0] = True
        units.append(u)
        synapses.append(torch.rand(n, pre, generator=generator) < synapse_keep)
    return units, synapses


def _lively(net, generator, gain=2.0):
    """Weights N(0, gain²/fan-in) and biases in [0, 0.2): every layer of an SNN fires (at
    PyTorch's default initialisation most stay silent, and silent networks agree trivially)."""
    with torch.no_grad():
        for block in net.blocks:
            w = block.synapse.weight
            w.copy_(torch.randn(w.shape, generator=generator) * gain / w[0].numel() ** 0.5)
            block.synapse.bias.copy_(torch.rand(w.shape[0], generator=generator) * 0.2)
    return net


def _activity(net, x):
    """Mean output (spike rate of an SNN) and the number of distinct predicted classes."""
    net.eval()
    with torch.no_grad():
        out = net(x)
    return float(out.mean()), len(out.sum(0).argmax(1).unique())


def _randomise_norms(net, generator):
    """BN with running statistics and affine terms far from their defaults, so slicing them wrong shows."""
    with torch.no_grad():
        for block in net.blocks:
            if block.norm is not None:
                c = block.norm.num_features
                block.norm.running_mean.copy_(torch.randn(c, generator=generator) * 0.3)
                block.norm.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
                block.norm.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                block.norm.bias.copy_(torch.randn(c, generator=generator) * 0.2)


def _agreement(a, b, x, batch=250):
    """Share of samples on which the two networks predict the same class, and share of
    equal output entries (spikes or logits)."""
    a.eval(), b.eval()
    same = equal = total = 0
    with torch.no_grad():
        for s in range(0, len(x), batch):
            oa, ob = a(x[s : s + batch]), b(x[s : s + batch])
            same += int((oa.sum(0).argmax(1) == ob.sum(0).argmax(1)).sum())
            equal += int(torch.isclose(oa, ob, rtol=1e-5, atol=1e-5).sum())
            total += oa.numel()
    return same / len(x), equal / total


# ------------------------------------------------------------------ hand-built masks


def test_fc_by_hand():
    net = _lively(build_network("4FC-3FC-2FC", (3,), 2, time_steps=3), torch.Generator().manual_seed(0), gain=3.0)
    w0, w1, w2 = (b.synapse.weight.detach().clone() for b in net.blocks)
    b0, b1, b2 = (b.synapse.bias.detach().clone() for b in net.blocks)
    # hidden units 1 (layer 0) and 0 (layer 1) dead, output unit 1 dead (a method that prunes outputs)
    units = [torch.tensor([True, False, True, True]), torch.tensor([False, True, True]), torch.tensor([True, False])]
    own = torch.ones(3, 4, dtype=torch.bool)
    own[2, 3] = False  # one synapse of a living row and column
    pruner = _pruner(net, units, [None, own, None])
    c = compact_pruned(pruner)
    assert c.net.arch == "3FC-2FC-2FC"  # the output layer keeps its units
    assert [k.tolist() for k in c.kept] == [[0, 2, 3], [1, 2], [0, 1]]
    blocks = c.net.blocks
    assert torch.equal(blocks[0].synapse.weight, w0[[0, 2, 3]])
    assert torch.equal(blocks[0].synapse.bias, b0[[0, 2, 3]])
    expected = w1[[1, 2]][:, [0, 2, 3]].clone()
    expected[1, 2] = 0.0  # synapse (2, 3) of the original, kept as a masked zero
    assert torch.equal(blocks[1].synapse.weight, expected)
    assert torch.equal(blocks[1].synapse.bias, b1[[1, 2]])
    assert torch.equal(blocks[2].synapse.weight, torch.stack([w2[0, [1, 2]], torch.zeros(2)]))
    assert blocks[2].synapse.bias.tolist() == [b2[0].item(), 0.0]  # silenced by the pruner, kept
    assert c.synapse_masks[1].tolist() == [[True, True, True], [True, True, False]]
    assert [u.tolist() for u in c.unit_masks] == [[True] * 3, [True] * 2, [True, False]]
    # retained = (3·3 + 3) + (6 − 1 + 2) + (1·2 + 1) = 22; the compact net also holds one
    # masked synapse and the dead output unit's two weights and bias
    report = count_parameters(net, [pruner.unit_mask(i) for i in range(3)], [pruner.synapse_mask(i) for i in range(3)])
    assert c.parameters_retained() == report.retained == 22
    assert c.parameters_total() == 26 and c.masked_parameters() == 4
    x = torch.rand(200, 3, generator=torch.Generator().manual_seed(1))
    assert _activity(net, x) > (0.05, 1)
    with torch.no_grad():
        assert torch.equal(net(x), c.net(x))


def test_weights_are_taken_masked():
    """Masks not applied to the weights yet (a method that masks at the end of an epoch):
    the compact network holds the masked weights."""
    g = torch.Generator().manual_seed(8)
    net = _lively(build_network("6FC-5FC-3FC", (4,), 3), g)
    units, synapses = _random_masks(net, 0.7, 0.6, g)
    c = compact(net, units, synapses)
    masked = _pruner(net, units, synapses)  # now apply them
    assert bool((~c.synapse_masks[1]).any())
    for i, block in enumerate(c.net.blocks):
        w = masked.net.blocks[i].synapse.weight[c.kept[i]][:, c.kept[i - 1] if i else slice(None)]
        assert torch.equal(block.synapse.weight, w)


def test_conv_to_fc_drops_the_spatial_columns_of_a_dead_channel():
    torch.manual_seed(1)
    net = _lively(build_network("3C3-BN-AP2-4FC-2FC", (2, 4, 4), 2, time_steps=2), torch.Generator().manual_seed(1), gain=3.0)
    _randomise_norms(net, torch.Generator().manual_seed(0))
    fc = net.blocks[1].synapse.weight.detach().clone()
    bn = net.blocks[0].norm
    pruner = _pruner(net, [torch.tensor([True, False, True]), None, None])
    c = compact_pruned(pruner)
    assert net.blocks[1].in_spatial == 4 and c.net.blocks[1].in_spatial == 4
    assert c.net.arch == "2C3-BN-AP2-4FC-2FC"
    # channel 1 fed columns 4..7 of the flattened 3×2×2 map
    assert torch.equal(c.net.blocks[1].synapse.weight, fc[:, [0, 1, 2, 3, 8, 9, 10, 11]])
    new_bn = c.net.blocks[0].norm
    for name in ("weight", "bias", "running_mean", "running_var"):
        assert torch.equal(getattr(new_bn, name), getattr(bn, name)[[0, 2]]), name
    assert c.parameters_retained() == count_parameters(net, [pruner.unit_mask(i) for i in range(3)], [pruner.synapse_mask(i) for i in range(3)]).retained
    assert c.masked_parameters() == 0
    x = torch.rand(300, 2, 4, 4)
    assert _activity(net, x) > (0.1, 1)
    assert _agreement(net, c.net, x)[1] == 1.0


def test_nothing_pruned_is_the_same_network():
    torch.manual_seed(2)
    net = _lively(build_network("4C3-BN-MP2-8C3-AP2-16FC-DO20-10FC", (1, 8, 8), 10), torch.Generator().manual_seed(2)).eval()
    c = compact(net)
    assert c.net.arch == net.arch
    assert c.net is not net
    assert c.net.state_dict().keys() == net.state_dict().keys()
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in c.net.state_dict().items())
    assert c.parameters_retained() == c.parameters_total() == count_parameters(net).dense
    x = torch.rand(100, 1, 8, 8)
    assert _activity(net, x) > (0.02, 1)
    with torch.no_grad():
        assert torch.equal(net(x), c.net(x))


@pytest.mark.parametrize("kind", ["snn", "dnn"])
def test_a_layer_with_one_unit_left(kind):
    torch.manual_seed(3)
    net = _lively(build_network("6C3-AP2-12FC-10FC", (1, 8, 8), 10, kind=kind), torch.Generator().manual_seed(3), gain=4.0)
    one = torch.zeros(6, dtype=torch.bool)
    one[4] = True
    lone = torch.zeros(12, dtype=torch.bool)
    lone[7] = True
    pruner = _pruner(net, [one, lone, None])
    c = compact_pruned(pruner)
    assert c.net.arch == "1C3-AP2-1FC-10FC"
    assert c.kept[0].tolist() == [4] and c.kept[1].tolist() == [7]
    report = count_parameters(net, [pruner.unit_mask(i) for i in range(3)], [pruner.synapse_mask(i) for i in range(3)])
    assert c.parameters_retained() == report.retained == c.parameters_total()
    x = torch.rand(500, 1, 8, 8)
    seen = []
    remove = net.observe(lambda i, b, pre, post: seen.append(float(post.abs().mean())) if i == 1 else None)
    assert _activity(net, x)[0] != 0 and seen[0] > 0  # the lone neuron is active
    remove()
    assert _agreement(net, c.net, x) == (1.0, 1.0)


def test_a_layer_with_every_unit_dead_keeps_one_dead_placeholder():
    torch.manual_seed(4)
    net = build_network("12FC-8FC-3FC", (5,), 3)
    with torch.no_grad():
        net.blocks[1].synapse.bias.fill_(1.0)
        net.blocks[2].synapse.bias.copy_(torch.tensor([0.6, 0.0, 0.7]))  # would fire if its silencing were lost
    pruner = _pruner(net, [None, torch.zeros(8, dtype=torch.bool), None])
    c = compact_pruned(pruner)
    assert c.net.arch == "12FC-1FC-3FC"
    assert c.unit_masks[1].tolist() == [False]
    assert not c.synapse_masks[2].any()
    report = count_parameters(net, [pruner.unit_mask(i) for i in range(3)], [pruner.synapse_mask(i) for i in range(3)])
    # the placeholder's row (12), its bias, and its column in the output layer (3) are masked
    assert c.parameters_retained() == report.retained
    assert c.masked_parameters() == 12 + 1 + 3
    x = torch.rand(300, 5)
    assert _activity(net, x)[0] > 0.5  # two output units fire on their bias alone
    assert _agreement(net, c.net, x) == (1.0, 1.0)


# ---------------------------------------------------------------------- random masks


ARCHS = [
    ("snn", "6C3-AP2-10C3-AP2-20FC-10FC"),
    ("snn", "6C3-BN-MP2-10C3-BN-AP2-20FC-BN-DO30-10FC"),
    ("snn", "24FC-BN-16FC-DO20-10FC"),
    ("dnn", "6C3-BN-MP2-10C3-AP2-20FC-DO30-10FC"),
    ("dnn", "24FC-BN-16FC-10FC"),
]


@pytest.mark.parametrize("kind,arch", ARCHS)
@pytest.mark.parametrize("seed", [0, 1])
def test_random_masks_agree_and_count_the_retained_parameters(kind, arch, seed):
    torch.manual_seed(seed)
    shape = (64,) if arch.startswith("24FC") else (1, 8, 8)
    net = build_network(arch, shape, 10, kind=kind)
    g = torch.Generator().manual_seed(100 + seed)
    _lively(net, g)
    _randomise_norms(net, g)
    units, synapses = _random_masks(net, 0.6, 0.8, g)
    pruner = _pruner(net, units, synapses)
    c = compact_pruned(pruner)
    report = count_parameters(net, [pruner.unit_mask(i) for i in range(len(net.blocks))], [pruner.synapse_mask(i) for i in range(len(net.blocks))])
    assert c.parameters_retained() == report.retained
    # the compact net holds the retained parameters and the masked zeros inside living rows/columns
    inside = sum(int((~m).sum()) * b.synapse.weight[0, 0].numel() for m, b in zip(c.synapse_masks, c.net.blocks))
    assert c.parameters_total() == report.retained + inside
    for i, block in enumerate(c.net.blocks):  # hidden layers hold living units only
        assert block.units == (int(units[i].sum()) if not block.is_output else 10)
    x = torch.rand(2000, *shape, generator=g)
    rate, classes = _activity(net, x)
    assert rate != 0 and classes >= 2
    predictions, entries = _agreement(net, c.net, x)
    assert predictions >= 0.999
    assert entries >= 0.999


def test_compact_network_trains_on_with_its_masks():
    torch.manual_seed(5)
    g = torch.Generator().manual_seed(7)
    net = _lively(build_network("6C3-AP2-20FC-10FC", (1, 8, 8), 10), g)
    units, synapses = _random_masks(net, 0.7, 0.7, g)
    c = compact_pruned(_pruner(net, units, synapses))
    pruner = c.pruner()
    opt = torch.optim.Adam(c.net.parameters(), lr=1e-2)
    for _ in range(5):
        x, y = torch.rand(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
        loss = firing_rate_mse(c.net(x), y, 10) + 0.01 * sum(p.abs().sum() for p in c.net.parameters())
        opt.zero_grad()
        loss.backward()
        pruner.mask_gradients()
        opt.step()
        pruner.apply_masks()
    fc = c.net.blocks[1].synapse.weight
    assert bool((~c.synapse_masks[1]).any())
    assert bool((fc[~c.synapse_masks[1]] == 0).all())
    assert bool((fc[c.synapse_masks[1]] != 0).all())
    assert c.parameters_retained() == count_parameters(c.net, pruner.units, [pruner.synapse_mask(i) for i in range(3)]).retained


def test_masks_that_do_not_fit_are_one_clear_error():
    net = build_network("4FC-2FC", (3,), 2)
    with pytest.raises(CompactionError, match=r"unit_masks\[0\]: shape \(5,\), block 0 has 4 units"):
        compact(net, [torch.ones(5, dtype=torch.bool), torch.ones(2, dtype=torch.bool)])
    with pytest.raises(CompactionError, match=r"synapse_masks: 1 masks for a network of 2 blocks"):
        compact(net, None, [torch.ones(4, 3, dtype=torch.bool)])


# ------------------------------------------------------- a real DPAP training run


@pytest.mark.parametrize(
    "kind,arch",
    [("snn", "16C3-AP2-32C3-AP2-128FC-10FC"), ("dnn", "8C3-BN-MP2-16C3-BN-AP2-32FC-BN-DO20-10FC")],
)
def test_compacted_dpap_run_on_digits(kind, arch, digits, tmp_path):
    train, test = digits
    cfg = Config()
    cfg.model.kind, cfg.model.arch = kind, arch
    cfg.train.epochs = 3
    cfg.pruning.dpap.max_death_share = 0.3
    cfg.pruning.dpap.epsilon = 1.5
    cfg.pruning.dpap.conv.beta = cfg.pruning.dpap.fc.beta = 0.5
    run = TrainingRun(cfg, train, test, (1, 8, 8), 10, progress=False)
    history = run.run()
    n = len(run.net.blocks)
    assert any(not bool(run.pruner.units[i].all()) for i in range(n - 1))  # units died
    assert any(not bool(run.pruner.synapses[i].all()) for i in range(n))  # and synapses on their own
    c = compact_pruned(run.pruner)
    assert c.parameters_retained() == history[-1].params_retained  # what training reported
    assert c.parameters_total() < count_parameters(run.net).dense
    x = encode(test.x, cfg.model.encoding, cfg.model.time_steps)
    predictions, entries = _agreement(run.net, c.net, x)
    assert predictions >= 0.999 and entries >= 0.999
    c.net.eval()
    with torch.no_grad():
        assert float((c.net(x).sum(0).argmax(1) == test.y).float().mean()) > 0.5  # a network that learnt
    # the same from the saved model file
    path = save_model(tmp_path / "model.pt", run)
    model = load_model(path)
    c2 = compact_model(model)
    assert c2.net.arch == c.net.arch
    assert c2.parameters_retained() == count_parameters(model.net, model.unit_masks, model.synapse_masks).retained == history[-1].params_retained
    # the compact architecture string builds the compact shapes
    rebuilt = build_network(c.net.arch, (1, 8, 8), 10, kind=kind)
    rebuilt.load_state_dict(c.net.state_dict())
    assert _agreement(rebuilt, c.net, x) == (1.0, 1.0)
