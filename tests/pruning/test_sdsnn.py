"""SD-SNN (dpap/pruning/sdsnn.py) against the spec's testable properties
(docs/spec/SDSNN.md §5), with hand-computed numbers on small networks.

The method reads only end-of-epoch weights, so most tests set weights by hand and call
``pruner.end_epoch(e)`` directly; the last ones train on digits (resume through a
regeneration event)."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from dpap.config import Config, ConfigError, SDSNNConfig, config_from_dict
from dpap.snn.networks import build_network
from dpap.pruning import Pruner, SDSNNMethod, make_pruner
from dpap.training.setup import make_run_pruner
from dpap.pruning.sdsnn.rules import consecutive, normalized_width, percentile, rate_increment, regeneration_percentile, schedule


def sd(**kw) -> SDSNNConfig:
    return SDSNNConfig(**kw)


def small_net(arch="8C3-BN-AP2-16FC-10FC"):
    torch.manual_seed(0)
    return build_network(arch, (1, 8, 8), 10)


# ----------------------------------------------------------------------- schedule


def test_schedule_is_the_authors_at_600_epochs_and_compressed_below():
    s = schedule(SDSNNConfig(), 600)
    assert (s.spines, s.scale, s.clip_from, s.prune_from) == (18, 1.0, 19, 37)
    assert s.steps(37) == [0.0] and s.steps(60) == [23.0]
    s = schedule(SDSNNConfig(), 30)  # K' = max(round(18·30/600), min_spines 4) = 4, s = 20/6
    assert (s.spines, s.clip_from, s.prune_from) == (4, 5, 9) and s.scale == pytest.approx(20 / 6)
    assert s.steps(10) == pytest.approx([20 / 6, 20 / 6 + 20 / 18, 20 / 6 + 40 / 18])
    s = schedule(sd(min_spines=2), 30)  # K' = max(2, round(0.9)) = 2, s = 20/4 = 5
    assert (s.spines, s.scale, s.clip_from, s.prune_from) == (2, 5.0, 3, 5)
    assert s.steps(6) == [5.0, 6.0, 7.0, 8.0, 9.0]
    s = schedule(sd(min_spines=2), 100)  # K' = 3, s = 20/5 = 4
    assert (s.spines, s.scale, s.prune_from) == (3, 4.0, 7)
    assert schedule(SDSNNConfig(), 300).spines == 9  # round(18·300/600) is above the floor
    # the floor gives way in a short run so that the main pruning's regrowth (3K'+4) still fits
    assert schedule(SDSNNConfig(), 17).spines == 4 and schedule(SDSNNConfig(), 16).spines == 3
    assert schedule(SDSNNConfig(), 12).spines == 2
    assert schedule(SDSNNConfig(), 7).spines == 2 and schedule(sd(spines=1), 30).spines == 1
    assert schedule(sd(schedule_epochs=None), 30).spines == 18  # never scaled


def test_consecutive_rule_needs_k_plus_one_epochs_in_a_row():
    K = 3
    count, prev = torch.zeros(1, dtype=torch.int32), torch.zeros(1, dtype=torch.bool)
    seen = []
    # K epochs in the set, one out, then K+1 in
    for member in [1, 1, 1, 0, 1, 1, 1, 1]:
        now = torch.tensor([bool(member)])
        count = consecutive(count, now, prev)
        prev = now
        seen.append(int(count))
    assert seen == [0, 1, 2, 0, 0, 1, 2, 3]
    assert [c >= K for c in seen].index(True) == 7  # only the (K+1)-th epoch of the second run fires


def test_percentile_is_numpys_linear_percentile():
    g = torch.Generator().manual_seed(1)
    for n in (1, 2, 7, 1000):
        x = torch.randn(n, generator=g)
        for q in (0.0, 37.5, 61.0, 99.0, 100.0):
            assert float(percentile(x, q)) == pytest.approx(float(np.percentile(x.numpy().astype(np.float64), q)), abs=1e-6)


def test_regeneration_percentile_schedule_of_the_spec():
    # §2.3: q_conv 66 (e37), 68.5 (e50), 74.0 (e60), 88.2 (e70), 99 from e74; q_fc 61 ... 99 from e76
    conv = [regeneration_percentile(65, e - 37) for e in (37, 50, 60, 70, 73, 74)]
    assert [round(q, 1) for q in conv] == [66.0, 68.5, 74.0, 88.2, 95.9, 99.0]  # 65 + 1.1^36 = 95.9
    fc = [regeneration_percentile(60, e - 37) for e in (37, 50, 60, 70, 75, 76)]
    assert [round(q, 1) for q in fc] == [61.0, 63.5, 69.0, 83.2, 97.4, 99.0]


def test_normalized_width():
    assert torch.equal(normalized_width(torch.full((3,), 0.2), torch.full((3,), -0.2)), torch.full((3,), 0.5))
    rho = normalized_width(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([-1.0, -1.0, -2.0]))  # widths 2, 3, 5
    assert torch.allclose(rho, torch.tensor([0.0, 1 / 3, 1.0]))


def test_rate_increments_match_the_spec():
    cfg = sd(fc_ratio_scale=None, fc_rate_gain=0.5)  # the authors' rule
    # fc1 at e37 (t=0): 512 neurons, 10 of them pruned, a 10-way classifier: 2 -> 27.1 (§2.4)
    assert 2.0 + rate_increment("fc", [0.0], 502, 10, cfg) == pytest.approx(27.1)
    # α jumps from 0.5·e^-23 at e60 to 0.0005 at e61 (Q8)
    assert rate_increment("fc", [23.0], 10, 10, cfg) == pytest.approx(0.5 * math.exp(-23))
    assert rate_increment("fc", [24.0], 10, 10, cfg) == pytest.approx(0.0005)
    # conv: e^{-t/5}·(C−d)/(C'−d'); summed over t it converges to 5.52·ratio (§2.4)
    assert rate_increment("conv", [0.0], 64, 128, cfg) == pytest.approx(0.5)
    assert rate_increment("conv", [float(t) for t in range(600)], 1, 1, cfg) == pytest.approx(1 / (1 - math.exp(-0.2)))
    assert rate_increment("conv", [0.0], 5, 0, cfg) == 0.0  # a dead next layer: no division by zero


def test_fc_ratio_scale_makes_the_rate_independent_of_the_layers_width():
    cfg = sd(fc_ratio_scale=51.2, fc_rate_gain=0.5)
    # on the authors' fc1 (512 before 10) the scaled ratio is theirs: 2 -> 27.1 at e37
    assert 2.0 + rate_increment("fc", [0.0], 502, 10, cfg, units=512, next_units=10) == pytest.approx(27.1)
    # 128 neurons with 10 dead (the same share as 502 of 512 would be 125.5): 0.5·51.2·118/128
    assert rate_increment("fc", [0.0], 118, 10, cfg, units=128, next_units=10) == pytest.approx(0.5 * 51.2 * 118 / 128)
    # the authors' absolute ratio: 4 times less on 128 neurons
    assert rate_increment("fc", [0.0], 128, 10, sd(fc_ratio_scale=None, fc_rate_gain=0.5)) == pytest.approx(0.5 * 12.8)
    # conv layers keep the authors' absolute ratio
    assert rate_increment("conv", [0.0], 32, 128, cfg, units=32, next_units=128) == pytest.approx(0.25)


def test_compressed_steps_see_the_units_the_earlier_steps_pruned():
    cfg = sd(fc_ratio_scale=None, fc_rate_gain=1.0)
    # step 1 (t=0): 1·100/10 = 10 -> p = 12; step 2 (t=1) sees 100 − ⌊100·0.12⌋ = 88 alive
    got = rate_increment("fc", [0.0, 1.0], 100, 10, cfg, units=100, rate=2.0)
    assert got == pytest.approx(10.0 + math.exp(-1) * 88 / 10)
    # without units and rate every step reads the same 100 alive (the overshoot)
    assert rate_increment("fc", [0.0, 1.0], 100, 10, cfg) == pytest.approx(10.0 + math.exp(-1) * 100 / 10)
    # never more alive than the layer has now
    assert rate_increment("fc", [0.0, 1.0], 50, 10, cfg, units=100, rate=2.0) == pytest.approx(5.0 + math.exp(-1) * 50 / 10)


# --------------------------------------------------------------- the method


AUTHORS = dict(fc_rate_gain=0.5, fc_ratio_scale=None, fc_percentile=60.0)
"""The authors' constants where the defaults depart from them (docs/pruning.md, "SD-SNN")."""


