"""The DPAP pruner: wiring of traces to BCM, exact and permanent pruning, state round trip."""

import copy

import pytest
import torch

from dpap.pruning.compression import compression_of, count_parameters
from dpap.config import DPAPConfig, LayerTypeConfig
from dpap.pruning.dpap.importance import bcm
from dpap.snn.networks import build_network
from dpap.pruning import Pruner, make_pruner


def _tiny_fc():
    net = build_network("2FC-2FC", (2,), 2, time_steps=2)
    with torch.no_grad():
        net.blocks[0].synapse.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.3]]))
        net.blocks[0].synapse.bias.zero_()
        net.blocks[1].synapse.weight.copy_(torch.eye(2))
        net.blocks[1].synapse.bias.zero_()
    return net


def test_pruner_accumulates_bcm_from_the_network_traces_by_hand():
    net = _tiny_fc()
    pruner = make_pruner(net, "dpap", DPAPConfig())
    x = torch.tensor([[1.0, 1.0]])  # direct input, T=2
    net.train()
    net(x)
    # layer 0: input trace (static, τ=0.5, T=2): 1·(1 + 0.5) = 1.5 for both inputs
    # neuron 0: current 1 -> spikes at t0 (u=1), t1 (u=0·... + 1 = 1) -> trace 0.5 + 1 = 1.5
    # neuron 1: current 0.3 -> u 0.3, 0.36 -> never fires -> trace 0
    # θ after one sample = post trace -> BCM = pre·post·(post − θ) = 0
    layer = pruner.method.layers[0]
    assert layer.theta.value.tolist() == [1.5, 0.0]
    assert layer.post_sum.tolist() == [1.5, 0.0]
    assert layer.importance.abs().sum() == 0
    # a second, silent sample lowers θ to 0.75: BCM[0,:] = 1.5·1.5·(1.5 − 0.75)·(pre of sample 1 = 1.5)
    net(torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
    theta = torch.tensor([(1.5 * 2 + 0) / 3, 0.0])
    pre = torch.tensor([[1.5, 1.5], [0.0, 0.0]])
    post = torch.tensor([[1.5, 0.0], [0.0, 0.0]])
    expected = bcm(pre, post, theta).double()
    assert torch.allclose(layer.importance, expected)
    # evaluation passes are not observed
    net.eval()
    net(x)
    assert torch.allclose(layer.importance, expected)


def test_importance_summed_in_float32_stays_within_1e6_of_float64():
    """The BCM products of up to FLUSH_EVERY batches are summed in float32 before the
    float64 epoch sum: over 40 batches (two flushes and a remainder, read mid-way too) the
    accumulator equals the float64 sum of the per-batch products within 1e-6, and the
    batches since the last flush are never lost to a reader or a checkpoint."""
    from dpap.pruning.dpap.state import FLUSH_EVERY

    torch.manual_seed(0)
    net = build_network("30FC-20FC-5FC", (12,), 5, time_steps=4)
    with torch.no_grad():
        net.blocks[0].synapse.weight.mul_(4)
        net.blocks[1].synapse.weight.mul_(4)
    pruner = make_pruner(net, "dpap", DPAPConfig())
    layer = pruner.method.layers[1]
    seen = []
    net.observe(lambda i, b, pre, post: seen.append((pre.detach().clone(), post.detach().clone())) if i == 1 else None)
    net.train()
    g = torch.Generator().manual_seed(1)
    expected = torch.zeros(20, 30, dtype=torch.float64)
    theta = torch.zeros(20, dtype=torch.float64)
    count = 0
    assert FLUSH_EVERY < 40
    for batch in range(40):
        with torch.no_grad():
            net(torch.rand(16, 12, generator=g))
        pre_spikes, post_spikes = seen[-1]
        w = torch.tensor([0.5 ** (3 - t) for t in range(4)], dtype=torch.float64)  # Eq. 5, tau = 0.5
        pre = torch.tensordot(w, pre_spikes.double(), dims=1)
        post = torch.tensordot(w, post_spikes.double(), dims=1)
        theta = (theta * count + post.sum(0)) / (count + 16)
        count += 16
        expected += bcm(pre, post, theta)
        if batch == 20:  # mid-way, 5 batches after a flush: a checkpoint, then a reader
            saved = pruner.state_dict()["state"]["layers"][1]["importance"]
            tol = 1e-6 * float(expected.abs().max())
            assert torch.allclose(saved, expected, rtol=1e-6, atol=tol)
            assert torch.allclose(layer.importance, expected, rtol=1e-6, atol=tol)
    assert expected.abs().sum() > 0 and (expected < 0).any() and (expected > 0).any()
    assert torch.allclose(layer.importance, expected, rtol=1e-6, atol=1e-6 * float(expected.abs().max()))


def _train_steps(net, pruner, opt, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.rand(8, *net.input_shape, generator=g)
        y = torch.randint(0, net.num_classes, (8,), generator=g)
        out = net(x)
        loss = ((out.mean(0) - torch.nn.functional.one_hot(y, net.num_classes)) ** 2).sum(1).mean() + 0.01 * out.sum()
        opt.zero_grad()
        loss.backward()
        pruner.mask_gradients()
        opt.step()
        pruner.apply_masks()


def _kill(pruner, layer, units=(), synapses=()):
    info = pruner.layers[layer]
    dead_units = torch.zeros(info.units, dtype=torch.bool)
    dead_units[list(units)] = True
    dead_syn = torch.zeros(info.units, info.pre_units, dtype=torch.bool)
    for i, j in synapses:
        dead_syn[i, j] = True
    pruner.kill_units(layer, dead_units)
    pruner.kill_synapses(layer, dead_syn)
    pruner.refresh_masks()
    pruner.apply_masks()


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: torch.optim.Adam(p, lr=0.05),
        lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1),
        lambda p: torch.optim.SGD(p, lr=0.5, momentum=0.9),
    ],
    ids=["adam", "adamw", "sgd-momentum"],
)
def test_pruned_parameters_stay_exactly_zero_across_optimizer_steps(make_opt):
    torch.manual_seed(0)
    net = build_network("6C3-BN-AP2-12FC-4FC", (1, 8, 8), 4, time_steps=3)
    pruner = make_pruner(net, "dpap", DPAPConfig())
    opt = make_opt(net.parameters())
    _train_steps(net, pruner, opt, 3)  # build up momentum first
    _kill(pruner, 0, units=[1, 4])
    _kill(pruner, 1, units=[2], synapses=[(0, 5), (7, 90)])
    _train_steps(net, pruner, opt, 10, seed=1)
    conv, bn = net.blocks[0].synapse, net.blocks[0].norm
    for c in (1, 4):
        assert conv.weight[c].abs().sum() == 0 and conv.bias[c] == 0
        assert bn.weight[c] == 0 and bn.bias[c] == 0
    fc = net.blocks[1].synapse
    assert fc.weight[2].abs().sum() == 0 and fc.bias[2] == 0
    assert fc.weight[0, 5] == 0 and fc.weight[7, 90] == 0
    # the rest of row 0 lives, but for the 16 columns (4x4 positions) of each dead channel
    dead_cols = set(range(16, 32)) | set(range(64, 80))
    assert 5 not in dead_cols
    live = [j for j in range(fc.weight.shape[1]) if j != 5 and j not in dead_cols]
    assert bool((fc.weight[0, live] != 0).all())
    assert fc.weight[:, sorted(dead_cols)].abs().sum() == 0


