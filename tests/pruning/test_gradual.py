"""The gradual protocol: deaths in order of importance, a bounded pace, one knob; and the one
definition of a living synapse shared by masks, compression and synaptic operations."""

from __future__ import annotations

import pytest
import torch

from dpap.pruning.compression import compression_of, count_parameters, live_synapses
from dpap.config import ConfigError, DPAPConfig, LayerTypeConfig, config_from_dict
from dpap.pruning.dpap.importance import bcm, spike_trace
from dpap.snn.networks import build_network
from dpap.snn.neurons import firing_rate_mse
from dpap.pruning import Pruner, make_pruner

SIGNAL, ZERO = list(range(4)), list(range(4, 8))  # input columns that carry the signal / are always 0
SILENT = list(range(12, 16))  # hidden neurons that never fire


def _planted(max_death_share: float, epochs: int = 14):
    """A 8-16-2 SNN whose inputs 4-7 are always 0 and whose neurons 12-15 never fire (bias
    −100: no surrogate gradient reaches them), trained on a task of inputs 0-3. Returns the
    epoch each hidden neuron and synapse died (−1: alive at the end)."""
    torch.manual_seed(0)
    net = build_network("16FC-2FC", (8,), 2, time_steps=4)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        net.blocks[0].synapse.weight.copy_(torch.rand(16, 8, generator=g) * 0.6 + 0.1)
        net.blocks[0].synapse.bias.zero_()
        net.blocks[0].synapse.bias[SILENT] = -100.0
    cfg = DPAPConfig(epsilon=1.0, max_death_share=max_death_share, fc=LayerTypeConfig(beta=1.0, eta=50.0))
    pruner = make_pruner(net, "dpap", cfg)
    opt = torch.optim.Adam(net.parameters(), lr=0.005)
    w = torch.randn(4, 2, generator=g)
    died_syn = torch.full((16, 8), -1)
    died_unit = torch.full((16,), -1)
    for epoch in range(epochs):
        net.train()
        for _ in range(20):
            x = torch.zeros(32, 8)
            x[:, SIGNAL] = torch.rand(32, 4, generator=g)
            loss = firing_rate_mse(net(x), (x[:, SIGNAL] @ w).argmax(1), 2)
            opt.zero_grad()
            loss.backward()
            pruner.mask_gradients()
            opt.step()
            pruner.apply_masks()
        pruner.end_epoch(epoch)
        died_syn[~pruner.synapse_mask(0) & (died_syn < 0)] = epoch
        died_unit[~pruner.unit_mask(0) & (died_unit < 0)] = epoch
    return died_unit, died_syn


@pytest.mark.parametrize("share", [1.0, 0.1])
def test_planted_useless_units_die_before_the_ones_that_carry_the_signal(share):
    died_unit, died_syn = _planted(share)
    silent, signal = died_unit[SILENT], died_unit[: SILENT[0]]
    assert bool((silent >= 0).all()), "every neuron that never fires is pruned"
    assert bool((signal[signal >= 0] > silent.max()).all()), f"a signal neuron died before a silent one: {died_unit.tolist()}"
    assert int((signal < 0).sum()) >= 1  # and the network keeps some
    if share == 1.0:
        rows = slice(0, SILENT[0])
        zero, sig = died_syn[rows][:, ZERO], died_syn[rows][:, SIGNAL]
        assert bool((zero >= 0).all()), "every synapse from an always-zero input is pruned"
        assert int(zero.max()) <= int(sig[sig >= 0].min()), f"a signal synapse died before an always-zero one: {died_syn.tolist()}"


