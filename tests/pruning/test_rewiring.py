"""Grad R and Deep R (dpap/pruning/{gradr,deepr}): their per-step rewiring, by hand, on a
toy FC layer. Gradients are set by hand and the training loop's step is run as
:class:`~dpap.training.loop.TrainingRun` runs it: ``mask_gradients``, the optimizer's
step, ``apply_masks``; plain SGD so each step is −lr·gradient."""

import math

import pytest
import torch

from dpap.pruning import Pruner, make_pruner
from dpap.pruning.deepr import DeepRConfig
from dpap.pruning.gradr import GradRConfig
from dpap.pruning.method import PruningMethod
from dpap.snn.networks import build_network


def toy(weights, out=2):
    net = build_network(f"{len(weights)}FC-{out}FC", (len(weights[0]),), out, time_steps=2)
    with torch.no_grad():
        net.blocks[0].synapse.weight.copy_(torch.tensor(weights))
    return net


def step(pruner, opt, grad):
    """One training step with ``grad`` as layer 0's weight gradient (0 elsewhere)."""
    net = pruner.net
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    net.blocks[0].synapse.weight.grad = torch.tensor(grad, dtype=torch.float32)
    pruner.mask_gradients()
    opt.step()
    pruner.apply_masks()


# ------------------------------------------------------------------------ Grad R


def test_gradr_prunes_when_theta_falls_below_zero_and_regrows_by_its_gradient():
    """w = s·ReLU(θ), θ trained on s·∂L/∂w even while off (SGD, lr 0.1, no prior).

    w[0,0] = 0.3 (s = +1, θ = 0.3): gradient +5 → θ = 0.3 − 0.5 = −0.2: off, w = 0;
    gradient −1 → θ = −0.1: still off; gradient −2 → θ = 0.1: on again, w = 0.1.
    w[0,1] = −0.2 (s = −1, θ = 0.2): gradient −5 pushes w up → θ = 0.2 − 0.5 = −0.3: off."""
    net = toy([[0.3, -0.2], [0.5, 0.5]])
    pruner = make_pruner(net, "gradr", GradRConfig(alpha=0.0))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    w = net.blocks[0].synapse.weight
    theta = lambda: pruner.method.layers[0]["theta"]  # noqa: E731

    step(pruner, opt, [[5.0, -5.0], [0.0, 0.0]])
    assert theta()[0].tolist() == pytest.approx([-0.2, -0.3])
    assert w[0].tolist() == [0.0, 0.0]  # both off: exactly 0 in the network
    reports = pruner.end_epoch(0)
    assert pruner.synapse_mask(0)[0].tolist() == [False, False] and reports[0].died_synapses == 2

    step(pruner, opt, [[-1.0, 0.0], [0.0, 0.0]])  # the gradient reaches the off synapse's θ
    assert theta()[0, 0].item() == pytest.approx(-0.1) and w[0, 0].item() == 0.0
    step(pruner, opt, [[-2.0, 0.0], [0.0, 0.0]])
    assert theta()[0, 0].item() == pytest.approx(0.1) and w[0, 0].item() == pytest.approx(0.1)  # back, with its sign
    assert w[0, 1].item() == 0.0 and theta()[0, 1].item() == pytest.approx(-0.3)  # no gradient: stays off
    reports = pruner.end_epoch(1)
    assert pruner.synapse_mask(0)[0].tolist() == [True, False] and reports[0].restored_synapses == 1
    assert w[1].tolist() == pytest.approx([0.5, 0.5])  # untouched by a zero gradient


def test_gradr_gradient_of_an_off_synapse_is_taken_at_zero_and_kept():
    """The gradient of an off synapse is what the loss says at w = 0; the pruner does not
    zero it (Grad R's rewiring needs it), unlike a method that masks every step."""
    net = toy([[0.3, 0.2]], out=1)
    pruner = make_pruner(net, "gradr", GradRConfig(alpha=0.0))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    step(pruner, opt, [[5.0, 0.0]])  # θ[0,0] = −0.2: off
    w = net.blocks[0].synapse.weight
    w.grad = torch.tensor([[-3.0, 0.0]])
    pruner.mask_gradients()
    assert w.grad.tolist() == [[-3.0, 0.0]]
    assert w[0, 0].item() == pytest.approx(-0.2)  # s·θ, in the weight for the optimizer's step