def unscaled(**kw) -> SDSNNConfig:
    """K = 2 with the authors' schedule as written (clip from epoch 3, prune from 5) and
    their constants."""
    return sd(spines=2, schedule_epochs=None, **{**AUTHORS, **kw})


def test_phase_gating_and_first_pruning():
    net = small_net()
    pruner = Pruner(net, SDSNNMethod(unscaled(conv_rate=25.0, fc_rate=25.0), epochs=20))
    fc = net.blocks[1].synapse.weight
    with torch.no_grad():
        fc[0, 0] = 5.0  # far outside everyone's range
    for e in range(5):
        pruner.end_epoch(e)
        assert all(bool(u.all()) for u in pruner.units), f"a unit died at epoch {e} < 2K+1"
        if e < 3:
            assert float(fc[0, 0].detach()) == 5.0, "clipped before epoch K+1"
        else:
            assert float(fc[0, 0].detach()) <= float(pruner.method.layers[1].r_plus[0, 0]) + 1e-7
    pruner.end_epoch(5)
    # ⌊8·25/100⌋ = 2 channels and ⌊16·25/100⌋ = 4 neurons; the output layer keeps its 10
    assert [int((~u).sum()) for u in pruner.units] == [2, 4, 0]


@pytest.mark.parametrize("protocol", ["fixed", "reference"])
def test_fixed_keeps_one_unit_of_a_layer_whose_rate_passes_100(protocol):
    net = small_net()
    pruner = Pruner(net, SDSNNMethod(unscaled(conv_rate=100.0, fc_rate=100.0, protocol=protocol), epochs=20))
    for e in range(6):
        pruner.end_epoch(e)
    alive = [int(u.sum()) for u in pruner.units]
    assert alive == ([1, 1, 10] if protocol == "fixed" else [0, 0, 10])