def test_no_layer_loses_more_than_its_share_in_one_epoch():
    torch.manual_seed(0)
    net = build_network("16C3-AP2-32C3-AP2-64FC-10FC", (1, 8, 8), 10, time_steps=2)
    # every δ is negative (ε = 2) and β is tiny: without the cap everything would die at once
    cfg = DPAPConfig(epsilon=2.0, max_death_share=0.1, conv=LayerTypeConfig(beta=0.01), fc=LayerTypeConfig(beta=0.01))
    pruner = make_pruner(net, "dpap", cfg)
    net.train()
    last = compression_of(net, pruner)
    for epoch in range(6):  # (later, conv 1 has < 10 channels: one may then die alone, see cap_deaths)
        net(torch.rand(32, 1, 8, 8) * 3)
        before = [int(pruner.synapse_mask(i).sum()) for i in range(len(net.blocks))]
        units_before = [int(pruner.unit_mask(i).sum()) for i in range(len(net.blocks))]
        pruner.end_epoch(epoch)
        for i in range(len(net.blocks)):
            lost = before[i] - int(pruner.synapse_mask(i).sum())
            assert lost <= int(0.1 * before[i]), (epoch, i, lost, before[i])
            assert units_before[i] - int(pruner.unit_mask(i).sum()) <= max(1, int(0.1 * units_before[i]))
        now = compression_of(net, pruner)
        assert now.compression - last.compression <= 0.1 * (1 - last.compression) + 1e-9
        assert now.compression > last.compression  # and it does prune, every epoch
        last = now


@pytest.mark.parametrize("share", [0.1, 0.25])
def test_a_unit_dies_alone_only_within_the_networks_share(share):
    """A layer with fewer units than 1/share loses one alone, but not while that one unit
    would take more than the share of the whole network: each channel of this 4-channel
    conv 1 takes its 10 parameters and 9 of conv 2's per living conv 2 channel, 298 of the
    network's 2,514 (11.9 %) while all 32 live."""
    torch.manual_seed(0)
    net = build_network("4C3-AP2-32C3-AP2-10FC", (1, 8, 8), 10, time_steps=2)
    dense = compression_of(net).dense
    assert dense == 2514
    cfg = DPAPConfig(epsilon=2.0, max_death_share=share, conv=LayerTypeConfig(beta=0.01), fc=LayerTypeConfig(beta=0.01))
    pruner = make_pruner(net, "dpap", cfg)
    net.train()
    last = compression_of(net, pruner)
    first_conv1_death = None
    for epoch in range(12):
        net(torch.rand(32, 1, 8, 8) * 3)
        conv2_before = int(pruner.unit_mask(1).sum())
        pruner.end_epoch(epoch)
        now = compression_of(net, pruner)
        assert now.retained >= last.retained - share * dense, (epoch, last.retained, now.retained)
        last = now
        if first_conv1_death is None and int(pruner.unit_mask(0).sum()) < 4:
            first_conv1_death = (epoch, conv2_before)
    assert first_conv1_death is not None
    epoch, conv2_living = first_conv1_death
    if share == 0.1:  # 10 + 9·n ≤ 251.4 only once conv 2 is down to 26 channels
        assert epoch > 0 and conv2_living <= 26, first_conv1_death
    else:  # 298 ≤ 628.5: the first epoch already
        assert epoch == 0 and conv2_living == 32, first_conv1_death


def test_epsilon_is_the_one_knob_and_per_type_values_override_it():
    cfg = config_from_dict({"pruning": {"dpap": {"epsilon": 1.3, "conv": {"epsilon": 0.5}}}}).pruning.dpap
    assert cfg.resolved("fc").epsilon == 1.3 and cfg.resolved("conv").epsilon == 0.5
    assert DPAPConfig().resolved("fc").epsilon == 1.1
    # conv channels: ε 0.9 where they are the conv layers' only pruning, 1.1 where kernels go too;
    # the one knob and a per-type value override both
    assert DPAPConfig().resolved("conv").epsilon == 0.9 and DPAPConfig().resolved("conv", "kernels").epsilon == 1.1
    assert cfg.resolved("conv", "kernels").epsilon == 0.5
    assert DPAPConfig(epsilon=1.3).resolved("conv").epsilon == DPAPConfig(epsilon=1.3).resolved("conv", "kernels").epsilon == 1.3
    assert DPAPConfig(protocol="paper").resolved("conv", "kernels").epsilon == 0.4
    paper = DPAPConfig(protocol="paper")
    assert (paper.resolved_normalization(), paper.resolved_bounded(), paper.resolved_max_death_share()) == ("minmax", False, 1.0)
    gradual = DPAPConfig()
    assert (gradual.resolved_normalization(), gradual.resolved_bounded(), gradual.resolved_max_death_share()) == ("rank", True, 0.1)


