"""What ``dpap.attach(model, method="dpap")``, with nothing but DPAP's defaults, does to
snnTorch networks written the way its tutorials write them, each trained in its
tutorial's own plain loop on scikit-learn's digits, against the same network unpruned
from the same seed.

Networks:

* ``tutorial5-fc``: snnTorch tutorial 5's network, Linear(64→1000)-Leaky-Linear(1000→10)-Leaky
  (β 0.95, 25 steps, ``init_hidden=False``, states passed by hand), cross-entropy on the
  membrane at every step, Adam 5e-4, batch 128;
* ``tutorial6-cnn``: tutorial 6's convolutional network for 8×8 images, Conv(1→12, 5, pad 2)-
  MaxPool2-Leaky-Conv(12→64, 5, pad 2)-MaxPool2-Leaky-Linear(256→10)-Leaky (β 0.5, 25 steps,
  fast sigmoid, ``init_hidden=True``, ``nn.Sequential``), ``snntorch.functional.ce_rate_loss``,
  Adam 1e-2, batch 128;
* ``tutorial6-narrow``: the same with 8 and 32 channels;
* ``fc128``, ``cnn16-32``, ``cnn8-16``: small ``nn.Sequential`` networks as a user would
  write them for 8×8 digits (:func:`small_fc`, :func:`small_cnn`), in tutorial 6's loop with
  Adam 2e-3 and batch 64;
* ``fc256-128``: a deeper FC net (:func:`deep_fc`), Adam 1e-3, batch 64, held out from the
  choice of the FC input layer's ε.

The tutorial 6 networks and ``cnn16-32``/``cnn8-16`` chose between ways of pruning
conv-heavy networks (``pruning.dpap.conv_mode``, docs/results/2026-12-06-conv-kernels.md);
tutorial 5's network and ``fc128`` chose nothing.

    python benchmarks/attach_defaults.py [--epochs 30] [--seeds 0,1] [--nets tutorial5-fc,...] (default: the three tutorial networks)
        [--method dpap] [--set KEY=VALUE ...]

``--method`` and ``--set`` (keywords for ``attach``, values read as YAML: ``--set epsilon=1.0
--set 'fc={beta: 6}'``, for GMP ``--method gmp --set target=0.6 --set epochs=30``) try
other settings on the same networks; without them the call is exactly the default one.
A setting that needs the run's length (``--set end_fraction=0.8``; GMP) needs ``--set epochs=30`` too.

Per network and seed: compression, test accuracy (last epoch and mean of the last three)
against the unpruned run's, the first epoch that pruned and the largest jump. Last line:
``RESULT <net>@<seed>=<pruned acc>/<unpruned acc>/<compression> ...`` (last-three means).
Needs snnTorch (``pip install -e '.[bench]'``); about a minute per run on one core.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import yaml
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dpap  # noqa: E402

STEPS = 25


def digits_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(d.target)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=360, random_state=0, stratify=y)
    return (xtr, ytr), (xte, yte)


class Tutorial5(nn.Module):
    """snnTorch tutorial 5: explicit states, the time loop in ``forward``, returns spikes
    and membranes of the output layer ``[T, N, 10]``."""

    def __init__(self):
        super().__init__()
        import snntorch as snn

        self.fc1 = nn.Linear(64, 1000)
        self.lif1 = snn.Leaky(beta=0.95)
        self.fc2 = nn.Linear(1000, 10)
        self.lif2 = snn.Leaky(beta=0.95)

    def forward(self, x):
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        spk_rec, mem_rec = [], []
        x = x.flatten(1)
        for _ in range(STEPS):
            spk1, mem1 = self.lif1(self.fc1(x), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spk_rec.append(spk2)
            mem_rec.append(mem2)
        return torch.stack(spk_rec), torch.stack(mem_rec)


def tutorial6(c1=12, c2=64):
    """snnTorch tutorial 6's ``nn.Sequential`` CNN (padding so that 8×8 digits fit)."""
    import snntorch as snn
    from snntorch import surrogate

    grad = surrogate.fast_sigmoid(slope=25)
    return nn.Sequential(
        nn.Conv2d(1, c1, 5, padding=2), nn.MaxPool2d(2), snn.Leaky(beta=0.5, spike_grad=grad, init_hidden=True),
        nn.Conv2d(c1, c2, 5, padding=2), nn.MaxPool2d(2), snn.Leaky(beta=0.5, spike_grad=grad, init_hidden=True),
        nn.Flatten(), nn.Linear(c2 * 2 * 2, 10), snn.Leaky(beta=0.5, spike_grad=grad, init_hidden=True, output=True))


def run_sequential(net, x):
    """Tutorial 6's ``forward_pass``: reset, then one call per step; output spikes ``[T, N, 10]``."""
    from snntorch import utils

    utils.reset(net)
    return torch.stack([net(x)[0] for _ in range(STEPS)])


def small_fc(hidden=128):
    """A plain ``nn.Sequential`` FC SNN: Flatten-Linear(64→h)-Leaky-Linear(h→10)-Leaky (β 0.9)."""
    import snntorch as snn

    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), snn.Leaky(beta=0.9, init_hidden=True),
                         nn.Linear(hidden, 10), snn.Leaky(beta=0.9, init_hidden=True, output=True))


def deep_fc():
    """A two-hidden-layer ``nn.Sequential`` FC SNN, Flatten-Linear(64→256)-Leaky-Linear(256→128)-
    Leaky-Linear(128→10)-Leaky (β 0.8), held out from the choice of the defaults."""
    import snntorch as snn

    return nn.Sequential(nn.Flatten(), nn.Linear(64, 256), snn.Leaky(beta=0.8, init_hidden=True),
                         nn.Linear(256, 128), snn.Leaky(beta=0.8, init_hidden=True),
                         nn.Linear(128, 10), snn.Leaky(beta=0.8, init_hidden=True, output=True))