def test_ranges_start_at_the_layer_max_and_move_by_the_mean_overshoot():
    net = small_net("16FC-10FC")
    K = 2
    pruner = Pruner(net, SDSNNMethod(unscaled(), epochs=20))
    w = net.blocks[0].synapse.weight
    state = pruner.method.layers[0]
    pruner.end_epoch(0)
    top = float(w.detach().max())
    assert torch.all(state.r_plus == top) and torch.all(state.r_minus == -top)  # Q5: −max, not min
    overshoots = [0.3, 0.5, 0.4]  # the weight reaches its bound K+1 = 3 epochs in a row
    for e, over in enumerate(overshoots, start=1):
        with torch.no_grad():
            w[0, 0] = top + over
        pruner.end_epoch(e)
    # the first hit only arms the counter: r+ grows by the mean of the K counted overshoots
    assert float(state.r_plus[0, 0]) == pytest.approx(top + (0.5 + 0.4) / K, rel=1e-5)
    assert float(state.r_plus[0, 1]) == pytest.approx(top)  # everyone else untouched
    assert int(state.c_plus[0, 0]) == 0  # reset after firing


def test_shrink_multiplies_both_bounds_by_the_factor():
    net = small_net("16FC-10FC")
    pruner = Pruner(net, SDSNNMethod(unscaled(shrink=0.75), epochs=20))
    w = net.blocks[0].synapse.weight
    state = pruner.method.layers[0]
    with torch.no_grad():
        w[0, 0] = 0.08
    pruner.end_epoch(0)
    r = float(state.r_plus[0, 0])
    for e, value in enumerate([0.04, 0.02, 0.01], start=1):  # magnitude falls 3 = K+1 epochs in a row
        with torch.no_grad():
            w[0, 0] = value
        pruner.end_epoch(e)
    assert float(state.r_plus[0, 0]) == pytest.approx(0.75 * r)
    assert float(state.r_minus[0, 0]) == pytest.approx(-0.75 * r)
    assert torch.all(state.r_plus > 0) and torch.all(state.r_minus < 0)


