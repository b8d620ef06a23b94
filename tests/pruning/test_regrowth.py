"""Regrowth after DPAP's decisions (``pruning.dpap.regrow_share``, RigL's swap once an epoch):
hand numbers on a toy layer, the count kept, when it swaps, the config rule."""

import pytest
import torch

from dpap.config import Config, DPAPConfig
from dpap.config.params import config_from_dict
from dpap.errors import ConfigError
from dpap.schema import validate
from dpap.pruning import Pruner, make_pruner
from dpap.pruning.compression import compression_of
from dpap.pruning.method import PruningMethod
from dpap.pruning.regrowth import GradientRegrowth, swap_share
from dpap.snn.networks import build_network
from dpap.training.setup import fingerprint


def test_swap_share_is_rigls_cosine_by_hand():
    # α/2·(1 + cos(π q / Q)), α 0.3, Q 3: 0.3, 0.15·1.5, 0.15·0.5
    assert [round(swap_share(0.3, q, 3), 12) for q in range(3)] == [0.3, 0.225, 0.075]
    assert swap_share(0.4, 2, 4) == pytest.approx(0.2)


def _toy():
    """A 4-4 hidden FC layer (16 synapses) with known weights, 6 of its synapses dead."""
    net = build_network("4FC-2FC", (4,), 2, time_steps=2)
    pruner = Pruner(net, PruningMethod())
    w = torch.arange(1.0, 17.0).view(4, 4) / 10  # |w| grows along the rows: 0.1 ... 1.6
    dead = torch.zeros(4, 4, dtype=torch.bool)
    dead[0, 0] = dead[0, 1] = dead[1, 2] = dead[2, 3] = dead[3, 0] = dead[3, 3] = True
    with torch.no_grad():
        net.blocks[0].synapse.weight.copy_(w.masked_fill(dead, 0.0))
    pruner.kill_synapses(0, dead)
    pruner.refresh_masks()
    return net, pruner, dead


def test_swap_grows_the_largest_gradients_and_drops_the_smallest_weights_by_hand():
    net, pruner, dead = _toy()
    regrowth = GradientRegrowth([0])
    w = net.blocks[0].synapse.weight
    # two steps whose gradients sum, per synapse, to g1 + g2; a dead synapse's pull is |g1 + g2|
    g1 = torch.zeros(4, 4)
    g2 = torch.zeros(4, 4)
    g1[0, 0], g2[0, 0] = 0.5, -0.5  # pulls both ways: |Σ| = 0, although Σ|g| = 1
    g1[1, 2], g2[1, 2] = 0.2, 0.3   # |Σ| = 0.5
    g1[3, 3], g2[3, 3] = -0.4, 0.0  # |Σ| = 0.4
    g1[2, 3] = 0.1                  # |Σ| = 0.1
    g1[1, 1] = 9.0                  # a living synapse: never a growth candidate
    for g in (g1, g2):
        w.grad = g.clone()
        regrowth.accumulate(pruner)
    # 10 living synapses, share 0.2: k = 2. Grow (1,2) and (3,3); drop the two smallest
    # living weights: (0,2) = 0.3 and (0,3) = 0.4 (0.1 and 0.2 are already dead)
    regrowth.swap(pruner, 0.2)
    pruner.refresh_masks()
    expected = ~dead
    expected[1, 2] = expected[3, 3] = True
    expected[0, 2] = expected[0, 3] = False
    assert torch.equal(pruner.synapse_mask(0), expected)
    assert int(pruner.synapse_mask(0).sum()) == 10  # the count is kept
    assert w[1, 2].item() == 0.0 and w[3, 3].item() == 0.0  # grown synapses start from 0
    # the epoch's gradients are forgotten: a second swap without new steps changes nothing
    regrowth.swap(pruner, 0.2)
    assert torch.equal(pruner.synapse_mask(0), expected)


