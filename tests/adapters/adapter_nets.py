"""Models written the way snnTorch's and SpikingJelly's users write them, and a plain
training loop on digits: what ``dpap.attach`` must handle without knowing them."""

from __future__ import annotations

import time

import pytest

import torch
from torch import nn

snn = pytest.importorskip("snntorch")
from snntorch import surrogate, utils  # noqa: E402

T = 6


class TutorialNet(nn.Module):
    """snnTorch's tutorial CNN: Conv-MaxPool-Leaky twice, Linear-Leaky; ``init_hidden=True``,
    the time loop inside ``forward``, output spikes ``[T, N, 10]``."""

    def __init__(self, channels=(16, 32), beta=0.5):
        super().__init__()
        grad = surrogate.atan()
        self.conv1 = nn.Conv2d(1, channels[0], 3, padding=1)
        self.pool1 = nn.MaxPool2d(2)
        self.lif1 = snn.Leaky(beta=beta, spike_grad=grad, init_hidden=True)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 3, padding=1)
        self.pool2 = nn.MaxPool2d(2)
        self.lif2 = snn.Leaky(beta=beta, spike_grad=grad, init_hidden=True)
        self.fc = nn.Linear(channels[1] * 2 * 2, 10)
        self.lif3 = snn.Leaky(beta=beta, spike_grad=grad, init_hidden=True)

    def forward(self, x):
        utils.reset(self)
        out = []
        for _ in range(T):
            h = self.lif1(self.pool1(self.conv1(x)))
            h = self.lif2(self.pool2(self.conv2(h)))
            out.append(self.lif3(self.fc(h.flatten(1))))
        return torch.stack(out)


