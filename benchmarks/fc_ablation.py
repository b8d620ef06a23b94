"""Why DPAP's defaults cost a small FC network 2-2.6 points at 70 %: an ablation on the
networks of ``benchmarks/attach_defaults.py`` (bare ``dpap.attach``, its loop, digits).

Variants (``--variants``):

* ``default``: ``dpap.attach(net, method="dpap")``;
* ``neurons-only``: the same, with every layer's synapse survival switched off after
  ``attach`` (a diagnostic patch of the method's state, not a setting): only neurons die;
* ``synapses-only``: unit survival switched off: only synapses die;
* ``gmp@T``: GMP to target T over the run (``dpap.attach(net, method="gmp", target=T,
  epochs=...)``), to compare at a similar compression.

Per variant and seed: compression, test accuracy (mean of the last three epochs) against the
same network unpruned, and the last epoch's training accuracy of both (does the pruned
network still fit its training set?). With ``--deaths``, the default run also prints, per
epoch, the spike rate of the hidden neurons that died against the living ones', and the
mean |w| of the first layer's synapses that died against the living ones' (tutorial 5).

    python benchmarks/fc_ablation.py [--net tutorial5-fc] [--seeds 0,1] [--epochs 30]
        [--variants default,neurons-only,synapses-only,gmp@0.82] [--deaths]

Last line: ``RESULT <variant>@<seed>=<Δ points>/<compression> ...``. About a minute per
run of tutorial 5's network on one core. Needs snnTorch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import attach_defaults as ad  # noqa: E402
import dpap  # noqa: E402


def ablate(pruner, variant: str) -> None:
    """Switch off unit or synapse survival in every layer of an attached DPAP pruner."""
    for layer in pruner.pruner.method.layers:
        if variant == "neurons-only":
            layer.prune_synapses, layer.synapse_survival = False, None
        elif variant == "synapses-only":
            layer.prune_units = False


def accuracy(spec, net, x, y) -> float:
    net.eval()
    with torch.no_grad():
        spikes = net(x)[0] if spec["kind"] == "t5" else ad.run_sequential(net, x)
    net.train()
    return float((spikes.sum(0).argmax(1) == y).float().mean())


def run(name: str, seed: int, epochs: int, variant: str, data, deaths: bool = False) -> dict:
    """One run of the net in its tutorial's loop (as ``attach_defaults.train``)."""
    import snntorch.functional as SF

    spec = ad.NETS[name]
    torch.manual_seed(seed)
    net = spec["build"]()
    pruner = None
    if variant.startswith("gmp@"):
        pruner = dpap.attach(net, method="gmp", target=float(variant[4:]), epochs=epochs)
    elif variant != "unpruned":
        pruner = dpap.attach(net, method="dpap")
        ablate(pruner, variant)
    rates: dict = {}
    if deaths and pruner is not None and spec["kind"] == "t5":
        def hook(_, inp):
            s, n = rates.get("r", (0.0, 0))
            rates["r"] = (s + inp[0].detach().reshape(-1, inp[0].shape[-1]).sum(0), n + inp[0].numel() // inp[0].shape[-1])
        net.fc2.register_forward_pre_hook(hook)
    opt = torch.optim.Adam(net.parameters(), lr=spec["lr"])
    ce, rate_loss = nn.CrossEntropyLoss(), SF.ce_rate_loss()
    (xtr, ytr), (xte, yte) = data
    g = torch.Generator().manual_seed(seed)
    accs = []
    for epoch in range(epochs):
        order = torch.randperm(len(ytr), generator=g)
        batch = spec.get("batch", 128)
        rates.clear()
        for i in range(0, len(order), batch):
            x, y = xtr[order[i:i + batch]], ytr[order[i:i + batch]]
            if spec["kind"] == "t5":
                loss = sum(ce(m, y) for m in net(x)[1])
            else:
                loss = rate_loss(ad.run_sequential(net, x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if pruner is not None:
            before = pruner.masks()
            w1 = net.fc1.weight.detach().abs().clone() if rates else None
            pruner.end_epoch()
            if rates and before:
                after = pruner.masks()
                alive0, alive1 = before["fc1"]["units"], after["fc1"]["units"]
                died, rate = alive0 & ~alive1, rates["r"][0] / rates["r"][1]
                # synapses that died on their own (their neuron lives) against the living ones
                cut = before["fc1"]["synapses"] & ~after["fc1"]["synapses"] & alive1[:, None]
                live = after["fc1"]["synapses"]
                if died.any() or cut.any():
                    print(f"    epoch {epoch:2d}: {int(died.sum()):3d} neurons died, mean rate {float(rate[died].mean()) if died.any() else float('nan'):.3f}; "
                          f"{int(alive1.sum())} live, mean rate {float(rate[alive1].mean()):.3f}, silent (< 0.01) {int((rate[alive1] < 0.01).sum())}; "
                          f"fc1 synapses died {int(cut.sum())}, mean |w| {float(w1[cut].mean()) if cut.any() else float('nan'):.4f} (living {float(w1[live].mean()):.4f})", flush=True)
        accs.append(accuracy(spec, net, xte, yte))
    return {"acc3": sum(accs[-3:]) / len(accs[-3:]), "train": accuracy(spec, net, xtr, ytr), "compression": pruner.compression if pruner else 0.0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--net", default="tutorial5-fc", choices=sorted(ad.NETS))
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--variants", default="default,neurons-only,synapses-only,gmp@0.82")
    ap.add_argument("--deaths", action="store_true", help="print which neurons die in the default run")
    args = ap.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    bad = [v for v in variants if v not in ("default", "neurons-only", "synapses-only") and not v.startswith("gmp@")]
    if bad:
        print(f"error: --variants: unknown {bad}; known: default, neurons-only, synapses-only, gmp@<target>", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    data = ad.digits_split()
    print(f"{'variant':>14} {'seed':>4} {'compression':>11} {'acc mean3':>9} {'unpruned':>8} {'Δ':>6} {'train acc':>9} {'unpruned':>8}")
    parts = []
    for seed in (int(s) for s in args.seeds.split(",")):
        base = run(args.net, seed, args.epochs, "unpruned", data)
        for v in variants:
            r = run(args.net, seed, args.epochs, v, data, deaths=args.deaths and v == "default")
            d = 100 * (r["acc3"] - base["acc3"])
            print(f"{v:>14} {seed:4d} {r['compression']:11.3f} {r['acc3']:9.4f} {base['acc3']:8.4f} {d:+6.2f} {r['train']:9.4f} {base['train']:8.4f}", flush=True)
            parts.append(f"{v}@{seed}={d:+.2f}/{r['compression']:.3f}")
    print("RESULT " + " ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
