"""Training-step throughput of the paper's MNIST SNN: ours (plain and with DPAP) against
a plain PyTorch time loop, snnTorch and SpikingJelly (issue #11, item 4).

Network ``15C3-AP2-40C3-AP2-300FC-10FC``, T=4, batch 128, random 28×28 inputs in [0, 1]
(direct encoding), MSE on the output firing rate, Adam, CPU (``--device cuda``: a GPU,
each step timed up to ``torch.cuda.synchronize``). Every contender computes the
same LIF (``u[t] = 0.2·u[t−1]·(1 − o[t−1]) + I[t]``, threshold 0.5, hard reset to 0, the
rectangle surrogate of width 1 where the framework has it). They are timed in the same
process with their measurements interleaved (round robin), so that drifts in machine
load hit all of them alike:

* ``dpap + DPAP``: :func:`dpap.build_network` with a :func:`dpap.make_pruner` attached,
  importance accumulated every batch, ``mask_gradients`` + ``apply_masks`` around every
  optimizer step (what :class:`dpap.training.loop.TrainingRun` does);
* ``dpap (no pruner)``: the same network, optimizer and pruner, stepped with the pruner
  switched off (``observing`` false, no mask calls; its forward hook returns at once).
  Pairing each DPAP contender with its own network measures DPAP's cost alone: two
  separate but identical networks differ by up to ±3 % on this machine (``--twin`` adds
  such a second network, an A/A control);
* ``plain PyTorch loop``: ``nn.Conv2d``/``nn.Linear``/``nn.AvgPool2d`` and a Python loop
  over T, the LIF written with tensor ops and a rectangle-surrogate spike function;
* ``snnTorch Leaky``: ``snntorch.Leaky`` (reset to zero, β=0.2, threshold 0.5, snnTorch's
  default surrogate: it has no rectangle) in the standard snnTorch time loop;
* ``SpikingJelly LIFNode``: ``spikingjelly.activation_based`` in multi-step mode
  (``step_mode="m"``, stateless layers in ``SeqToANNContainer``), ``LIFNode`` with
  ``decay_input=False, tau=1.25`` (so ``1 − 1/τ = 0.2``), ``v_reset=0``, ``Rect`` surrogate.

Needs the benchmark extra: ``pip install -e '.[bench]'`` (snnTorch, SpikingJelly); a peer
that is not installed is skipped with a note.

``dpap + DPAP, masks on`` is the DPAP contender in mid-training state (a quarter of the FC
synapses and a tenth of the hidden units pruned, so every mask is applied every step),
paired with ``dpap, masks-on net, no pruner``.

Ratios are *paired*: the median over rounds of the two contenders' times in the same
round (timed back to back), which cancels drifts in machine load that a ratio of
medians keeps. The last line is ``RESULT dpap_overhead=<ratio>
speedup_vs_fastest_peer=<ratio> fastest_peer=<name>``: overhead = the larger of
(DPAP fresh, DPAP masks on) / the same network without pruner; speedup = the fastest peer
/ ours with DPAP.

The process keeps freed memory (:mod:`dpap.runtime.allocator`), as the ``dpap`` command and the
pipeline do, for all contenders alike; ``DPAP_MALLOC=default`` measures glibc's defaults.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from torch import nn

from dpap.runtime.allocator import keep_freed_memory
from dpap.config import DPAPConfig
from dpap.snn.networks import build_network
from dpap.snn.neurons import firing_rate_mse
from dpap.pruning import Pruner, make_pruner
from dpap.training.setup import deterministic_algorithms

ARCH = "15C3-AP2-40C3-AP2-300FC-10FC"
T = 4
CLASSES = 10
LR = 5e-3


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class SnnTorchNet(nn.Module):
    """``15C3-AP2-40C3-AP2-300FC-10FC`` in the snnTorch idiom: one step at a time."""

    def __init__(self, steps: int):
        super().__init__()
        import snntorch as snn

        kw = dict(beta=0.2, threshold=0.5, reset_mechanism="zero")
        self.steps = steps
        self.conv1 = nn.Conv2d(1, 15, 3, padding=1)
        self.lif1 = snn.Leaky(**kw)
        self.conv2 = nn.Conv2d(15, 40, 3, padding=1)
        self.lif2 = snn.Leaky(**kw)
        self.fc1 = nn.Linear(40 * 7 * 7, 300)
        self.lif3 = snn.Leaky(**kw)
        self.fc2 = nn.Linear(300, 10)
        self.lif4 = snn.Leaky(**kw)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mem1 = self.lif1.reset_mem()
        mem2 = self.lif2.reset_mem()
        mem3 = self.lif3.reset_mem()
        mem4 = self.lif4.reset_mem()
        out = []
        for _ in range(self.steps):
            spk1, mem1 = self.lif1(self.conv1(x), mem1)
            spk2, mem2 = self.lif2(self.conv2(self.pool(spk1)), mem2)
            spk3, mem3 = self.lif3(self.fc1(self.pool(spk2).flatten(1)), mem3)
            spk4, mem4 = self.lif4(self.fc2(spk3), mem4)
            out.append(spk4)
        return torch.stack(out)


class _RectSpike(torch.autograd.Function):
    """Heaviside forward, rectangle surrogate ``1[|u − V_th| < 1/2]`` backward."""

    @staticmethod
    def forward(ctx, u):  # type: ignore[override]
        ctx.save_for_backward(u)
        return (u >= 0.5).to(u.dtype)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (u,) = ctx.saved_tensors
        return grad * ((u - 0.5).abs() < 0.5).to(grad.dtype)


class PlainLoopNet(nn.Module):
    """The network as a PyTorch user would first write it: layers called at every step."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps = steps
        self.conv1 = nn.Conv2d(1, 15, 3, padding=1)
        self.conv2 = nn.Conv2d(15, 40, 3, padding=1)
        self.fc1 = nn.Linear(40 * 7 * 7, 300)
        self.fc2 = nn.Linear(300, 10)
        self.pool = nn.AvgPool2d(2)

    @staticmethod
    def lif(current: torch.Tensor, u, o):
        u = current if u is None else 0.2 * u * (1 - o) + current
        return u, _RectSpike.apply(u)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = [(None, None)] * 4
        out = []
        for _ in range(self.steps):
            h = x
            for i, layer in enumerate((self.conv1, self.conv2, self.fc1, self.fc2)):
                if i == 1:
                    h = self.pool(h)
                elif i == 2:
                    h = self.pool(h).flatten(1)
                u, o = self.lif(layer(h), *state[i])
                state[i] = (u, o)
                h = o
            out.append(h)
        return torch.stack(out)


