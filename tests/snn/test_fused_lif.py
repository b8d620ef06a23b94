"""The fused LIF kernels (dpap.snn.fused_lif, torch.compile) against the eager LIFFunction:
the same spikes and the same gradients, bit for bit, for every setting a network uses;
and a network trained with either kernel ends with identical weights."""

from __future__ import annotations

import pytest
import torch

from dpap.snn import fused_lif
from dpap.snn.networks import AvgPool2d, build_network
from dpap.snn.neurons import LIF, LIFFunction, firing_rate_mse

pytestmark = pytest.mark.skipif(fused_lif.kernels("cpu") is None, reason="torch.compile cannot build a CPU kernel here (no C++ compiler)")


def _run(current: torch.Tensor, grad: torch.Tensor, kernel: str, decay=0.2, threshold=0.5, width=1.0, detach_reset=False):
    x = current.clone().requires_grad_()
    spikes = LIF(decay, threshold, width, detach_reset, kernel)(x)
    spikes.backward(grad)
    return spikes.detach(), x.grad


@pytest.mark.parametrize(
    "shape,decay,threshold,width,detach_reset,dtype",
    [
        ((4, 64, 15, 28, 28), 0.2, 0.5, 1.0, False, torch.float32),  # the paper's first conv layer
        ((4, 37, 300), 0.2, 0.5, 1.0, False, torch.float32),  # an odd batch, an FC layer
        ((1, 16, 10), 0.2, 0.5, 1.0, False, torch.float32),  # T = 1: no recurrence
        ((6, 32, 40, 7, 7), 0.7, 0.3, 0.5, False, torch.float32),  # other λ, V_th, a
        ((5, 32, 100), 0.2, 0.5, 2.0, True, torch.float32),  # detach_reset
        ((4, 16, 50), 0.3, 1.0, 1.0, False, torch.float64),
    ],
)
def test_compiled_equals_eager_bit_for_bit(shape, decay, threshold, width, detach_reset, dtype):
    g = torch.Generator().manual_seed(sum(shape))
    current = (torch.randn(shape, generator=g, dtype=dtype) * 0.6 + 0.25)
    grad = torch.randn(shape, generator=g, dtype=dtype)
    s_e, g_e = _run(current, grad, "eager", decay, threshold, width, detach_reset)
    s_c, g_c = _run(current, grad, "compiled", decay, threshold, width, detach_reset)
    assert s_e.sum() > 0 and (s_e == 0).sum() > 0  # some neurons fire, some do not
    assert torch.equal(s_e, s_c)
    assert torch.equal(g_e, g_c), (g_e - g_c).abs().max()
    assert (g_e != 0).float().mean() > 0.1  # the surrogate passes gradient


def test_a_static_input_held_over_time():
    """The first layer's current is one tensor expanded over T (direct encoding); the
    gradient w.r.t. it is the sum over the steps, the same either way."""
    g = torch.Generator().manual_seed(3)
    base = torch.randn(32, 15, 28, 28, generator=g) * 0.6 + 0.3
    grad = torch.randn(4, 32, 15, 28, 28, generator=g)
    out = {}
    for kernel in ("eager", "compiled"):
        x = base.clone().requires_grad_()
        spikes = LIF(kernel=kernel)(x.unsqueeze(0).expand(4, *x.shape))
        spikes.backward(grad)
        out[kernel] = (spikes.detach(), x.grad)
    assert torch.equal(out["eager"][0], out["compiled"][0]) and torch.equal(out["eager"][1], out["compiled"][1])


