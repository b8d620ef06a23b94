"""``dpap.attach`` on small models: what it finds, how it observes time steps, how masks
stay exact through an optimizer and a checkpoint, and its one-line errors."""

import io

import pytest
import torch
from torch import nn

import dpap
from adapter_nets import T, ExplicitStateNet, TutorialNet, reset, sew_net, train_digits
from dpap.adapters import AttachError
from dpap.errors import ConfigError
from dpap.pruning.registry import METHODS

snn = pytest.importorskip("snntorch")


def kill(pruner, layer: str, units):
    """Prune ``units`` of ``layer`` by hand, as a method would (the mechanics' kill_units)."""
    i = pruner.layers.index(layer)
    dead = torch.zeros(pruner.pruner.units[i].shape, dtype=torch.bool)
    dead[list(units)] = True
    pruner.pruner.kill_units(i, dead)


def batches(digits, n=4, size=32):
    x, y = digits[0].x, digits[0].y
    return [(x[i * size:(i + 1) * size], y[i * size:(i + 1) * size]) for i in range(n)]


def test_finds_layers_neurons_sources_and_flatten_without_example_input():
    net = TutorialNet(channels=(4, 8))
    pruner = dpap.attach(net)  # torch.fx traces it: the loop over T is unrolled
    blocks = pruner.net.blocks
    assert pruner.layers == ["conv1", "conv2", "fc"]
    assert [b.neuron for b in blocks] == [net.lif1, net.lif2, net.lif3]
    assert [b.source for b in blocks] == [None, 0, 1]
    assert blocks[2].in_spatial == 4 and [b.is_output for b in blocks] == [False, False, True]


def test_each_batch_reaches_the_method_once_as_a_sequence(digits):
    """Single-step snnTorch (the loop inside forward), explicit states (init_hidden=False)
    and a multi-step SpikingJelly net: one observation per block per batch, [T, N, ...]."""
    x = digits[0].x[:16]
    for net, inp, kw in ((TutorialNet(channels=(4, 8)), x, {}),
                         (ExplicitStateNet(), x.flatten(1).unsqueeze(0).repeat(T, 1, 1), {"example_input": x.flatten(1)[None].repeat(T, 1, 1)}),
                         (sew_net(), x, {"example_input": x})):
        pruner = dpap.attach(net, **kw)
        seen = []
        pruner.net.observe(lambda i, block, pre, post: seen.append((i, tuple(pre.shape), tuple(post.shape))))
        net.train()
        for n in (16, 16, 9):  # two batches, then a smaller last one
            net(inp[..., :n, :] if inp.dim() == 3 else inp[:n]).sum().backward()
            reset(net)
        pruner.end_epoch()
        _check_sequences(net, pruner, seen)


def test_single_step_spikingjelly_with_the_time_loop_outside_the_model(digits):
    """SpikingJelly ``step_mode='s'``: the user calls the model once per time step and
    ``reset_net`` after each batch."""
    pytest.importorskip("spikingjelly.activation_based")
    from spikingjelly.activation_based import functional, layer, neuron

    net = nn.Sequential(layer.Conv2d(1, 4, 3, padding=1), neuron.LIFNode(), layer.Flatten(), layer.Linear(256, 10), neuron.LIFNode())
    x = digits[0].x[:16]
    pruner = dpap.attach(net)
    seen = []
    pruner.net.observe(lambda i, block, pre, post: seen.append((i, tuple(pre.shape), tuple(post.shape))))
    for n in (16, 16, 9):
        out = sum(net(x[:n]) for _ in range(T))
        out.sum().backward()
        functional.reset_net(net)
    pruner.end_epoch()
    _check_sequences(net, pruner, seen)


def _check_sequences(net, pruner, seen):
    """Every block, once per batch, its spikes as [T, N, ...] (batches of 16, 16, 9)."""
    per_block = {}
    for i, pre, post in seen:
        per_block.setdefault(i, []).append((pre, post))
    assert sorted(per_block) == list(range(len(pruner.layers)))
    for i, obs in per_block.items():
        assert [post[:2] for _, post in obs] == [(T, 16), (T, 16), (T, 9)], (type(net).__name__, i, obs)
    pruner.detach()