def test_a_larger_epsilon_prunes_more():
    def final(eps):
        torch.manual_seed(0)
        net = build_network("8C3-AP2-32FC-4FC", (1, 6, 6), 4, time_steps=2)
        pruner = make_pruner(net, "dpap", DPAPConfig(epsilon=eps, conv=LayerTypeConfig(beta=1.0), fc=LayerTypeConfig(beta=1.0)))
        g = torch.Generator().manual_seed(0)
        net.train()
        for epoch in range(10):
            net(torch.rand(64, 1, 6, 6, generator=g) * 2)
            pruner.end_epoch(epoch)
        return compression_of(net, pruner).compression

    values = [final(e) for e in (0.4, 0.8, 1.2, 1.6)]
    assert values == sorted(values) and values[-1] > values[0] + 0.2, values


def test_decisions_stop_at_end_fraction_and_the_net_keeps_training():
    """``end_fraction`` 0.5 of 10 epochs: the last decision is after epoch 4 (from 0); after it
    nothing dies and no survival value moves, though the network still learns."""
    assert DPAPConfig(end_fraction=0.5).last_decision_epoch(10) == 4
    assert DPAPConfig(end_fraction=0.55).last_decision_epoch(10) == 5  # round(5.5) = 6 epochs decide
    assert DPAPConfig().last_decision_epoch(10) is None  # gradual's default: every epoch
    with pytest.raises(ConfigError, match=r"^end_fraction: 0\.5 .*epochs="):  # a loop of unknown length: said, not ignored
        DPAPConfig(end_fraction=0.5).last_decision_epoch(None)

    def run(end_fraction):
        torch.manual_seed(0)
        net = build_network("8C3-AP2-32FC-4FC", (1, 6, 6), 4, time_steps=2)
        pruner = make_pruner(net, "dpap", DPAPConfig(epsilon=1.4, end_fraction=end_fraction, conv=LayerTypeConfig(beta=0.5), fc=LayerTypeConfig(beta=0.5)), epochs=10)
        g = torch.Generator().manual_seed(0)
        net.train()
        alive, values = [], []
        for epoch in range(10):
            net(torch.rand(64, 1, 6, 6, generator=g) * 2)
            pruner.end_epoch(epoch)
            alive.append(sum(int(pruner.synapse_mask(i).sum()) for i in range(len(net.blocks))))
            values.append(pruner.method.layers[1].synapse_survival.values.clone())
        return alive, values, pruner

    alive, values, pruner = run(0.5)
    assert alive[4] < alive[0] or alive[0] < 32 * 8 * 9 + 4 * 32  # it pruned while it decided
    assert alive[5:] == [alive[4]] * 5, alive  # and nothing after epoch 4
    assert all(torch.equal(values[4], v) for v in values[5:])
    assert not pruner.method.can_still_prune(pruner, range(5, 10))
    full, _, _ = run(1.0)
    assert full[-1] < alive[-1], (full, alive)  # deciding to the end prunes more here


# ------------------------------------------------------------- one definition of "alive"


def test_a_synapse_reading_a_dead_unit_is_dead_everywhere():
    torch.manual_seed(0)
    net = build_network("4C3-AP2-6FC-3FC", (1, 4, 4), 3)
    pruner = make_pruner(net, "dpap", DPAPConfig())
    pruner.kill_units(0, torch.tensor([False, True, False, False]))  # channel 1
    pruner.kill_units(1, torch.tensor([False, False, True, False, False, False]))  # FC neuron 2
    pruner.refresh_masks()
    pruner.apply_masks()
    fc = pruner.synapse_mask(1)
    # channel 1 feeds FC columns 4-7 (2x2 after AP2); neuron 2's row is dead
    assert not fc[:, 4:8].any() and not fc[2].any()
    assert int(fc.sum()) == 5 * 12
    out = pruner.synapse_mask(2)
    assert not out[:, 2].any() and int(out.sum()) == 3 * 5  # the output layer reads neuron 2 no more
    # survival values, masks, compression and the weights agree
    values = pruner.survival_values()["layer1.fc.synapses"]
    assert values.numel() == int(fc.sum())
    rep = compression_of(net, pruner)
    assert rep.layers[1].synapses_alive == int(fc.sum()) and rep.layers[2].synapses_alive == int(out.sum())
    live = live_synapses(net, [pruner.unit_mask(i) for i in range(3)], [pruner.synapse_mask(i) for i in range(3)])
    assert all(torch.equal(a, pruner.synapse_mask(i)) for i, a in enumerate(live))
    assert int((net.blocks[1].synapse.weight != 0).sum()) == int(fc.sum())
    # the masks as the pruner reports them (and saves them) are the same
    assert torch.equal(pruner.masks()["layer1.synapses"], fc)