class SpikingJellyNet(nn.Module):
    """The network in SpikingJelly's multi-step idiom (``[T, N, ...]`` through every layer)."""

    def __init__(self, steps: int):
        super().__init__()
        from spikingjelly.activation_based import layer, neuron, surrogate

        def lif():
            return neuron.LIFNode(tau=1.25, decay_input=False, v_threshold=0.5, v_reset=0.0, surrogate_function=surrogate.Rect(alpha=1.0), step_mode="m")

        self.steps = steps
        self.net = nn.Sequential(
            layer.SeqToANNContainer(nn.Conv2d(1, 15, 3, padding=1)), lif(),
            layer.SeqToANNContainer(nn.AvgPool2d(2), nn.Conv2d(15, 40, 3, padding=1)), lif(),
            layer.SeqToANNContainer(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(40 * 7 * 7, 300)), lif(),
            layer.SeqToANNContainer(nn.Linear(300, 10)), lif(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from spikingjelly.activation_based import functional

        functional.reset_net(self.net)
        return self.net(x.unsqueeze(0).repeat(self.steps, *([1] * x.dim())))


BASE = "dpap (no pruner)"
MASKED = "dpap + DPAP, masks on"
MASKED_BASE = "dpap, masks-on net, no pruner"
TWIN = "dpap (no pruner), own net"


def masked_pruner(net) -> Pruner:
    """A DPAP pruner in mid-training state: a quarter of the FC synapses and a tenth of every
    hidden layer's units pruned, so ``mask_gradients`` and ``apply_masks`` touch every
    weight, bias and BN term at every step (a fresh pruner's masks are no-ops). Same
    shapes as the dense net: compaction (on by default) would make it smaller and faster."""
    pruner = make_pruner(net, "dpap", DPAPConfig())
    g = torch.Generator().manual_seed(2)
    for i, block in enumerate(net.blocks):
        if block.layer_type == "fc":
            pruner.kill_synapses(i, torch.rand(pruner.synapses[i].shape, generator=g) < 0.25)
        if not block.is_output:
            pruner.kill_units(i, torch.rand(pruner.units[i].shape, generator=g) < 0.10)
    pruner.refresh_masks()
    pruner.apply_masks()
    return pruner


class Contender:
    """One configuration to time. ``pruner``: a pruner attached to ``net`` and used at
    every step (observation, ``mask_gradients``, ``apply_masks``). ``twin_of``: a
    contender whose network, optimizer and pruner this one shares, stepping them with the
    pruner switched off (``observing`` false, no mask calls): the same tensors at the same
    addresses, so the pair's ratio holds DPAP's cost alone (two separate but identical
    networks differ by up to ±3 % here, an A/A test shows: ``--twin``)."""

    def __init__(self, name: str, net: nn.Module | None = None, pruner: Pruner | None = None, twin_of: "Contender | None" = None):
        self.name = name
        if twin_of is not None:
            self.net, self.opt, self.pruner, self.use_pruner = twin_of.net, twin_of.opt, twin_of.pruner, False
        else:
            self.net, self.pruner, self.use_pruner = net.train(), pruner, pruner is not None
            self.opt = torch.optim.Adam(net.parameters(), lr=LR)
        self.times: list[float] = []
        self.rounds: list[float] = []  # per round: the sum of its timed steps

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        use = self.use_pruner
        if self.pruner is not None:
            self.pruner.observing = use
        sync(x.device)
        t0 = time.perf_counter()
        out = self.net(x)
        loss = firing_rate_mse(out, y, CLASSES)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if use:
            self.pruner.mask_gradients()
        self.opt.step()
        if use:
            self.pruner.apply_masks()
        sync(x.device)
        return time.perf_counter() - t0


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued kernels, so that a step's time is its own (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per contender")
    ap.add_argument("--rounds", type=int, default=30, help="round-robin rounds")
    ap.add_argument("--steps", type=int, default=1, help="timed steps per contender per round")
    ap.add_argument("--threads", type=int, default=cores())
    ap.add_argument("--no-peers", action="store_true", help="time only ours (with and without DPAP)")
    ap.add_argument("--twin", action="store_true", help="add an A/A control: a second 'no pruner' net, whose ratio is the noise floor")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"), help="cpu (default), cuda or auto (cuda when there is one)")
    ap.add_argument("--kernel", default="auto", choices=("auto", "compiled", "eager"),
                    help="our networks' neuron.kernel (auto: compiled for the large layers on CPU, eager on CUDA)")
    ap.add_argument("--deterministic", action="store_true",
                    help="every contender with PyTorch's deterministic kernels, as train.deterministic trains (its cost: compare with a run without)")
    args = ap.parse_args(argv)
    from dpap.config import ConfigError
    from dpap.training.setup import resolve_device

    try:
        device = resolve_device(args.device)
    except ConfigError as exc:
        ap.error(str(exc).replace("train.device", "--device"))

    malloc = keep_freed_memory()  # as the dpap command does, for every contender alike; DPAP_MALLOC=default to compare
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # the same initial weights everywhere
    net = build_network(ARCH, (1, 28, 28), CLASSES, time_steps=T, kernel=args.kernel).to(device)
    dpap = Contender("dpap + DPAP", net, make_pruner(net, "dpap", DPAPConfig()))
    contenders = [Contender(BASE, twin_of=dpap), dpap]
    if args.twin:
        torch.manual_seed(0)
        contenders.append(Contender(TWIN, build_network(ARCH, (1, 28, 28), CLASSES, time_steps=T, kernel=args.kernel).to(device)))
    torch.manual_seed(0)
    net = build_network(ARCH, (1, 28, 28), CLASSES, time_steps=T, kernel=args.kernel)
    masked = Contender(MASKED, net, masked_pruner(net))  # the pruner follows the net to the device at its first batch
    net.to(device)
    contenders += [Contender(MASKED_BASE, twin_of=masked), masked]
    peers = [] if args.no_peers else [("plain PyTorch loop", PlainLoopNet), ("snnTorch Leaky", SnnTorchNet), ("SpikingJelly LIFNode", SpikingJellyNet)]
    for name, make in peers:
        try:
            torch.manual_seed(0)
            contenders.append(Contender(name, make(T).to(device)))
        except ImportError as exc:
            print(f"{name}: not installed ({exc.name}; pip install -e '.[bench]'); skipping it", file=sys.stderr)

    with deterministic_algorithms(args.deterministic):
        return _time(args, device, malloc, contenders, peers)


def _time(args, device: torch.device, malloc: str, contenders: list[Contender], peers: list) -> int:
    g = torch.Generator().manual_seed(1)
    batches = [
        (torch.rand(args.batch, 1, 28, 28, generator=g).to(device), torch.randint(0, CLASSES, (args.batch,), generator=g).to(device))
        for _ in range(4)
    ]
    first = {}
    for c in contenders:
        first[c.name] = c.step(*batches[0])
        for i in range(args.warmup - 1):
            c.step(*batches[(i + 1) % len(batches)])
    k = 0
    for r in range(args.rounds):
        order = contenders if r % 2 == 0 else contenders[::-1]
        for c in order:
            spent = 0.0
            for _ in range(args.steps):
                c.times.append(c.step(*batches[k % len(batches)]))
                spent += c.times[-1]
                k += 1
            c.rounds.append(spent)

    by_name = {c.name: c for c in contenders}

    def paired(a: str, b: str) -> float:
        """The median over rounds of time(a) / time(b) within the round: both were timed
        back to back, so a drift in machine load cancels."""
        return statistics.median(x / y for x, y in zip(by_name[a].rounds, by_name[b].rounds))

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{args.threads} threads"
    det = ", deterministic kernels" if args.deterministic else ""
    print(f"torch {torch.__version__}, {where}, neuron.kernel {args.kernel}{det}, batch {args.batch}, T={T}, {ARCH}, {args.rounds} rounds; allocator: {malloc}")
    print(f"{'configuration':<24} {'first step ms':>13} {'median ms':>10} {'samples/s':>10} {'vs no pruner':>13}")
    med = {}
    for c in contenders:
        med[c.name] = statistics.median(c.times)
        rel = paired(c.name, BASE)
        print(f"{c.name:<24} {first[c.name] * 1e3:>13.1f} {med[c.name] * 1e3:>10.1f} {args.batch / med[c.name]:>10.1f} {rel:>12.3f}x")
    # the overhead of DPAP: the worse of a fresh pruner and one whose masks are all on
    overhead = max(paired("dpap + DPAP", BASE), paired(MASKED, MASKED_BASE))
    line = f"RESULT dpap_overhead={overhead:.3f}"
    peer_names = [name for name, _ in peers if name in by_name]
    if peer_names:
        speedups = {name: paired(name, "dpap + DPAP") for name in peer_names}
        fastest = min(speedups, key=speedups.get)
        print()
        for name, x in speedups.items():
            print(f"ours with DPAP vs {name:<22} {x:.2f}x faster (paired per round)")
        line += f" speedup_vs_fastest_peer={speedups[fastest]:.3f} fastest_peer={fastest.split()[0]}"
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