def test_swap_grows_no_synapse_the_loss_does_not_pull():
    net, pruner, dead = _toy()
    regrowth = GradientRegrowth([0])
    g = torch.zeros(4, 4)
    g[1, 2], g[3, 3] = 0.5, -0.4  # 2 of the 6 dead synapses pulled; (0,0), (0,1), (2,3), (3,0) not
    net.blocks[0].synapse.weight.grad = g
    regrowth.accumulate(pruner)
    regrowth.swap(pruner, 0.5)  # 10 living: k = min(5, 2 pulled candidates) = 2
    mask = pruner.synapse_mask(0)
    assert int(mask.sum()) == 10 and bool(mask[1, 2] and mask[3, 3])
    assert not bool(mask[0, 0] or mask[0, 1] or mask[2, 3] or mask[3, 0])
    assert not bool(mask[0, 2] or mask[0, 3])  # the two smallest living weights dropped


def test_swap_grows_only_where_both_units_live_and_never_more_than_the_candidates():
    net, pruner, dead = _toy()
    pruner.kill_units(0, torch.tensor([False, False, False, True]))  # neuron 3 dies: (3,0), (3,3) are no candidates
    pruner.refresh_masks()
    regrowth = GradientRegrowth([0])
    net.blocks[0].synapse.weight.grad = torch.ones(4, 4)
    regrowth.accumulate(pruner)
    alive_before = int(pruner.synapse_mask(0).sum())  # 16 - 6 dead - neuron 3's two living = 8
    assert alive_before == 8
    regrowth.swap(pruner, 0.9)  # k = min(int(0.9·8), 4 candidates) = 4
    mask = pruner.synapse_mask(0)
    assert int(mask.sum()) == 8
    assert not bool(mask[3].any())
    assert bool(mask[0, 0] and mask[0, 1] and mask[1, 2] and mask[2, 3])


def _dead_pull(pruner) -> float:
    """The largest accumulated gradient on a dead synapse of the tracked layers."""
    out = 0.0
    for i, g in pruner.method.regrowth._grad.items():
        dead = ~pruner.synapse_mask(i)
        if bool(dead.any()):
            out = max(out, float(g.abs()[dead].max()))
    return out


def _dpap_run(epochs=11, **cfg):
    torch.manual_seed(0)
    net = build_network("20FC-16FC-4FC", (10,), 4, time_steps=2)
    pruner = make_pruner(net, "dpap", DPAPConfig(prune_units=False, epsilon=2.0, **cfg), epochs=epochs)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    x = torch.rand(64, 10)
    y = torch.randint(0, 4, (64,))
    swapped, pulls = [], []
    for epoch in range(epochs):
        net.train()
        for _ in range(3):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x).sum(0), y).backward()
            pruner.mask_gradients()
            opt.step()
            pruner.apply_masks()
        if pruner.method.regrowth is not None:
            pulls.append(_dead_pull(pruner))
        reports = pruner.end_epoch(epoch)
        swapped.append(sum(r.restored_synapses for r in reports))
        retained = compression_of(net, pruner).retained
        if epoch == pruner.method.last_decision:
            at_last_decision = retained
        if epoch > pruner.method.last_decision:
            assert retained == at_last_decision  # swaps keep the count
    return pruner, swapped, pulls


def test_dpap_swaps_only_in_the_first_half_of_the_epochs_after_the_last_decision():
    # 11 epochs, end_fraction 0.5: epochs 0-5 decide (round(5.5) = 6), 6-10 are quiet, the
    # first 5 // 2 = 2 of them swap
    pruner, swapped, pulls = _dpap_run(end_fraction=0.5, regrow_share=0.5)
    assert pruner.method.last_decision == 5 and pruner.method.swaps == 2
    assert pruner.method.permanent  # no unit comes back and the count stays: compaction and a search's early stop hold
    assert swapped[:6] == [0] * 6 and all(n > 0 for n in swapped[6:8]) and swapped[8:] == [0] * 3
    assert pulls[6] > 0  # the dead synapses' gradients reached the swap
    plain, none, _ = _dpap_run(end_fraction=0.5)
    assert plain.method.permanent and none == [0] * 11