def test_dnn_multiply_accumulates_skip_dead_input_channels():
    from dpap.config import Config
    from dpap.training.model_file import LoadedModel
    from dpap.evaluation.metrics import synaptic_operations

    torch.manual_seed(0)
    net = build_network("4C3-4C3-3FC", (1, 5, 5), 3, kind="dnn")
    cfg = Config()
    cfg.model.kind = "dnn"
    units = [torch.tensor([True, False, True, False]), torch.ones(4, dtype=torch.bool), torch.ones(3, dtype=torch.bool)]
    syn = [torch.ones(4, 1, dtype=torch.bool), torch.ones(4, 4, dtype=torch.bool), torch.ones(3, 100, dtype=torch.bool)]
    x = torch.rand(2, 1, 5, 5)
    ops = synaptic_operations(LoadedModel(net, cfg, units, syn, [], {}, {}), x)
    dense = synaptic_operations(LoadedModel(net, cfg, None, None, [], {}, {}), x)
    # conv 2 (same padding, 5x5): each output position sums the 3x3 window of every input
    # channel; with 2 of 4 input channels dead it reads half of them
    assert ops.per_layer[1]["macs"] == pytest.approx(dense.per_layer[1]["macs"] / 2)
    assert ops.per_layer[0]["macs"] == pytest.approx(dense.per_layer[0]["macs"] / 2)  # 2 of 4 filters alive


# ---------------------------------------------------------------- pre-synaptic traces


def test_conv_pre_trace_is_the_previous_channel_trace_before_pooling():
    torch.manual_seed(0)
    net = build_network("3C3-MP2-2C3-4FC", (1, 6, 6), 4, time_steps=3)
    with torch.no_grad():
        for b in net.blocks:
            b.synapse.weight.mul_(3)
    pruner = make_pruner(net, "dpap", DPAPConfig())
    seen = {}
    net.observe(lambda i, b, pre, post: seen.__setitem__(i, (pre, post)))
    net.train()
    with torch.no_grad():
        net(torch.rand(5, 1, 6, 6) * 2)
    post0, (pre1, post1) = seen[0][1], seen[1]
    pre_tr = spike_trace(post0, 0.5, conv=True)  # channels of layer 0, every position, before MP2
    post_tr = spike_trace(post1, 0.5, conv=True)
    expected = bcm(pre_tr, post_tr, pruner.method.layers[1].theta.value.float())
    assert float(pre_tr.sum()) > 0 and float(post_tr.sum()) > 0
    assert torch.allclose(pruner.method.layers[1].importance.float(), expected, rtol=1e-5, atol=1e-5)
    pooled = spike_trace(pre1, 0.5, conv=True)
    assert not torch.allclose(pooled, pre_tr)  # max pooling would have given another trace


# --------------------------------------------------------------------------- device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_pruner_follows_the_network_to_cuda():
    net = build_network("4C3-AP2-10FC-3FC", (1, 6, 6), 3)
    pruner = make_pruner(net, "dpap", DPAPConfig(conv=LayerTypeConfig(beta=0.01), fc=LayerTypeConfig(beta=0.01)))
    net.cuda()  # after the pruner was attached
    net.train()
    net(torch.rand(8, 1, 6, 6, device="cuda"))
    pruner.end_epoch(0)
    pruner.mask_gradients()
    pruner.apply_masks()
    assert pruner.method.layers[0].importance.device.type == "cuda"
    assert pruner.unit_mask(0).device.type == "cuda"
    state = pruner.state_dict()
    net.cpu()
    pruner.load_state_dict(state)
    assert pruner.method.layers[1].synapse_survival.values.device.type == "cpu"