def small_cnn(c1, c2):
    """A plain ``nn.Sequential`` CNN: Conv(1→c1, 3, pad 1)-MaxPool2-Leaky-Conv(c1→c2, 3, pad 1)-
    MaxPool2-Leaky-Linear(4·c2→10)-Leaky (β 0.9, arctan surrogate)."""
    import snntorch as snn
    from snntorch import surrogate

    g = surrogate.atan()
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1), nn.MaxPool2d(2), snn.Leaky(beta=0.9, spike_grad=g, init_hidden=True),
        nn.Conv2d(c1, c2, 3, padding=1), nn.MaxPool2d(2), snn.Leaky(beta=0.9, spike_grad=g, init_hidden=True),
        nn.Flatten(), nn.Linear(c2 * 4, 10), snn.Leaky(beta=0.9, spike_grad=g, init_hidden=True, output=True))


NETS = {
    "tutorial5-fc": {"build": Tutorial5, "lr": 5e-4, "kind": "t5"},
    "tutorial6-cnn": {"build": lambda: tutorial6(12, 64), "lr": 1e-2, "kind": "t6"},
    "tutorial6-narrow": {"build": lambda: tutorial6(8, 32), "lr": 1e-2, "kind": "t6"},
    "fc128": {"build": small_fc, "lr": 2e-3, "kind": "t6", "batch": 64},
    "fc256-128": {"build": deep_fc, "lr": 1e-3, "kind": "t6", "batch": 64},
    "cnn16-32": {"build": lambda: small_cnn(16, 32), "lr": 2e-3, "kind": "t6", "batch": 64},
    "cnn8-16": {"build": lambda: small_cnn(8, 16), "lr": 2e-3, "kind": "t6", "batch": 64},
}


def train(name: str, seed: int, epochs: int, data, pruned: bool, method: str = "dpap", settings: dict | None = None) -> list[tuple[float, float]]:
    """The tutorial's loop; ``pruner.end_epoch()`` after each epoch. Per epoch: (test accuracy, compression)."""
    import snntorch.functional as SF

    spec = NETS[name]
    torch.manual_seed(seed)
    net = spec["build"]()
    pruner = dpap.attach(net, method=method, **(settings or {})) if pruned else None  # by default: dpap.attach(net, method="dpap")
    opt = torch.optim.Adam(net.parameters(), lr=spec["lr"], betas=(0.9, 0.999))
    ce, rate_loss = nn.CrossEntropyLoss(), SF.ce_rate_loss()
    (xtr, ytr), (xte, yte) = data
    g = torch.Generator().manual_seed(seed)
    history = []
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(ytr), generator=g)
        batch = spec.get("batch", 128)
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            x, y = xtr[idx], ytr[idx]
            if spec["kind"] == "t5":
                _, mem = net(x)
                loss = sum(ce(mem[t], y) for t in range(STEPS))
            else:
                loss = rate_loss(run_sequential(net, x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if pruner is not None:
            pruner.end_epoch()
        net.eval()
        with torch.no_grad():
            spikes = net(xte)[0] if spec["kind"] == "t5" else run_sequential(net, xte)
        acc = float((spikes.sum(0).argmax(1) == yte).float().mean())
        history.append((acc, pruner.compression if pruner is not None else 0.0))
    return history


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--nets", default="tutorial5-fc,tutorial6-cnn,tutorial6-narrow")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--method", default="dpap")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    settings = {}
    for item in args.set:
        key, eq, value = item.partition("=")
        if not eq or not key:
            print(f"error: --set: got {item!r}, expected KEY=VALUE (e.g. epsilon=1.0)", file=sys.stderr)
            return 2
        settings[key] = yaml.safe_load(value)
    try:
        import snntorch  # noqa: F401
    except ImportError:
        print("error: benchmarks/attach_defaults.py needs snnTorch: .venv/bin/pip install -e '.[bench]'", file=sys.stderr)
        return 1
    nets = [n for n in args.nets.split(",") if n]
    unknown = [n for n in nets if n not in NETS]
    if unknown:
        print(f"error: --nets: unknown {unknown}; known: {', '.join(NETS)}", file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    data = digits_split()
    print(f"{'net':>17} {'seed':>4} {'compression':>11} {'acc last/mean3':>15} {'unpruned':>15} {'Δ mean3':>8} {'first':>5} {'max jump':>8} {'s':>5}")
    parts = []
    for name in nets:
        for seed in (int(s) for s in args.seeds.split(",")):
            t0 = time.perf_counter()
            base = train(name, seed, args.epochs, data, pruned=False)
            try:
                hist = train(name, seed, args.epochs, data, pruned=True, method=args.method, settings=settings)
            except dpap.DPAPError as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
            comp = [c for _, c in hist]
            jumps = [b - a for a, b in zip([0.0] + comp, comp)]
            first = next((i + 1 for i, c in enumerate(comp) if c > 0), None)
            m3, b3 = sum(a for a, _ in hist[-3:]) / 3, sum(a for a, _ in base[-3:]) / 3
            print(f"{name:>17} {seed:4d} {comp[-1]:11.3f} {hist[-1][0]:7.4f}/{m3:.4f} {base[-1][0]:7.4f}/{b3:.4f} "
                  f"{100 * (m3 - b3):+8.2f} {str(first):>5} {max(jumps):8.3f} {time.perf_counter() - t0:5.0f}", flush=True)
            parts.append(f"{name}@{seed}={m3:.4f}/{b3:.4f}/{comp[-1]:.3f}")
    print("RESULT " + " ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