def test_pruned_units_are_silent_whatever_the_input():
    torch.manual_seed(0)
    net = build_network("6C3-BN-AP2-12FC-4FC", (1, 8, 8), 4, time_steps=3)
    pruner = make_pruner(net, "dpap", DPAPConfig())
    _kill(pruner, 0, units=[0, 3])
    _kill(pruner, 1, units=[5])
    seen = {}
    fired = []
    net.observe(lambda i, b, pre, post: seen.__setitem__(i, post))
    for mode in ("train", "eval"):
        getattr(net, mode)()
        for scale in (1.0, 100.0, -100.0):
            net(torch.randn(16, 1, 8, 8) * scale)
            assert seen[0][:, :, [0, 3]].abs().sum() == 0
            assert seen[1][:, :, 5].abs().sum() == 0
            fired.append(float(seen[0].detach().sum()))
    assert sum(fired) > 0  # the living ones still fire


def test_conv_layers_lose_channels_fc_layers_synapses_and_output_only_when_asked():
    net = build_network("4C3-AP2-6FC-3FC", (1, 4, 4), 3)
    p = make_pruner(net, "dpap", DPAPConfig())
    assert p.method.layers[0].synapse_survival is None and p.method.layers[0].prune_units
    assert p.method.layers[1].synapse_survival is not None and p.method.layers[1].prune_units
    assert p.method.layers[2].synapse_survival is None and not p.method.layers[2].prune_units
    p2 = make_pruner(build_network("4C3-AP2-6FC-3FC", (1, 4, 4), 3), "dpap", DPAPConfig(prune_output=True))
    assert p2.method.layers[2].synapse_survival is not None and not p2.method.layers[2].prune_units