def train_steps(pruner, steps=3):
    net = pruner.net
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.rand(8, 1, 8, 8, generator=g)
        loss = net(x).float().mean() + sum(p.sum() for p in net.parameters()) * 1e-3
        opt.zero_grad()
        loss.backward()
        pruner.mask_gradients()
        opt.step()
        pruner.apply_masks()


@pytest.mark.parametrize("protocol", ["fixed", "reference"])
def test_masks_hold_after_pruning_and_the_reference_trains_shadow_weights(protocol):
    net = small_net()
    pruner = Pruner(net, SDSNNMethod(unscaled(conv_rate=25.0, fc_rate=25.0, protocol=protocol), epochs=20))
    for e in range(6):
        pruner.end_epoch(e)
    for i in range(3):  # after step 4: W ⊙ (1−M) = 0 in every layer
        w = net.blocks[i].synapse.weight
        assert torch.all(w[~pruner.weight_mask(i)] == 0)
    dead = ~pruner.units[1]
    bias = net.blocks[1].synapse.bias
    train_steps(pruner)
    w = net.blocks[1].synapse.weight
    off = ~pruner.weight_mask(1)
    if protocol == "fixed":  # masks enforced at every step, pruned units silent
        assert torch.all(w[off] == 0) and torch.all(bias[dead] == 0)
    else:  # Q3: pruned weights train between epochs; Q4: biases of pruned units live
        assert bool((w[off] != 0).any()) and bool((bias[dead] != 0).any())
        pruner.end_epoch(6)
        assert torch.all(net.blocks[1].synapse.weight[~pruner.weight_mask(1)] == 0)


def test_reference_adapts_only_the_last_prunable_layer():
    for protocol, conv_moves in (("reference", False), ("fixed", True)):
        net = small_net()
        pruner = Pruner(net, SDSNNMethod(unscaled(protocol=protocol), epochs=20))
        w = net.blocks[0].synapse.weight
        pruner.end_epoch(0)
        top = float(pruner.method.layers[0].r_plus[0, 0, 0, 0])
        for e in range(1, 4):
            with torch.no_grad():
                w[0, 0, 0, 0] = top + 1.0
            pruner.end_epoch(e)
        moved = float(pruner.method.layers[0].r_plus[0, 0, 0, 0]) > top
        assert moved == conv_moves, protocol  # Q1


def test_monotone_rates_and_ever_pruned_units_never_pruned_again():
    net = small_net()
    pruner = Pruner(net, SDSNNMethod(unscaled(conv_rate=10.0, fc_rate=10.0, regenerate=False), epochs=40))
    rates, dead, ever = [], [], []
    for e in range(15):
        train_steps(pruner, 1)
        pruner.end_epoch(e)
        rates.append([l.rate for l in pruner.method.layers])
        dead.append(sum(int((~u).sum()) for u in pruner.units))
        ever.append(pruner.method.layers[1].ever_pruned.clone())
        if e >= 5:
            assert pruner.method.layers[1].pruned_now == int((ever[-1] & ~ever[-2]).sum())
    assert all(a <= b for r0, r1 in zip(rates, rates[1:]) for a, b in zip(r0, r1))
    assert dead == sorted(dead) and dead[-1] > 0  # no regeneration: pruning only grows
    assert all(bool((a <= b).all()) for a, b in zip(ever, ever[1:]))


def regrowth_setup(protocol: str):
    """An FC net whose hidden neuron 0 is pruned at epoch 5 (its ranges made the
    narrowest), and one of its synapses given the largest magnitude in the layer."""
    net = small_net("16FC-10FC")
    pruner = Pruner(net, SDSNNMethod(unscaled(fc_rate=10.0, protocol=protocol), epochs=40))  # ⌊16·0.1⌋ = 1 neuron
    state = pruner.method.layers[0]
    w = net.blocks[0].synapse.weight
    pruner.end_epoch(0)
    with torch.no_grad():  # neuron 0: small weights in narrow ranges (0.05 of the others')
        w[0] *= 0.05
        state.r_plus[0] *= 0.1
        state.r_minus[0] *= 0.1
        state.r_plus[0, 3], state.r_minus[0, 3] = 10.0, -0.0001  # wide enough to keep a large weight
    return net, pruner, state, w


