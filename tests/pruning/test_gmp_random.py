"""GMP and random pruning (dpap/pruning/{schedule,gmp,random}): Zhu & Gupta's cubic
schedule by hand, the target reached on the scheduled epoch and kept, smallest
magnitudes (or channel L1 norms) first, and random pruning's same counts, other entries.

The methods read only end-of-epoch weights: weights are set by hand and
``pruner.end_epoch(e)`` called directly."""

import pytest
import torch

from dpap.config import ConfigError, config_from_dict
from dpap.pruning import make_pruner
from dpap.pruning.gmp import GMPConfig
from dpap.pruning.random import RandomConfig
from dpap.pruning.schedule import cubic_sparsity, pruned_count
from dpap.snn.networks import build_network


def toy_fc():
    """4 inputs → 4 neurons → 2 outputs; layer 0's 16 weights have magnitudes 1..16 (signs
    mixed): |w[i, j]| = 4i + j + 1."""
    net = build_network("4FC-2FC", (4,), 2, time_steps=2)
    mags = torch.arange(1.0, 17.0).reshape(4, 4)
    signs = torch.tensor([1.0, -1.0]).repeat(8).reshape(4, 4)
    with torch.no_grad():
        net.blocks[0].synapse.weight.copy_(mags * signs / 16)
        net.blocks[1].synapse.weight.fill_(0.001)  # smaller than all of layer 0: never pruned unless prune_output
    return net


def dead_synapses(pruner, layer=0):
    return ~pruner.synapse_mask(layer)


# ---------------------------------------------------------------------- schedule


def test_cubic_schedule_by_hand():
    """s_e = s_f + (s_i − s_f)(1 − (e − start + 1)/(end − start + 1))³."""
    s = [cubic_sparsity(e, 0, 3, 0.0, 0.8) for e in range(6)]
    # 0.8·(1 − 0.75³) = 0.4625; 0.8·(1 − 0.5³) = 0.7; 0.8·(1 − 0.25³) = 0.7875; then 0.8
    assert s == pytest.approx([0.4625, 0.7, 0.7875, 0.8, 0.8, 0.8], abs=1e-12)
    assert cubic_sparsity(1, 2, 5, 0.0, 0.8) == 0.0  # before start: nothing
    assert cubic_sparsity(2, 2, 5, 0.0, 0.8) == pytest.approx(0.4625)
    # s_i = 0.2: 0.8 + (0.2 − 0.8)·0.75³ = 0.546875
    assert cubic_sparsity(0, 0, 3, 0.2, 0.8) == pytest.approx(0.546875)
    assert pruned_count(0.4625, 16) == 7 and pruned_count(0.7, 16) == 11  # 7.4 → 7, 11.2 → 11
    assert pruned_count(0.99, 10) == 9  # one left


def test_end_epoch_from_the_share_of_the_run():
    assert GMPConfig(end_fraction=0.5).end(30) == 14  # round(15) − 1
    assert GMPConfig(end_fraction=0.5).end(3) == 1  # round(1.5) = 2 → 1
    assert GMPConfig(end_fraction=0.1, start_epoch=4).end(10) == 4  # never before start
    assert GMPConfig(end_epoch=7).end(None) == 7
    with pytest.raises(ConfigError, match="end_epoch"):
        GMPConfig().end(None)


# ------------------------------------------------------------------------- GMP