def test_pruned_weights_stay_exactly_zero_through_adam_and_its_moments_rest(digits):
    torch.manual_seed(0)
    net = TutorialNet(channels=(6, 12))
    pruner = dpap.attach(net)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.1)
    for x, y in batches(digits, 2):  # moments build up before pruning
        nn.functional.cross_entropy(net(x).sum(0), y).backward()
        opt.step()
        opt.zero_grad()
    kill(pruner, "conv2", [0, 3, 5])
    kill(pruner, "conv1", [1])
    for x, y in batches(digits, 3):
        nn.functional.cross_entropy(net(x).sum(0), y).backward()
        assert (net.conv2.weight.grad[[0, 3, 5]] == 0).all() and (net.conv2.weight.grad[:, 1] == 0).all()
        opt.step()
        opt.zero_grad()
        assert (net.conv2.weight[[0, 3, 5]] == 0).all() and (net.conv2.bias[[0, 3, 5]] == 0).all()
        assert (net.conv2.weight[:, 1] == 0).all() and (net.fc.weight.view(10, 12, 4)[:, [0, 3, 5]] == 0).all()
        state = opt.state[net.conv2.weight]
        assert (state["exp_avg"][[0, 3, 5]] == 0).all() and (state["exp_avg_sq"][[0, 3, 5]] == 0).all()
    assert 0 < pruner.compression < 1


def test_masks_ride_in_the_state_dict_and_a_checkpoint_restores_them():
    torch.manual_seed(0)
    net = TutorialNet(channels=(6, 12))
    pruner = dpap.attach(net)
    kill(pruner, "conv2", [2, 7])
    net(torch.rand(4, 1, 8, 8))  # masks are applied before any forward
    state = net.state_dict()
    assert "conv2.dpap_units" in state and not bool(state["conv2.dpap_units"][[2, 7]].any())
    buf = io.BytesIO()
    torch.save({"model": state, "pruner": pruner.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=False)

    torch.manual_seed(1)
    fresh = TutorialNet(channels=(6, 12))
    again = dpap.attach(fresh)
    fresh.load_state_dict(saved["model"])
    again.load_state_dict(saved["pruner"])
    assert torch.equal(again.masks()["conv2"]["synapses"], pruner.masks()["conv2"]["synapses"])
    assert again.compression == pytest.approx(pruner.compression) and again.epoch == pruner.epoch
    opt = torch.optim.Adam(fresh.parameters(), lr=0.1)
    fresh(torch.rand(4, 1, 8, 8)).sum().backward()
    opt.step()
    assert (fresh.conv2.weight[[2, 7]] == 0).all() and (fresh.fc.weight.view(10, 12, 4)[:, [2, 7]] == 0).all()

    plain = TutorialNet(channels=(6, 12)).state_dict()  # saved before attach: loads, the masks stay
    fresh.load_state_dict(plain)
    fresh(torch.rand(2, 1, 8, 8))
    assert (fresh.conv2.weight[[2, 7]] == 0).all()


def test_masks_are_a_snapshot_the_pruner_does_not_change_later():
    """``masks()`` taken before an epoch's deaths still shows the units alive afterwards
    (a user diffs two snapshots to see what died), and writing to it prunes nothing."""
    net = TutorialNet(channels=(6, 12))
    pruner = dpap.attach(net)
    before = pruner.masks()
    kill(pruner, "conv2", [2, 7])
    after = pruner.masks()
    assert bool(before["conv2"]["units"].all()) and not bool(after["conv2"]["units"][[2, 7]].any())
    assert (before["conv2"]["units"] & ~after["conv2"]["units"]).nonzero().flatten().tolist() == [2, 7]
    after["conv2"]["units"][:] = False
    after["conv1"]["synapses"][:] = False
    assert int(pruner.masks()["conv2"]["units"].sum()) == 10 and bool(pruner.masks()["conv1"]["synapses"].all())


def test_a_residual_sew_net_compacts_with_consistent_shapes(digits):
    torch.manual_seed(0)
    net = sew_net()
    x = digits[0].x[:8]
    pruner = dpap.attach(net, example_input=x)
    by_name = {b.name: b for b in pruner.net.blocks}
    assert by_name["block.a.0"].source == 0 and by_name["down.main.0.0"].source is None  # after the addition: none
    for name in ("stem.0", "block.b.0"):  # the two sides of the residual addition
        kill(pruner, name, [0, 1, 2])
    kill(pruner, "block.b.0", [5])  # dead on one side only: the channel must stay
    kill(pruner, "block.a.0", [4, 6])
    kill(pruner, "down.main.0.0", [1, 2, 3])
    net.eval()
    small = dpap.compact(net, example_input=x)  # checks the outputs on x itself
    assert small.stem[0].out_channels == small.block.b[0].out_channels == 5  # 8 - {0, 1, 2}; 5 stays
    assert small.block.a[0].out_channels == 6 and small.block.b[0].in_channels == 6
    assert small.down.main[0][0].out_channels == 13 and small.down.main[1][0].in_channels == 13
    assert small.down.short[0].in_channels == small.down.main[0][0].in_channels == 5
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in net.parameters())
    with torch.no_grad():
        reset(net)
        a = net(digits[1].x[:64])
        reset(net)
        b = small(digits[1].x[:64])
        reset(small)
    assert float(((a - b).abs() > 1e-5).float().mean()) <= 1e-3  # (a spike may flip by rounding: adapter_nets.same_outputs)