def test_end_epoch_prunes_low_importance_units():
    torch.manual_seed(0)
    net = build_network("8FC-2FC", (4,), 2, time_steps=4)
    cfg = DPAPConfig(fc=LayerTypeConfig(beta=0.1, epsilon=1.0, eta=10.0, protect=2.0))
    pruner = make_pruner(net, "dpap", cfg)
    net.train()
    for _ in range(5):
        net(torch.rand(16, 4))
    reports = pruner.end_epoch(0)
    hidden = reports[0]
    assert hidden.died_units + hidden.died_synapses > 0
    assert hidden.units_alive == int(pruner.unit_mask(0).sum())
    # the dead units' rows are zero in the weights
    dead = ~pruner.unit_mask(0)
    assert net.blocks[0].synapse.weight[dead].abs().sum() == 0
    assert reports[1].units_alive == 2  # output neurons are never pruned


def test_prune_units_false_keeps_every_neuron_and_channel_and_prunes_synapses():
    def run(prune_units, conv_mode="channels"):
        torch.manual_seed(0)
        net = build_network("4C3-AP2-8FC-2FC", (1, 4, 4), 2, time_steps=4)
        knobs = LayerTypeConfig(beta=0.1, epsilon=2.0, eta=10.0, protect=2.0)
        cfg = DPAPConfig(conv=knobs, fc=knobs, max_death_share=1.0, prune_units=prune_units, conv_mode=conv_mode)
        pruner = make_pruner(net, "dpap", cfg)
        net.train()
        for _ in range(5):
            net(torch.rand(16, 1, 4, 4))
        return pruner.end_epoch(0)

    every = run(True)
    assert every[0].died_units + every[1].died_units > 0  # the same epoch kills units when they may die
    reports = run(False)
    assert [r.died_units for r in reports] == [0, 0, 0]
    assert reports[0].units_alive == 4 and reports[1].units_alive == 8
    assert reports[1].died_synapses > 0
    assert [r.died_units for r in run(None)] == [r.died_units for r in every]  # unset: as true
    kernels = run(False, "kernels")  # conv kernels are synapses there: they still die
    assert [r.died_units for r in kernels] == [0, 0, 0] and kernels[0].died_synapses > 0
    assert every[0].died_units > 0 and every[1].died_units > 0
    channels = run("channels")  # conv channels die as with true; FC neurons all live, FC synapses die
    assert channels[0].died_units == every[0].died_units and channels[1].died_units == 0
    assert channels[1].units_alive == 8 and channels[1].died_synapses > 0