@pytest.mark.parametrize("protocol", ["fixed", "reference"])
def test_regeneration_restores_only_pruned_sites_never_before_k_plus_2_epochs(protocol):
    net, pruner, state, w = regrowth_setup(protocol)
    K = 2
    for e in range(1, 6):
        with torch.no_grad():
            w[0, 3] = 5.0  # the largest weight of the layer, with a range that keeps it
        pruner.end_epoch(e)
    assert not bool(pruner.units[0][0]), "neuron 0 should have been pruned at epoch 5"
    assert float(w[0, 3].detach()) == 0.0
    shadow = float(state.shadow[0, 3])
    pruned_at, grown_at = 5, None
    for e in range(6, 14):
        if protocol == "reference":  # its shadow weight trains back up during the epoch
            with torch.no_grad():
                w[0, 3] = 5.0
        alive_before = pruner.weight_mask(0).clone()
        pruner.end_epoch(e)
        grown = pruner.weight_mask(0) & ~alive_before
        if bool(grown.any()):
            grown_at = e
            assert grown.sum() == 1 and bool(grown[0, 3]), "only the pruned site above the percentile grows"
            value = float(w[0, 3].detach())
            break
    assert grown_at is not None, "nothing regrew"
    assert grown_at - pruned_at >= K + 2  # in the candidate set K+2 epochs in a row
    assert bool(pruner.units[0][0])  # the neuron lives again, with one synapse
    assert int(pruner.weight_mask(0)[0].sum()) == 1
    if protocol == "fixed":
        # the value it had when pruned, × shrink (0.75) every K+1 epochs it stayed pruned
        assert shadow == pytest.approx(5.0)
        assert value == pytest.approx(5.0 * 0.75 ** ((grown_at - pruned_at) / (K + 1)), rel=1e-5)
    else:
        assert value == pytest.approx(5.0)  # its current shadow weight
    for e in range(grown_at + 1, grown_at + 6):  # a restored site is never masked again
        pruner.end_epoch(e)
        assert bool(pruner.weight_mask(0)[0, 3])


def test_reference_regrowth_is_signed_fixed_by_magnitude():
    for protocol, expect in (("reference", False), ("fixed", True)):
        net, pruner, state, w = regrowth_setup(protocol)
        with torch.no_grad():
            state.r_minus[0, 3], state.r_plus[0, 3] = -10.0, 0.0001
        for e in range(1, 14):
            if e < 6 or protocol == "reference":
                with torch.no_grad():
                    w[0, 3] = -5.0  # strongly negative (Q6)
            pruner.end_epoch(e)
        assert bool(pruner.weight_mask(0)[0, 3]) == expect, protocol


def test_conv_regeneration_restores_a_whole_kernel():
    net = small_net("2C3-4C3-AP2-10FC")
    pruner = Pruner(net, SDSNNMethod(unscaled(conv_rate=25.0), epochs=40))  # layer 1: one channel of 4
    state = pruner.method.layers[1]
    w = net.blocks[1].synapse.weight
    pruner.end_epoch(0)
    with torch.no_grad():  # every range wide but channel 0's: kernel (0, 0) medium, (0, 1) tiny
        state.r_plus.fill_(10.0)
        state.r_minus.fill_(-10.0)
        state.r_plus[0, 0], state.r_minus[0, 0] = 4.0, -0.0001
        state.r_plus[0, 1], state.r_minus[0, 1] = 0.0001, -0.0001
        w[0, 1] = 0.0  # inside its range: nothing presses against it
    for e in range(1, 14):
        if e < 6:
            with torch.no_grad():
                w[0, 0] = 3.0
        pruner.end_epoch(e)
        if e == 5:
            assert not bool(pruner.units[1][0]) and torch.all(w[0] == 0)
    assert bool(pruner.units[1][0])
    assert bool(pruner.synapses[1][0, 0]) and int(pruner.synapses[1][0].sum()) == 1
    # all 9 entries back, at their values when pruned × 0.75 per K+1 = 3 epochs pruned (4 here)
    assert torch.allclose(w[0, 0], torch.full((3, 3), 3.0 * 0.75 ** (4 / 3)))
    assert torch.all(w[0, 1] == 0.0)