def test_conv_mode_auto_prunes_kernels_only_where_conv_layers_hold_most_parameters():
    gradual, paper = DPAPConfig(), DPAPConfig(protocol="paper")
    assert (gradual.resolved_conv_mode(0.51), gradual.resolved_conv_mode(0.5)) == ("kernels", "channels")
    assert paper.resolved_conv_mode(0.9) == "channels" and DPAPConfig(conv_mode="kernels").resolved_conv_mode(0.0) == "kernels"

    def pruned(arch):
        torch.manual_seed(0)
        net = build_network(arch, (1, 8, 8), 10, time_steps=2)
        # every δ negative (ε = 2), tiny β: whatever can die does, within the cap
        cfg = DPAPConfig(epsilon=2.0, conv=LayerTypeConfig(beta=0.01, eta=7.0), fc=LayerTypeConfig(beta=0.02, eta=9.0))
        pruner = make_pruner(net, "dpap", cfg)
        net.train()
        for epoch in range(3):
            net(torch.rand(32, 1, 8, 8) * 3)
            pruner.end_epoch(epoch)
        conv2 = pruner.method.layers[1]
        # kernels dead on their own (their output and input channels alive)
        alone = pruner.unit_mask(1)[:, None] & pruner.input_mask(1)[None, :] & ~pruner.synapses[1]
        return pruner.method.conv_mode, int(alone.sum()), conv2

    # 12·9 + 12·64·9 = 7,020 conv parameters against 2,570 FC ones: conv layers lose kernels
    # too, whose survival starts at the FC synapses' β and uses their η; channels keep conv's
    mode, kernels_dead, conv2 = pruned("12C3-AP2-64C3-AP2-10FC")
    assert mode == "kernels" and kernels_dead > 0
    assert (conv2.synapse_knobs.beta, conv2.synapse_knobs.eta, conv2.knobs.beta, conv2.knobs.eta) == (0.02, 9.0, 0.01, 7.0)
    # 4,752 conv parameters against 17,674 FC ones (dvc repro's digits net): whole channels only
    mode, kernels_dead, conv2 = pruned("16C3-AP2-32C3-AP2-128FC-10FC")
    assert mode == "channels" and kernels_dead == 0 and conv2.synapse_survival is None



def test_the_first_layer_of_an_fc_network_takes_its_own_epsilon():
    """An FC layer that reads the network's input (an FC network's first layer) defaults to
    ε 0.9; FC layers behind conv layers keep 1.1; a value the user sets wins; the paper's
    and the authors' protocols have no such default."""
    d = DPAPConfig()
    assert (d.resolved("fc").epsilon, d.resolved("fc", reads_input=True).epsilon) == (1.1, 0.9)
    assert d.resolved("fc", reads_input=True).beta == d.resolved("fc").beta  # only ε differs
    assert DPAPConfig(fc=LayerTypeConfig(epsilon=1.2)).resolved("fc", reads_input=True).epsilon == 1.2
    assert DPAPConfig(epsilon=1.0).resolved("fc", reads_input=True).epsilon == 1.0
    assert DPAPConfig(protocol="paper").resolved("fc", reads_input=True).epsilon == DPAPConfig(protocol="paper").resolved("fc").epsilon

    def knobs(arch, shape):
        net = build_network(arch, shape, 10, time_steps=2)
        return [(layer.layer_type, layer.knobs.epsilon) for layer in make_pruner(net, "dpap", DPAPConfig()).method.layers]

    assert knobs("32FC-10FC", (1, 8, 8)) == [("fc", 0.9), ("fc", 1.1)]
    assert knobs("8C3-AP2-32FC-10FC", (1, 8, 8)) == [("conv", 0.9), ("fc", 1.1), ("fc", 1.1)]
