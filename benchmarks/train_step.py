"""Training-step throughput of the paper's MNIST SNN: plain, with DPAP, and in snnTorch.

Network ``15C3-AP2-40C3-AP2-300FC-10FC``, T=4, batch 128, random 28×28 inputs in [0, 1]
(direct encoding), MSE on the output firing rate, Adam, CPU. Three contenders, timed in
the same process with their measurements interleaved (round robin) so that drifts in
machine load hit all of them alike:

* ``dpap (no pruner)``: :func:`dpap.build_network`, a bare training step;
* ``dpap + DPAP``: the same with a :class:`dpap.DPAPPruner` attached, importance
  accumulated every batch, ``mask_gradients`` + ``apply_masks`` around every optimizer
  step (what :class:`dpap.training.TrainingRun` does);
* ``snnTorch Leaky``: the same network written with ``snntorch.Leaky`` (reset to zero,
  β=0.2, threshold 0.5, snnTorch's default surrogate: it has no rectangle) in the
  standard snnTorch time loop (the input is fed again at every step).

Needs the benchmark extra: ``pip install -e '.[bench]'``.

The last line is ``RESULT dpap_overhead=<ratio> speedup_vs_snntorch=<ratio>``:
overhead = median step time with DPAP / without; speedup = samples/s with DPAP /
snnTorch samples/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from torch import nn

from dpap.config import DPAPConfig
from dpap.networks import build_network
from dpap.neurons import firing_rate_mse
from dpap.pruning import DPAPPruner

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


class Contender:
    def __init__(self, name: str, net: nn.Module, pruner: DPAPPruner | None = None):
        self.name = name
        self.net = net.train()
        self.pruner = pruner
        self.opt = torch.optim.Adam(net.parameters(), lr=LR)
        self.times: list[float] = []

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        t0 = time.perf_counter()
        out = self.net(x)
        loss = firing_rate_mse(out, y, CLASSES)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.pruner is not None:
            self.pruner.mask_gradients()
        self.opt.step()
        if self.pruner is not None:
            self.pruner.apply_masks()
        return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per contender")
    ap.add_argument("--rounds", type=int, default=30, help="round-robin rounds")
    ap.add_argument("--steps", type=int, default=1, help="timed steps per contender per round")
    ap.add_argument("--threads", type=int, default=cores())
    ap.add_argument("--no-snntorch", action="store_true", help="skip the snnTorch contender")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # the same initial weights with and without DPAP
    contenders = [
        Contender("dpap (no pruner)", build_network(ARCH, (1, 28, 28), CLASSES, time_steps=T)),
    ]
    torch.manual_seed(0)
    net = build_network(ARCH, (1, 28, 28), CLASSES, time_steps=T)
    contenders.append(Contender("dpap + DPAP", net, DPAPPruner(net, DPAPConfig())))
    if not args.no_snntorch:
        try:
            contenders.append(Contender("snnTorch Leaky", SnnTorchNet(T)))
        except ImportError:
            print("snnTorch not installed (pip install -e '.[bench]'); skipping it", file=sys.stderr)

    g = torch.Generator().manual_seed(1)
    batches = [
        (torch.rand(args.batch, 1, 28, 28, generator=g), torch.randint(0, CLASSES, (args.batch,), generator=g))
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
            for _ in range(args.steps):
                c.times.append(c.step(*batches[k % len(batches)]))
                k += 1

    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, T={T}, {ARCH}")
    print(f"{'configuration':<20} {'first step ms':>13} {'median ms':>10} {'samples/s':>10}")
    med = {}
    for c in contenders:
        med[c.name] = statistics.median(c.times)
        print(f"{c.name:<20} {first[c.name] * 1e3:>13.1f} {med[c.name] * 1e3:>10.1f} {args.batch / med[c.name]:>10.1f}")
    overhead = med["dpap + DPAP"] / med["dpap (no pruner)"]
    line = f"RESULT dpap_overhead={overhead:.3f}"
    if "snnTorch Leaky" in med:
        line += f" speedup_vs_snntorch={med['snnTorch Leaky'] / med['dpap + DPAP']:.3f}"
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