def test_compression_counts_weights_that_read_pruned_units():
    net = build_network("4C3-AP2-6FC-3FC", (1, 4, 4), 3)
    dense = count_parameters(net)
    assert dense.compression == 0 and dense.dense == sum(p.numel() for p in net.parameters())
    units = [torch.tensor([True, False, True, True]), torch.ones(6, dtype=torch.bool), torch.ones(3, dtype=torch.bool)]
    syn = [torch.ones(4, 1, dtype=torch.bool), torch.ones(6, 16, dtype=torch.bool), torch.ones(3, 6, dtype=torch.bool)]
    rep = count_parameters(net, units, syn)
    # channel 1 removed: its 9 weights + bias, and the 4 (2x2 after AP2) columns of each of 6 FC neurons
    assert dense.retained - rep.retained == 9 + 1 + 4 * 6
    assert rep.layers[1].synapses_alive == 6 * 12


def test_state_round_trip_mid_training_gives_identical_continuation():
    torch.manual_seed(0)
    cfg = DPAPConfig(fc=LayerTypeConfig(beta=0.3), conv=LayerTypeConfig(beta=0.3))

    def make():
        torch.manual_seed(0)
        net = build_network("4C3-AP2-10FC-3FC", (1, 6, 6), 3)
        pruner = make_pruner(net, "dpap", cfg)
        opt = torch.optim.Adam(net.parameters(), lr=0.02)
        return net, pruner, opt

    net, pruner, opt = make()
    _train_steps(net, pruner, opt, 4, seed=1)
    pruner.end_epoch(0)
    _train_steps(net, pruner, opt, 2, seed=2)  # mid-epoch: accumulators are non-empty
    state = copy.deepcopy({"net": net.state_dict(), "opt": opt.state_dict(), "pruner": pruner.state_dict()})

    _train_steps(net, pruner, opt, 3, seed=3)
    reports_a = pruner.end_epoch(1)

    net2, pruner2, opt2 = make()
    net2.load_state_dict(state["net"])
    opt2.load_state_dict(state["opt"])
    pruner2.load_state_dict(state["pruner"])
    _train_steps(net2, pruner2, opt2, 3, seed=3)
    reports_b = pruner2.end_epoch(1)

    assert reports_a == reports_b
    for a, b in zip(net.state_dict().values(), net2.state_dict().values()):
        assert torch.equal(a, b)
    for k, v in pruner.masks().items():
        assert torch.equal(v, pruner2.masks()[k])
    assert compression_of(net, pruner).retained == compression_of(net2, pruner2).retained


@pytest.mark.parametrize("rule", ["hebb", "stdp"])
def test_alternative_importance_rules_accumulate(rule):
    net = build_network("6FC-2FC", (4,), 2, time_steps=4)
    pruner = make_pruner(net, "dpap", DPAPConfig(importance=rule))
    net.train()
    net(torch.rand(32, 4) * 2)
    assert pruner.method.layers[0].importance.abs().sum() > 0
    assert pruner.method.layers[0].theta.count == 0  # no sliding threshold outside BCM


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_pruner_runs_on_cuda():
    net = build_network("4C3-AP2-10FC-3FC", (1, 6, 6), 3).cuda()
    pruner = make_pruner(net, "dpap", DPAPConfig())
    net.train()
    net(torch.rand(8, 1, 6, 6, device="cuda"))
    pruner.end_epoch(0)
    assert pruner.method.layers[0].importance.device.type == "cuda"