def test_gmp_hits_its_target_on_the_end_epoch_and_keeps_it():
    """Target 0.75 over epochs 0-3 of layer 0's 16 synapses: 16·s_e = 6.94, 10.5, 11.8, 12
    → 7, 11, 12, 12 pruned (round half up), the smallest magnitudes first; after epoch 3
    nothing more, even when a survivor becomes the smallest weight."""
    net = toy_fc()
    pruner = make_pruner(net, "gmp", GMPConfig(target=0.75, end_epoch=3))
    mags = torch.arange(1, 17).reshape(4, 4)
    counts = []
    for e in range(6):
        if e == 4:
            with torch.no_grad():
                net.blocks[0].synapse.weight[3, 3] = 1e-6  # |w| = 16 before: now the smallest survivor
        reports = pruner.end_epoch(e)
        dead = dead_synapses(pruner)
        counts.append(int(dead.sum()))
        assert torch.equal(dead, mags <= counts[-1])  # exactly the smallest magnitudes
        assert reports[1].synapses_alive == 8  # the output layer untouched
    assert counts == [7, 11, 12, 12, 12, 12]
    # the pruned weights are exactly zero
    assert torch.equal(net.blocks[0].synapse.weight == 0, dead_synapses(pruner))


def test_gmp_prunes_the_output_layer_only_when_asked_and_never_its_neurons():
    net = toy_fc()
    pruner = make_pruner(net, "gmp", GMPConfig(target=0.5, end_epoch=0, prune_output=True, structure="channel"))
    pruner.end_epoch(0)
    assert int(pruner.units[1].sum()) == 2  # output neurons all alive
    assert int(dead_synapses(pruner, 1).sum()) == 4  # half of its 8 synapses
    assert int(pruner.units[0].sum()) == 2  # hidden layer: half its units (channel)


def test_channel_gmp_kills_the_units_with_the_smallest_l1_norm():
    """Rows' L1 norms 1.0, 1.2, 3.0, 0.9: with target 0.5 the units 3 (0.9) and 0 (1.0) die,
    though unit 0 holds the largest single weight (0.9) of the layer."""
    net = build_network("4FC-2FC", (3,), 2, time_steps=2)
    with torch.no_grad():
        net.blocks[0].synapse.weight.copy_(torch.tensor([[0.9, -0.05, 0.05], [0.4, 0.4, -0.4], [1.0, -1.0, 1.0], [-0.3, 0.3, 0.3]]))
    pruner = make_pruner(net, "gmp", GMPConfig(target=0.5, end_epoch=0, structure="channel"))
    pruner.end_epoch(0)
    assert pruner.units[0].tolist() == [False, True, True, False]
    # their synapses and the next layer's columns that read them are gone; their bias is silent
    assert not pruner.synapse_mask(0)[[0, 3]].any() and not pruner.synapse_mask(1)[:, [0, 3]].any()
    assert net.blocks[0].synapse.bias[[0, 3]].abs().sum() == 0


def test_channel_gmp_on_a_conv_layer_sums_its_kernels():
    """3 channels of one 3×3 kernel each with L1 norms 9·(0.5, 0.1, 0.3): target 0.34 →
    round(1.02) = 1 channel, the second."""
    net = build_network("3C3-2FC", (1, 4, 4), 2, time_steps=2)
    with torch.no_grad():
        w = net.blocks[0].synapse.weight
        for c, v in enumerate((0.5, -0.1, 0.3)):
            w[c].fill_(v)
    pruner = make_pruner(net, "gmp", GMPConfig(target=0.34, end_epoch=0, structure="channel"))
    pruner.end_epoch(0)
    assert pruner.units[0].tolist() == [True, False, True]


def test_gmp_state_round_trips():
    net = toy_fc()
    pruner = make_pruner(net, "gmp", GMPConfig(target=0.75, end_epoch=3))
    pruner.end_epoch(0)
    again = make_pruner(toy_fc(), "gmp", GMPConfig(target=0.75, end_epoch=3))
    again.load_state_dict(pruner.state_dict())
    assert torch.equal(again.synapse_mask(0), pruner.synapse_mask(0))
    pruner.end_epoch(1)
    again.end_epoch(1)
    assert torch.equal(again.synapse_mask(0), pruner.synapse_mask(0))


def test_gmp_can_still_prune_until_its_end_epoch():
    pruner = make_pruner(toy_fc(), "gmp", GMPConfig(target=0.75, end_epoch=3))
    assert pruner.method.can_still_prune(pruner, range(3, 10))
    assert not pruner.method.can_still_prune(pruner, range(4, 10))
    assert pruner.method.permanent and pruner.method.masks_every_step