def test_gradr_prior_prunes_more_with_alpha_than_without():
    """No gradient at all, 3 steps: α = 0 changes nothing; α = 10 with η = 0.01 pulls every
    θ toward μ = ln(2·(1 − 0.95))/10 = −0.230 by 0.1 a step: θ 0.25 → −0.05 (off), θ 0.5 →
    0.2 (on), and an off θ = −0.5 (below μ) is pushed up: −0.2."""
    results = {}
    for alpha in (0.0, 10.0):
        net = toy([[0.25, 0.5], [-0.25, 0.9]])
        pruner = make_pruner(net, "gradr", GradRConfig(alpha=alpha, lr=0.01))
        assert pruner.method.mu == pytest.approx(math.log(0.1) / alpha if alpha else 0.0)
        pruner.method.layers[0]["theta"][1, 1] = -0.5  # an off synapse far below μ
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        for _ in range(3):
            step(pruner, opt, [[0.0, 0.0], [0.0, 0.0]])
        pruner.end_epoch(0)
        results[alpha] = (int((~pruner.synapse_mask(0)).sum()), pruner.method.layers[0]["theta"].clone())
    assert results[0.0][0] == 1  # the hand-set off synapse only
    assert results[10.0][0] == 3
    assert torch.allclose(results[10.0][1], torch.tensor([[-0.05, 0.2], [-0.05, -0.2]]), atol=1e-6)
    assert torch.allclose(results[0.0][1], torch.tensor([[0.25, 0.5], [0.25, -0.5]]))


def test_gradr_conv_kernel_is_pruned_when_all_its_weights_are_off():
    net = build_network("2C3-2FC", (1, 4, 4), 2, time_steps=2)
    with torch.no_grad():
        net.blocks[0].synapse.weight.fill_(0.1)
    pruner = make_pruner(net, "gradr", GradRConfig(alpha=0.0))
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    g = torch.zeros(2, 1, 3, 3)
    g[0] = 1.0  # every weight of kernel 0 off
    g[1, 0, 0, 0] = 1.0  # one weight of kernel 1 off
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    net.blocks[0].synapse.weight.grad = g
    pruner.mask_gradients()
    opt.step()
    pruner.apply_masks()
    pruner.end_epoch(0)
    assert pruner.synapse_mask(0)[:, 0].tolist() == [False, True]
    assert int((net.blocks[0].synapse.weight == 0).sum()) == 10


def test_gradr_state_round_trips():
    net = toy([[0.3, -0.2], [0.5, 0.5]])
    pruner = make_pruner(net, "gradr", GradRConfig())
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    step(pruner, opt, [[5.0, 0.0], [0.0, 0.0]])
    again = make_pruner(toy([[0.3, -0.2], [0.5, 0.5]]), "gradr", GradRConfig())
    again.load_state_dict(pruner.state_dict())
    assert torch.equal(again.method.layers[0]["theta"], pruner.method.layers[0]["theta"])
    assert again.method.layers[1] == {}  # the output layer is not rewired


# ------------------------------------------------------------------------ Deep R


def test_deepr_keeps_the_number_of_active_connections_fixed():
    """density 0.25 of 8×8 = 64 weights: 16 active from the start. A gradient that drives
    5 active connections below 0 makes them dormant and activates 5 dormant ones (θ = 0):
    16 active after every step, and the pruner's synapses agree at the epoch's end."""
    torch.manual_seed(0)
    net = build_network("8FC-2FC", (8,), 2, time_steps=2)
    pruner = make_pruner(net, "deepr", DeepRConfig(density=0.25, l1=0.0))
    method = pruner.method
    w = net.blocks[0].synapse.weight
    assert method.active_counts() == [16, -1]
    assert int((w != 0).sum()) == 16 and int(pruner.synapse_mask(0).sum()) == 16
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    for k in range(4):
        active = method.layers[0]["active"].clone()
        sign = method.layers[0]["sign"]
        grad = torch.zeros(8, 8)
        victims = torch.nonzero(active.reshape(-1)).squeeze(1)[:5]
        grad.view(-1)[victims] = 10.0 * sign.reshape(-1)[victims]  # θ − 10 < 0
        grad[~active] = 7.0  # a dormant connection's gradient is zeroed: it does not learn
        step(pruner, opt, grad.tolist())
        now = method.layers[0]["active"]
        assert int(now.sum()) == 16
        assert int((active & ~now).sum()) <= 5 and method.rewired[0] == 5 * (k + 1)
        new = now & ~active
        assert torch.equal(w[new], torch.zeros(int(new.sum())))  # activated with θ = 0
        assert torch.equal(w[~now], torch.zeros(int((~now).sum())))
    reports = pruner.end_epoch(0)
    assert reports[0].synapses_alive == 16 and reports[1].synapses_alive == 16  # output layer dense (2×8)
    assert pruner.method.layer_stats(pruner) == {0: {"rewired": 20}}