def test_training_with_either_kernel_gives_the_same_network():
    """Five Adam steps of the paper's MNIST net with each kernel: identical weights."""
    weights = {}
    for kernel in ("eager", "compiled"):
        torch.manual_seed(0)
        net = build_network("15C3-AP2-40C3-AP2-300FC-10FC", (1, 28, 28), 10, kernel=kernel)
        opt = torch.optim.Adam(net.parameters(), lr=5e-3)
        g = torch.Generator().manual_seed(1)
        for _ in range(5):
            x, y = torch.rand(32, 1, 28, 28, generator=g), torch.randint(0, 10, (32,), generator=g)
            loss = firing_rate_mse(net(x), y, 10)
            opt.zero_grad()
            loss.backward()
            opt.step()
        weights[kernel] = [p.detach().clone() for p in net.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(weights["eager"], weights["compiled"]))


def test_auto_compiles_large_layers_on_cpu_only():
    assert fused_lif.use_compiled("auto", torch.device("cpu"), 128 * 15 * 28 * 28)
    assert not fused_lif.use_compiled("auto", torch.device("cpu"), 64 * 16 * 8 * 8)  # digits: not worth compiling
    assert not fused_lif.use_compiled("auto", torch.device("cuda"), 128 * 15 * 28 * 28)
    assert fused_lif.use_compiled("compiled", torch.device("cuda"))
    assert not fused_lif.use_compiled("eager", torch.device("cpu"))


def test_inference_kernel_gives_the_same_spikes():
    """Without a gradient (evaluation, export) the spikes-only kernel runs: the same spikes."""
    g = torch.Generator().manual_seed(5)
    current = torch.randn(4, 50, 40, 14, 14, generator=g) * 0.6 + 0.25
    with torch.no_grad():
        eager = LIF(kernel="eager")(current)
        fused = LIF(kernel="compiled")(current)
    with torch.inference_mode():
        inference = LIF(kernel="compiled")(current)
    assert eager.sum() > 0 and torch.equal(eager, fused) and torch.equal(eager, inference)