def test_resume_through_a_regeneration_event_is_exact(tmp_path, digits):
    from dpap.training.loop import TrainingRun

    train, test = digits
    cfg = Config()
    cfg.pruning.method = "sdsnn"
    cfg.pruning.sdsnn.min_spines = 2  # K' = 2: pruning from epoch 5, earliest regrowth at epoch 9
    cfg.pruning.sdsnn.fc_percentile = 60.0  # the authors' offset: many sites regrow
    cfg.train.epochs = 12
    cfg.train.threads = 1
    full = TrainingRun(cfg, train, test, (1, 8, 8), 10, progress=False)
    history = full.run()
    regrown = [sum(l["regenerated"] for l in m.layers) for m in history]
    assert sum(regrown) > 0, regrown
    first_regrowth = next(e for e, r in enumerate(regrown) if r)

    ckpt = tmp_path / "run.pt"

    class Stop(Exception):
        pass

    def stop(run, m):
        if m.epoch == first_regrowth - 1:
            raise Stop

    with pytest.raises(Stop):
        TrainingRun(cfg, train, test, (1, 8, 8), 10, checkpoint=ckpt, progress=False, callbacks=[stop]).run()
    resumed = TrainingRun(cfg, train, test, (1, 8, 8), 10, checkpoint=ckpt, progress=False)
    assert resumed.epoch == first_regrowth - 1  # stopped before its checkpoint: the rerun crosses the regrowth
    again = resumed.run()
    assert [m.test_accuracy for m in again] == [m.test_accuracy for m in history]
    assert [m.compression for m in again] == [m.compression for m in history]
    for a, b in zip(full.pruner.masks().values(), resumed.pruner.masks().values()):
        assert torch.equal(a, b)
    for a, b in zip(full.net.state_dict().values(), resumed.net.state_dict().values()):
        assert torch.equal(a, b)


# ------------------------------------------------------------------ config


def test_params_choose_the_method_and_check_its_knobs():
    cfg = config_from_dict({"pruning": {"method": "sdsnn", "sdsnn": {"protocol": "reference", "spines": 5}}})
    net = small_net()
    pruner = make_run_pruner(net, cfg)
    assert isinstance(pruner.method, SDSNNMethod) and pruner.method.reference
    with pytest.raises(ConfigError, match="pruning.sdsnn.growth_base"):
        config_from_dict({"pruning": {"sdsnn": {"growth_base": 1.0}}})
    with pytest.raises(ConfigError, match="pruning.sdsnn.spine"):
        config_from_dict({"pruning": {"sdsnn": {"spine": 3}}})
    with pytest.raises(ConfigError, match="pruning.method"):
        config_from_dict({"pruning": {"method": "rigl"}})
    with pytest.raises(ConfigError, match="search.ranges.pruning.sdsnn.nope"):
        config_from_dict({"search": {"ranges": {"pruning.sdsnn.nope": {"low": 0.1, "high": 1.0}}, "control": None}})
    ok = config_from_dict({"search": {"ranges": {"pruning.sdsnn.fc_rate_gain": {"low": 0.1, "high": 1.0}}, "control": "pruning.sdsnn.fc_rate_gain"}})
    assert "pruning.sdsnn.fc_rate_gain" in ok.search.ranges


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("protocol", ["fixed", "reference"])
def test_sdsnn_trains_prunes_and_regrows_on_cuda(digits, protocol):
    from dpap.training.loop import TrainingRun

    train, test = digits
    cfg = Config()
    cfg.pruning.method = "sdsnn"
    cfg.pruning.sdsnn.protocol = protocol
    cfg.train.epochs = 12
    cfg.train.device = "cuda"
    run = TrainingRun(cfg, train, test, (1, 8, 8), 10, progress=False)
    history = run.run()
    assert run.pruner.method.layers[0].r_plus.device.type == "cuda"
    assert history[-1].compression > 0 and history[-1].test_accuracy > 0.5
    for i in range(len(run.net.blocks)):
        w = run.net.blocks[i].synapse.weight
        assert torch.all(w[~run.pruner.weight_mask(i)] == 0)