def test_regrowth_through_attach_reads_the_dead_gradients():
    """``dpap.attach``'s gradient hooks zero pruned entries during backward; for regrowth they
    leave the weights' whole, and the optimizer step still sees them masked."""
    snn = pytest.importorskip("snntorch")
    import dpap

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.lif1 = torch.nn.Linear(10, 16), snn.Leaky(beta=0.9)
            self.fc2, self.lif2 = torch.nn.Linear(16, 4), snn.Leaky(beta=0.9)

        def forward(self, x):
            m1, m2, out = self.lif1.init_leaky(), self.lif2.init_leaky(), []
            for _ in range(4):
                s1, m1 = self.lif1(self.fc1(x), m1)
                s2, m2 = self.lif2(self.fc2(s1), m2)
                out.append(s2)
            return torch.stack(out)

    torch.manual_seed(0)
    net = Net()
    x, y = torch.rand(64, 10) * 2, torch.randint(0, 4, (64,))
    pruner = dpap.attach(net, example_input=x, epochs=11, prune_units=False, epsilon=2.0, end_fraction=0.5, regrow_share=0.5)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    grown = 0
    for epoch in range(11):
        for _ in range(3):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x).sum(0), y).backward()
            opt.step()
            dead = ~pruner.pruner.synapse_mask(0)
            assert bool((net.fc1.weight[dead] == 0).all())  # still exactly 0 after the step
        if epoch == 6:
            assert _dead_pull(pruner.pruner) > 0
        pruner.end_epoch()
        grown += sum(r.restored_synapses for r in pruner.pruner.last_reports)
    assert grown > 0


def test_regrow_share_needs_epochs_after_the_decisions():
    with pytest.raises(ConfigError, match=r"^pruning\.dpap\.regrow_share: 0\.3 swaps .* set end_fraction below 1"):
        config_from_dict({"pruning": {"dpap": {"regrow_share": 0.3}}})
    with pytest.raises(ConfigError, match=r"^attach: dpap\.regrow_share: 0\.3 swaps "):
        validate(DPAPConfig, {"regrow_share": 0.3}, prefix="attach: dpap")
    with pytest.raises(ConfigError, match=r"^pruning\.dpap\.regrow_share: got 1\.0, expected a number in \(0, 1\)"):
        config_from_dict({"pruning": {"dpap": {"regrow_share": 1.0, "end_fraction": 0.5}}})
    # 10 epochs, end_fraction 0.95: no epoch after the last decision
    with pytest.raises(ConfigError, match=r"^pruning\.dpap\.regrow_share: end_fraction 0\.95 of 10 epochs leaves 0 epoch\(s\) after"):
        config_from_dict({"train": {"epochs": 10}, "pruning": {"dpap": {"regrow_share": 0.3, "end_fraction": 0.95}}})
    with pytest.raises(ConfigError, match=r"^regrow_share: end_fraction 0\.9 of 10 epochs leaves 1 epoch\(s\)"):
        DPAPConfig(regrow_share=0.3, end_fraction=0.9).regrowth_swaps(10)
    assert DPAPConfig(regrow_share=0.3, end_fraction=0.8).regrowth_swaps(10) == 1  # 2 quiet epochs, the first swaps
    assert DPAPConfig(regrow_share=0.3, end_fraction=0.5).regrow_share == 0.3


def test_regrow_share_enters_the_fingerprint_only_when_set():
    base = fingerprint(Config.model_validate({"pruning": {"dpap": {"end_fraction": 0.5}}}))
    assert fingerprint(Config.model_validate({"pruning": {"dpap": {"end_fraction": 0.5, "regrow_share": None}}})) == base
    assert fingerprint(Config.model_validate({"pruning": {"dpap": {"end_fraction": 0.5, "regrow_share": 0.3}}})) != base