@pytest.mark.parametrize(
    "shape,k,held,dtype",
    [
        ((4, 64, 15, 28, 28), 2, True, torch.float32),  # the first conv layer, a current held over T
        ((4, 64, 40, 14, 14), 2, False, torch.float32),  # the second conv layer
        ((4, 16, 6, 13, 14), 3, False, torch.float32),  # k = 3; rows and columns past the last window
        ((3, 16, 6, 13, 14), 3, True, torch.float32),
        ((1, 16, 6, 8, 8), 2, True, torch.float32),  # T = 1
        ((4, 8, 5, 10, 10), 2, True, torch.float64),
    ],
)
def test_lif_and_pooling_fused_equal_lif_then_pooling(shape, k, held, dtype):
    """Inference's fused LIF + average pooling: the pooled spikes of the LIF followed by
    AvgPool2d, bit for bit, including windows where only some members fire."""
    g = torch.Generator().manual_seed(sum(shape) + k)
    base = torch.randn(shape, generator=g, dtype=dtype) * 0.6 + 0.25
    current = base[0].unsqueeze(0).expand(shape) if held else base
    with torch.inference_mode():
        spikes = LIF(kernel="compiled")(current)
        ref = AvgPool2d(k)(spikes.flatten(0, 1))
        fused = fused_lif.pooled_spikes(current, 0.2, 0.5, k)
    T, N, C, H, W = shape
    assert fused.shape == (T, N, C, H // k, W // k)
    assert torch.equal(ref.view(fused.shape), fused)
    partial = (fused > 0) & (fused < 1)
    assert partial.float().mean() > 0.1 and (fused == 0).any()  # mixed windows, silent windows


def test_inference_fuses_lif_and_pooling_when_asked_and_unobserved(monkeypatch):
    """``fuse_pooling=True`` takes the fused kernel for both pooled conv layers, with the
    same outputs as the LIF and pooling apart; an observer (which needs the full-size
    spikes) turns it off, a training-only observer (the pruner's) only in training mode.
    A plain forward calls every neuron module, so forward hooks on them (NeuroBench's
    activation probes) see every layer."""
    calls = []
    real = fused_lif.pooled_spikes
    monkeypatch.setattr(fused_lif, "pooled_spikes", lambda *a: calls.append(a[3]) or real(*a))
    torch.manual_seed(0)
    net = build_network("15C3-AP2-40C3-AP2-300FC-10FC", (1, 28, 28), 10, kernel="compiled").eval()
    with torch.no_grad():
        for block in net.blocks:
            block.synapse.weight.mul_(3)
    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    hooked = []
    for i, block in enumerate(net.blocks):
        block.neuron.register_forward_hook(lambda m, args, out, i=i: hooked.append(i))
    seen = []
    with torch.no_grad():
        plain = net(x)
        assert calls == [] and hooked == [0, 1, 2, 3]
        remove = net.observe(lambda i, b, pre, post: seen.append(i))
        assert torch.equal(net(x, fuse_pooling=True), plain)
        remove()
        assert calls == [] and seen == [0, 1, 2, 3]
        fused = net(x, fuse_pooling=True)
        assert calls == [2, 2] and torch.equal(plain, fused) and plain.sum() > 0
        net.observe(lambda i, b, pre, post: seen.append(i), training_only=True)
        assert torch.equal(net(x, fuse_pooling=True), plain) and calls == [2, 2, 2, 2] and seen == [0, 1, 2, 3]
        net.train()
        net(x, fuse_pooling=True)
        assert calls == [2, 2, 2, 2] and seen == [0, 1, 2, 3] * 2
    assert hooked == [0, 1, 2, 3] * 2 + [2, 3] * 2 + [0, 1, 2, 3]


def test_without_a_compiler_one_warning_and_the_eager_loop(tmp_path):
    """No working C++ compiler (CXX names none; an empty Inductor cache): a note that the
    kernels are being compiled and one warning line that they could not be, then the
    network trains with the eager loop, and its spikes are those of kernel eager;
    inference (LIF and pooling apart) adds nothing."""
    import os
    import subprocess
    import sys

    script = (
        "import torch\n"
        "from dpap.snn.networks import build_network\n"
        "x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))\n"
        "outs = []\n"
        "for kernel in ('compiled', 'eager'):\n"
        "    torch.manual_seed(0)\n"
        "    net = build_network('15C3-AP2-40C3-AP2-300FC-10FC', (1, 28, 28), 10, kernel=kernel)\n"
        "    with torch.no_grad():\n"
        "        for b in net.blocks: b.synapse.weight.mul_(3)\n"
        "    out = net(x); out.sum().backward(); outs.append(out.detach())\n"
        "    with torch.no_grad(): assert torch.equal(net.eval()(x, fuse_pooling=True), out)\n"  # no second warning
        "assert outs[0].sum() > 0 and torch.equal(outs[0], outs[1])\n"
        "print('trained')\n"
    )
    env = dict(os.environ, CXX=str(tmp_path / "no-such-compiler"), TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"))
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "trained"
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 2, r.stderr[-3000:]  # what it is doing, then that it failed: once each per process
    assert lines[0].startswith("note: compiling the fused LIF kernels for cpu (once per process"), lines[0]
    assert lines[1].startswith("warning: the fused LIF kernel could not be compiled on cpu") and "neuron.kernel: eager" in lines[1], lines[1]


def test_quiet_drops_the_compile_chatter_without_touching_logger_levels():
    """``_quiet`` (entered around every compiled call) drops ``torch.utils.cpp_extension``'s
    warnings ("No CUDA runtime is found") but not its errors, also when nested, and leaves
    the logger's level alone: ``Logger.setLevel`` clears every logger's cache, which cost
    0.37 ms a call with Inductor loaded."""
    import logging

    log = logging.getLogger("torch.utils.cpp_extension")
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler = Collect(logging.DEBUG)
    log.addHandler(handler)
    level = log.level
    try:
        with fused_lif._quiet():
            with fused_lif._quiet():
                log.warning("inner warning")
            log.warning("outer warning")
            log.error("an error")
            assert log.level == level
        log.warning("after")
    finally:
        log.removeHandler(handler)
    assert seen == ["an error", "after"]
    assert log.level == level