# ---------------------------------------------------------------------- random


def _random_run(seed, epochs=4, structure="unstructured"):
    pruner = make_pruner(toy_fc(), "random", RandomConfig(target=0.75, end_epoch=3, seed=seed, structure=structure))
    masks, counts = [], []
    for e in range(epochs):
        pruner.end_epoch(e)
        masks.append(pruner.synapse_mask(0).clone())
        counts.append(int((~pruner.synapse_mask(0)).sum()))
    return masks, counts


def test_random_prunes_gmps_counts_other_entries_the_same_for_a_seed():
    masks, counts = _random_run(0)
    assert counts == [7, 11, 12, 12]  # GMP's counts (test above)
    gmp_dead = torch.arange(1, 17).reshape(4, 4) <= 7
    assert not torch.equal(~masks[0], gmp_dead)  # not the smallest magnitudes
    again, _ = _random_run(0)
    assert all(torch.equal(a, b) for a, b in zip(masks, again))  # deterministic per seed
    other, other_counts = _random_run(1)
    assert other_counts == counts and not torch.equal(other[0], masks[0])
    # permanent: each epoch's pruned set contains the previous one's
    assert all(not bool((b & ~a).any()) for a, b in zip(masks, masks[1:]))


def test_random_state_carries_its_generator():
    """A resumed random pruner draws what the uninterrupted one draws."""
    pruner = make_pruner(toy_fc(), "random", RandomConfig(target=0.75, end_epoch=3, seed=3))
    pruner.end_epoch(0)
    state = pruner.state_dict()
    pruner.end_epoch(1)
    again = make_pruner(toy_fc(), "random", RandomConfig(target=0.75, end_epoch=3, seed=3))
    again.load_state_dict(state)
    again.end_epoch(1)
    assert torch.equal(again.synapse_mask(0), pruner.synapse_mask(0))


def test_random_channel_prunes_gmps_unit_counts():
    pruner = make_pruner(toy_fc(), "random", RandomConfig(target=0.5, end_epoch=0, structure="channel", seed=0))
    pruner.end_epoch(0)
    assert int(pruner.units[0].sum()) == 2 and int(pruner.units[1].sum()) == 2


# -------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "method, settings, key",
    [
        ("gmp", {"target": 1.5}, "pruning.gmp.target"),
        ("gmp", {"structure": "row"}, "pruning.gmp.structure"),
        ("gmp", {"end_fraction": 0}, "pruning.gmp.end_fraction"),
        ("gmp", {"start_epoch": 3, "end_epoch": 1}, "pruning.gmp.end_epoch"),
        ("random", {"seed": -1}, "pruning.random.seed"),
        ("random", {"target": -0.1}, "pruning.random.target"),
        ("gradr", {"alpha": -1.0}, "pruning.gradr.alpha"),
        ("gradr", {"sparsity": 0.3}, "pruning.gradr.sparsity"),
        ("gradr", {"lr": 0}, "pruning.gradr.lr"),
        ("deepr", {"density": 0}, "pruning.deepr.density"),
        ("deepr", {"density": 1.5}, "pruning.deepr.density"),
        ("deepr", {"temperature": -1.0}, "pruning.deepr.temperature"),
        ("deepr", {"what": 1}, "pruning.deepr.what"),
    ],
)
def test_each_methods_settings_validate(method, settings, key):
    with pytest.raises(ConfigError) as err:
        config_from_dict({"pruning": {"method": method, method: settings}})
    assert str(err.value).startswith(key)


def test_each_method_is_registered_with_its_defaults():
    for method in ("gmp", "random", "gradr", "deepr"):
        cfg = config_from_dict({"pruning": {"method": method}})
        assert cfg.pruning.settings is getattr(cfg.pruning, method)