def test_deepr_dormant_gradients_are_zeroed_and_the_l1_pull_is_decoupled():
    """l1 = 10, η = 0.01: an active θ loses 0.1 a step besides its gradient step."""
    torch.manual_seed(0)
    net = build_network("4FC-2FC", (4,), 2, time_steps=2)
    pruner = make_pruner(net, "deepr", DeepRConfig(density=0.5, l1=10.0, lr=0.01))
    layer = pruner.method.layers[0]
    w = net.blocks[0].synapse.weight
    with torch.no_grad():
        w.copy_(layer["sign"] * 0.35 * layer["active"])
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    grad = torch.ones(4, 4)
    w.grad = grad.clone()
    pruner.mask_gradients()
    assert torch.equal(w.grad, layer["active"].float())
    step(pruner, opt, torch.zeros(4, 4).tolist())
    assert torch.allclose((layer["sign"] * w)[layer["active"]], torch.full((8,), 0.25))


def test_deepr_state_round_trips_with_its_generator():
    torch.manual_seed(0)
    net = build_network("8FC-2FC", (8,), 2, time_steps=2)
    pruner = make_pruner(net, "deepr", DeepRConfig(density=0.25, temperature=0.01))
    state = pruner.state_dict()
    again = make_pruner(build_network("8FC-2FC", (8,), 2, time_steps=2), "deepr", DeepRConfig(density=0.25, temperature=0.01))
    again.net.load_state_dict(net.state_dict())
    again.load_state_dict(state)
    for p in (pruner, again):
        step(p, torch.optim.SGD(p.net.parameters(), lr=0.1), torch.ones(8, 8).tolist())
    assert torch.equal(again.method.layers[0]["active"], pruner.method.layers[0]["active"])
    assert torch.equal(again.net.blocks[0].synapse.weight, net.blocks[0].synapse.weight)


# --------------------------------------------------------------------- the hooks


def test_a_method_without_step_hooks_changes_nothing():
    """The base hooks do nothing: a method that masks every step sees the same weights and
    gradients as before the hooks existed."""
    class Counting(PruningMethod):
        calls = 0

        def after_backward(self, pruner):
            Counting.calls += 1

        def after_step(self, pruner):
            Counting.calls += 10

    net = toy([[0.3, -0.2], [0.5, 0.5]])
    pruner = Pruner(net, Counting())
    step(pruner, torch.optim.SGD(net.parameters(), lr=0.1), [[1.0, 1.0], [1.0, 1.0]])
    assert Counting.calls == 11
    plain = Pruner(toy([[0.3, -0.2], [0.5, 0.5]]), PruningMethod())
    step(plain, torch.optim.SGD(plain.net.parameters(), lr=0.1), [[1.0, 1.0], [1.0, 1.0]])
    assert torch.allclose(plain.net.blocks[0].synapse.weight, torch.tensor([[0.2, -0.3], [0.4, 0.4]]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("method", ["gradr", "deepr", "gmp", "random"])
def test_each_baseline_follows_the_network_to_the_gpu(method):
    """Built on the CPU, the network moved to the GPU: masks, θ and active sets follow it,
    the step hooks and the epoch's decision run there (Deep R's count stays fixed)."""
    from dpap.pruning.registry import METHODS

    torch.manual_seed(0)
    net = build_network("8FC-2FC", (8,), 2, time_steps=2)
    settings = METHODS[method].config(**({"density": 0.25} if method == "deepr" else {"target": 0.5, "end_epoch": 0} if method in ("gmp", "random") else {}))
    pruner = make_pruner(net, method, settings, epochs=2)
    net.to("cuda")
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        out = net(torch.rand(4, 8, generator=g).cuda())
        loss = out.float().pow(2).mean() - out.float().mean()
        opt.zero_grad()
        loss.backward()
        pruner.mask_gradients()
        opt.step()
        pruner.apply_masks()
    pruner.end_epoch(0)
    assert pruner.synapse_mask(0).device.type == "cuda"
    w = net.blocks[0].synapse.weight
    if method == "deepr":
        assert pruner.method.active_counts()[0] == 16 and int((w != 0).sum()) <= 16
    elif method == "gradr":
        assert pruner.method.layers[0]["theta"].device.type == "cuda"
        assert torch.equal(w == 0, pruner.method.layers[0]["theta"] <= 0)
    else:
        assert int(pruner.synapse_mask(0).sum()) == 32