def test_dpaps_own_network_attaches_and_compacts_with_dpap_compaction(digits):
    from dpap.snn.networks import SpikingNetwork, build_network

    torch.manual_seed(0)
    net = build_network("8C3-AP2-16FC-10FC", (1, 8, 8), 10)
    pruner = dpap.attach(net)
    kill(pruner, "blocks.0.synapse", [1, 2])
    small = dpap.compact(net)
    assert isinstance(small, SpikingNetwork) and small.blocks[0].synapse.out_channels == 6
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(digits[1].x[:32]), small(digits[1].x[:32]))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_registered_method_attaches_and_runs(method, digits):
    torch.manual_seed(0)
    net = TutorialNet(channels=(4, 8))
    pruner = dpap.attach(net, method=method, epochs=2)
    small = (digits[0].__class__(digits[0].x[:192], digits[0].y[:192]), digits[1])
    history, _ = train_digits(net, small, 2, pruner)
    assert pruner.epoch == 2 and 0.0 <= history[-1][1] <= 1.0


# --------------------------------------------------------------------------- errors


class MyLIF(nn.Module):
    def forward(self, x):
        return (x > 0.5).float()


class _Untraceable(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return torch.stack([self.inner(x[t:t + 1]) for t in range(x.shape[0])])


def test_dpap_prunes_kernels_of_conv_heavy_models_and_says_so(digits):
    """conv_mode auto: TutorialNet(16, 64)'s conv layers hold 79 % of its parameters, so
    they lose kernels as synapses; an FC model has no conv layer to speak of."""
    conv = dpap.attach(TutorialNet(channels=(16, 64)), method="dpap", epsilon=2.0, conv={"beta": 0.01}, fc={"beta": 0.01})
    assert "conv_mode=kernels" in repr(conv)
    x = digits[0].x[:32]
    conv.model(x)
    conv.end_epoch()
    masks = conv.masks()
    both_alive = masks["conv2"]["units"][:, None] & masks["conv1"]["units"][None, :]
    assert bool((both_alive & ~masks["conv2"]["synapses"]).any())  # kernels died between living channels
    assert "conv_mode" not in repr(dpap.attach(nn.Sequential(nn.Flatten(), nn.Linear(64, 32), snn.Leaky(beta=0.9, init_hidden=True),
                                                             nn.Linear(32, 10), snn.Leaky(beta=0.9, init_hidden=True, output=True)), method="dpap"))
    assert "conv_mode=channels" in repr(dpap.attach(TutorialNet(channels=(16, 64)), method="dpap", conv_mode="channels"))


def test_conv_channels_take_the_epsilon_of_their_mode():
    """Channels that are a network's only conv pruning decay with ε 0.9; where kernels are
    pruned too, with 1.1 (the gradual protocol's conv_kernels)."""
    def conv_epsilons(pruner):
        return [(s.knobs.epsilon, s.synapse_knobs.epsilon) for s in pruner._method.layers if s.layer_type == "conv"]

    assert conv_epsilons(dpap.attach(TutorialNet(channels=(16, 64)), method="dpap")) == [(1.1, 1.1)] * 2
    assert conv_epsilons(dpap.attach(TutorialNet(channels=(16, 64)), method="dpap", conv_mode="channels")) == [(0.9, 0.9)] * 2
    assert conv_epsilons(dpap.attach(TutorialNet(channels=(16, 64)), method="dpap", conv_mode="channels", epsilon=1.2)) == [(1.2, 1.2)] * 2


def test_a_setting_that_needs_the_runs_length_without_it_is_one_line():
    """end_fraction < 1 (DPAP) or end_epoch null (GMP) cannot be applied to a run of unknown
    length: an error naming the setting and epochs=, not a setting silently ignored."""
    with pytest.raises(AttachError, match=r"^attach: dpap\.end_fraction: 0\.8 .*epochs=<the run's length>") as e:
        dpap.attach(TutorialNet(channels=(16, 64)), method="dpap", end_fraction=0.8)
    assert "\n" not in str(e.value)
    with pytest.raises(AttachError, match=r"^attach: gmp\.end_epoch: null needs the run's number of epochs.*epochs=<the run's length>"):
        dpap.attach(TutorialNet(channels=(16, 64)), method="gmp")
    pruner = dpap.attach(TutorialNet(channels=(16, 64)), method="dpap", end_fraction=0.8, epochs=30)
    assert pruner._method.last_decision == 23  # round(0.8 * 30) - 1: the ends of epochs 0-23 decide


def test_an_unknown_neuron_after_a_layer_is_one_line_naming_it_and_the_fix():
    net = nn.Sequential(nn.Linear(64, 20), MyLIF(), nn.Linear(20, 10), snn.Leaky(beta=0.5, init_hidden=True))
    with pytest.raises(AttachError, match=r"layer '0' feeds '1' \(MyLIF\).*neurons=\(MyLIF,\).*ignore=\['0'\]") as e:
        dpap.attach(net)
    assert "\n" not in str(e.value)
    pruner = dpap.attach(net, neurons=(MyLIF,))  # told it is a neuron: both layers prune
    assert pruner.layers == ["0", "2"]


def test_a_weight_shared_by_two_layers_is_an_error():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(16, 16), nn.Linear(16, 16)
            self.b.weight = self.a.weight
            self.l1, self.l2 = snn.Leaky(beta=0.5, init_hidden=True), snn.Leaky(beta=0.5, init_hidden=True)

        def forward(self, x):
            return self.l2(self.b(self.l1(self.a(x))))

    with pytest.raises(AttachError, match="'a' and 'b' share one weight"):
        dpap.attach(Shared())

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(16, 16)
            self.l1, self.l2 = snn.Leaky(beta=0.5, init_hidden=True), snn.Leaky(beta=0.5, init_hidden=True)

        def forward(self, x):
            return self.l2(self.a(self.l1(self.a(x))))

    with pytest.raises(AttachError, match="layer 'a' is used at more than one place"):
        dpap.attach(Twice())


def test_no_prunable_layer_and_an_untraceable_forward_are_errors():
    with pytest.raises(AttachError, match="has no prunable layer"):
        dpap.attach(nn.Sequential(nn.Flatten(), snn.Leaky(beta=0.5, init_hidden=True)))
    lazy = ExplicitStateNet()  # loops over x.shape[0]: fx cannot trace it, its first call shows the layers
    pruner = dpap.attach(lazy)
    assert not pruner.ready and pruner.compression == 0.0
    with pytest.raises(AttachError, match="has not run yet.*example_input="):
        pruner.report()
    lazy(torch.rand(T, 4, 64))
    assert pruner.ready and pruner.layers == ["fc1", "fc2"]
    odd = nn.Sequential(nn.Flatten(0, 1), nn.Linear(64, 8), MyLIF())  # found wrong at the first call: the error comes from it
    late = dpap.attach(_Untraceable(odd))
    with pytest.raises(AttachError, match=r"\(MyLIF\)"):
        late.model(torch.rand(T, 4, 64))
    with pytest.raises(ConfigError, match="epsilonn: unknown key"):
        dpap.attach(TutorialNet(), epsilonn=1.0)
    net = TutorialNet()
    keep = dpap.attach(net)
    with pytest.raises(AttachError, match="already attached"):
        dpap.attach(net)
    keep.detach()
    assert "conv1.dpap_units" not in net.state_dict()


def test_attach_names_its_own_arguments_and_takes_settings_as_a_dict():
    with pytest.raises(AttachError, match=r"^attach: method: got 'DPAP', expected one of 'dpap', "):
        dpap.attach(TutorialNet(), method="DPAP")
    with pytest.raises(AttachError, match="takes a DPAPConfig or a dict of its fields"):
        dpap.attach(TutorialNet(), settings=[("epsilon", 1.2)])
    as_dict = dpap.attach(TutorialNet(), settings={"epsilon": 1.2, "conv": {"beta": 3.0}}, epochs=10, end_fraction=0.5)
    cfg = as_dict.pruner.method.cfg
    assert (cfg.epsilon, cfg.conv.beta, cfg.end_fraction) == (1.2, 3.0, 0.5)
    with pytest.raises(ConfigError, match="epsilonn: unknown key"):
        dpap.attach(TutorialNet(), settings={"epsilonn": 1.0})
    for settings in ({"conv": {"beta": 3.0}}, dpap.DPAPConfig(conv={"beta": 3.0})):  # keywords merge into nested fields
        merged = dpap.attach(TutorialNet(), settings=settings, conv={"epsilon": 1.0}).pruner.method.cfg
        assert (merged.conv.beta, merged.conv.epsilon) == (3.0, 1.0)


def test_end_epoch_takes_the_epoch_as_a_check():
    net = TutorialNet(channels=(4, 8))
    pruner = dpap.attach(net)
    net(torch.rand(4, 1, 8, 8))
    pruner.end_epoch(0)
    pruner.end_epoch()
    with pytest.raises(AttachError, match=r"end_epoch\(1\), but this pruner has ended 2 epochs"):
        pruner.end_epoch(1)
    assert pruner.epoch == 2


def test_only_a_layer_that_reads_the_models_input_takes_the_fc_input_epsilon():
    """The first FC layer of an FC network reads the input (ε 0.9 under ``gradual``); with
    that layer left dense (``ignore``), the next one reads its spikes and keeps the FC ε."""
    def net():
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), snn.Leaky(beta=0.9, init_hidden=True),
                             nn.Linear(32, 16), snn.Leaky(beta=0.9, init_hidden=True),
                             nn.Linear(16, 10), snn.Leaky(beta=0.9, init_hidden=True, output=True))

    def epsilons(pruner):
        return {name: (block.reads_input, layer.knobs.epsilon)
                for name, block, layer in zip(pruner.layers, pruner.net.blocks, pruner.pruner.method.layers)}

    assert epsilons(dpap.attach(net())) == {"1": (True, 0.9), "3": (False, 1.1), "5": (False, 1.1)}
    skipped = dpap.attach(net(), ignore=["1"])
    assert epsilons(skipped) == {"3": (False, 1.1), "5": (False, 1.1)}
    explicit = dpap.attach(ExplicitStateNet(), example_input=torch.rand(T, 4, 64))  # the time loop in forward
    assert [b.reads_input for b in explicit.net.blocks] == [True, False]
    conv = dpap.attach(TutorialNet(channels=(4, 8)))
    assert [b.reads_input for b in conv.net.blocks] == [True, False, False]
    method = conv.pruner.method  # a conv layer reading the input: the channels' ε, not fc_input's
    assert method.layers[0].knobs.epsilon == method.cfg.resolved("conv", method.conv_mode).epsilon == 1.1