class ExplicitStateNet(nn.Module):
    """snnTorch with ``init_hidden=False``: states passed by hand, ``init_leaky()`` at the
    start, time steps counted from the input ``[T, N, 64]`` (fx cannot trace this)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 40)
        self.lif1 = snn.Leaky(beta=0.8)
        self.fc2 = nn.Linear(40, 10)
        self.lif2 = snn.Synaptic(alpha=0.5, beta=0.8)

    def forward(self, x):
        mem1 = self.lif1.init_leaky()
        syn2, mem2 = self.lif2.init_synaptic()
        out = []
        for t in range(x.shape[0]):
            spk1, mem1 = self.lif1(self.fc1(x[t]), mem1)
            spk2, syn2, mem2 = self.lif2(self.fc2(spk1), syn2, mem2)
            out.append(spk2)
        return torch.stack(out)


def spikingjelly_net(channels=(16, 32)):
    """SpikingJelly multi-step CNN: SeqToANNContainer(Conv, BN), LIFNode, layer.MaxPool2d,
    layer.Conv2d + BN in ``step_mode='m'``, IFNode, Flatten, Linear, ParametricLIFNode;
    input ``[N, 1, 8, 8]`` repeated over T inside ``forward``."""
    pytest.importorskip("spikingjelly.activation_based")
    from spikingjelly.activation_based import layer, neuron, surrogate as sg

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            c1, c2 = channels
            self.conv1 = layer.SeqToANNContainer(nn.Conv2d(1, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1))
            self.sn1 = neuron.LIFNode(tau=2.0, surrogate_function=sg.ATan(), detach_reset=True, step_mode="m")
            self.pool1 = layer.MaxPool2d(2, step_mode="m")
            self.conv2 = layer.Conv2d(c1, c2, 3, padding=1, bias=False, step_mode="m")
            self.bn2 = layer.BatchNorm2d(c2, step_mode="m")
            self.sn2 = neuron.IFNode(surrogate_function=sg.ATan(), detach_reset=True, step_mode="m")
            self.pool2 = layer.MaxPool2d(2, step_mode="m")
            self.flat = layer.Flatten(step_mode="m")
            self.fc = layer.Linear(c2 * 2 * 2, 10, step_mode="m")
            self.sn3 = neuron.ParametricLIFNode(surrogate_function=sg.ATan(), detach_reset=True, step_mode="m")

        def forward(self, x):
            x = x.unsqueeze(0).repeat(T, 1, 1, 1, 1)
            h = self.pool1(self.sn1(self.conv1(x)))
            h = self.pool2(self.sn2(self.bn2(self.conv2(h))))
            return self.sn3(self.fc(self.flat(h)))

    return Net()


def sew_net(step_mode="m"):
    """A small SEW-ResNet: stem, one residual block whose output is ADDed to its input
    spikes (``out = sn(bn(conv(...))) + x``), a downsampling shortcut, a linear readout."""
    pytest.importorskip("spikingjelly.activation_based")
    from spikingjelly.activation_based import layer, neuron

    def cbs(cin, cout, stride=1):
        return nn.Sequential(layer.Conv2d(cin, cout, 3, stride, 1, bias=False, step_mode=step_mode),
                             layer.BatchNorm2d(cout, step_mode=step_mode), neuron.IFNode(step_mode=step_mode))

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.a, self.b = cbs(c, c), cbs(c, c)

        def forward(self, x):
            return self.b(self.a(x)) + x

    class Down(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.main = nn.Sequential(cbs(cin, cout, 2), cbs(cout, cout))
            self.short = cbs(cin, cout, 2)

        def forward(self, x):
            return self.main(x) + self.short(x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = cbs(1, 8)
            self.block = Block(8)
            self.down = Down(8, 16)
            self.flat = layer.Flatten(step_mode=step_mode)
            self.fc = layer.Linear(16 * 4 * 4, 10, step_mode=step_mode)

        def forward(self, x):
            x = x.unsqueeze(0).repeat(T, 1, 1, 1, 1)
            return self.fc(self.flat(self.down(self.block(self.stem(x)))))

    return Net()


def reset(model):
    """SpikingJelly's reset between batches (snnTorch's nets reset themselves)."""
    for m in model.modules():
        if hasattr(m, "reset") and hasattr(m, "_memories"):
            m.reset()


def train_digits(model, digits, epochs, pruner=None, lr=5e-3, seed=0, batch=64, sj=False):
    """A plain loop: Adam, cross-entropy on spike counts, ``pruner.end_epoch()`` per epoch.
    Returns per epoch (test accuracy, compression) and the seconds it took."""
    (train, test) = digits
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    history = []
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(train.y), generator=g)
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            loss = nn.functional.cross_entropy(model(train.x[idx]).sum(0), train.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sj:
                reset(model)
        if pruner is not None:
            pruner.end_epoch()
        history.append((accuracy(model, test, sj), pruner.compression if pruner is not None else 0.0))
    return history, time.perf_counter() - t0


@torch.no_grad()
def accuracy(model, split, sj=False) -> float:
    model.eval()
    out = model(split.x).sum(0)
    if sj:
        reset(model)
    return float((out.argmax(1) == split.y).float().mean())


def figures(history) -> dict:
    """Final accuracy and compression, the first epoch that pruned, the largest jump."""
    comp = [c for _, c in history]
    jumps = [b - a for a, b in zip([0.0] + comp, comp)]
    first = next((i for i, c in enumerate(comp) if c > 0), None)
    return {"accuracy": history[-1][0], "compression": comp[-1], "first_epoch": first, "max_jump": max(jumps)}


EPOCHS = 30
"""Epochs of the plain loop: DPAP's defaults, with no run length given to ``attach``, prune
these nets to 52-55 % in 30 epochs (docs/results/2026-12-06-conv-kernels.md)."""


def tail(history, n=3) -> float:
    return sum(a for a, _ in history[-n:]) / n


def judge(base, pruned, report, name, seconds):
    f = figures(pruned)
    f.update(unpruned_accuracy=base[-1][0], accuracy_last3=tail(pruned), unpruned_last3=tail(base), seconds=round(seconds, 1),
             compression_per_epoch=[round(c, 4) for _, c in pruned])
    report(name, f)
    assert f["compression"] >= 0.40, f
    assert f["max_jump"] <= 0.10, f
    assert f["first_epoch"] is not None and f["first_epoch"] < EPOCHS / 3, f
    assert f["accuracy_last3"] >= f["unpruned_last3"] - 0.02, f
    return f


def same_outputs(model, small, x, sj=False):
    model.eval()
    small.eval()
    with torch.no_grad():
        a = model(x)
        if sj:
            reset(model)
        b = small(x)
        if sj:
            reset(small)
    assert a.shape == b.shape
    # fewer channels sum in another order: a membrane within rounding of the threshold may
    # flip a spike (dpap.adapters.shrink.FLIPS); on the runs measured none did
    off = float(((a - b).abs() > 1e-5).float().mean())
    assert off <= 1e-3, (off, float((a - b).abs().max()))


def params(m):
    return sum(p.numel() for p in m.parameters())