def test_reference_protocol_waits_for_its_start_epoch_and_uses_its_knobs():
    torch.manual_seed(0)
    net = build_network("8FC-2FC", (4,), 2, time_steps=4)
    pruner = make_pruner(net, "dpap", DPAPConfig(protocol="reference", fc=LayerTypeConfig(beta=0.01)))
    assert pruner.method.layers[0].knobs.epsilon == 1.5 and pruner.method.layers[0].knobs.eta == 13.0
    net.train()
    for epoch in range(5):  # epochs 0-4: the authors' code does not prune yet
        net(torch.rand(16, 4))
        reports = pruner.end_epoch(epoch)
        assert reports[0].died_units == reports[0].died_synapses == 0
        assert torch.all(pruner.method.layers[0].unit_survival.values == 0.01)
    net(torch.rand(16, 4))
    reports = pruner.end_epoch(5)  # β = 0.01: any negative δ kills at once
    assert reports[0].died_units + reports[0].died_synapses > 0


def test_normalization_option_reaches_the_survival_update():
    # one hidden FC layer whose importance is heavy-tailed: one synapse row dominates
    def run(normalization):
        torch.manual_seed(0)
        net = build_network("10FC-2FC", (4,), 2, time_steps=2)
        cfg = DPAPConfig(protocol="paper", normalization=normalization, fc=LayerTypeConfig(beta=0.01, epsilon=0.5))
        pruner = make_pruner(net, "dpap", cfg)
        layer = pruner.method.layers[0]
        layer.importance.copy_(torch.linspace(0, 1, 40).view(10, 4).double() ** 8)
        layer.post_sum.fill_(1.0)
        return pruner.end_epoch(0)[0]

    # min-max: values below (0.25)^(1/8) ≈ 0.84 of the range -> most units and synapses
    # die at once
    assert run("minmax").synapses_alive <= 10
    # rank: only the bottom quarter (ε/2) has δ < 0: neurons 0-2 (ranks 0, 1/9, 2/9) die,
    # then 7 of the 28 synapses of the 7 living neurons (ranks < 1/4 of 27 steps)
    rank = run("rank")
    assert (rank.died_units, rank.units_alive) == (3, 7)
    assert (rank.died_synapses, rank.synapses_alive) == (7, 21)


@pytest.mark.parametrize("rule", ["bcm", "stdp"])
@pytest.mark.parametrize("arch,shape", [("15C3-AP2-40C3-AP2-300FC-10FC", (1, 28, 28)), ("8C3-AP4-16C3-AP2-10FC", (2, 16, 16)), ("6C3-AP2-8C3-12FC-10FC", (1, 12, 12))])
def test_conv_layers_observed_through_their_pooled_spikes_accumulate_the_same_numbers(arch, shape, rule):
    """A conv block followed by 2×2 or 4×4 average pooling is observed from the next
    block's (pooled) input, a quarter of the reading: every accumulator (θ, importance,
    post-synaptic sums) must be bit for bit what observing the spikes themselves gives
    (a conv block without pooling, the last case's second, is observed directly)."""
    state = {}
    for deferred in (True, False):
        torch.manual_seed(0)
        net = build_network(arch, shape, 10, time_steps=4)
        with torch.no_grad():  # PyTorch's initialisation leaves deep SNN layers nearly silent
            for block in net.blocks:
                block.synapse.weight.mul_(3.0)
        pruner = make_pruner(net, "dpap", DPAPConfig(importance=rule))
        if not deferred:
            pruner.method._pooling_factor = lambda block, post: 0
        net.train()
        g = torch.Generator().manual_seed(1)
        for _ in range(3):
            net(torch.rand(16, *shape, generator=g))
        state[deferred] = pruner.method.state_dict()
        fired = [float(layer.post_sum.sum()) for layer in pruner.method.layers]
    assert all(f > 0 for f in fired[:-1]), fired
    a, b = state[True], state[False]
    assert a.keys() == b.keys()
    for la, lb in zip(a["layers"], b["layers"]):
        for key in ("importance", "post_sum"):
            assert torch.equal(la[key], lb[key]), key
        assert torch.equal(la["theta"]["value"], lb["theta"]["value"])
