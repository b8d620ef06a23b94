"""Compare pruning settings in seconds: record the importance of one unpruned run, then
replay it through the pruner under many settings.

    python benchmarks/replay_importance.py record [--setting fashion-mnist] [--limit-train 10000]
        [--epochs 30] [--out FILE]
    python benchmarks/replay_importance.py replay [--recording FILE] [--setting fashion-mnist]
        [--grid '{dpap.epsilon: [0.8, 1.0, 1.2], pruning.dpap.conv.beta: [4, 6]}'] [-S key=value ...]

``record`` trains the setting's network without pruning (DPAP observes; no survival value
can fall below 0) and saves, after every epoch, each layer's accumulated importance (BCM)
and post-synaptic trace sums. ``replay`` feeds those, epoch by epoch, to a fresh pruner
with each combination of the grid and prints final compression, the largest one-epoch
jump, the first pruning epoch and the share pruned per layer kind. A replay ignores how
pruning changes later importance (the recording is of the dense network), so it ranks
settings; confirm the chosen one with ``benchmarks/pruning_dynamics.py``. This is how the
``gradual`` defaults were narrowed down (docs/pruning.md).

Last line (replay): ``RESULT settings=<n> max_epoch_jump_max=… compression_min=… compression_max=…``.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import sys
from pathlib import Path

import torch
import yaml

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("pruning_dynamics", HERE / "pruning_dynamics.py")
pd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pd)
DEFAULT_OUT = pd.ROOT / "benchmarks" / "results" / "replay"


def record(args) -> int:
    from dpap.data import download, load_processed, preprocess
    from dpap.pruning import DPAPMethod
    from dpap.training.loop import fit

    over = {"pruning.dpap.conv.beta": 1e9, "pruning.dpap.fc.beta": 1e9}  # observe, never prune
    cfg = pd.setting_config(args.setting, Path(args.params), over, args.epochs, True)
    root = Path(cfg.data.processed_dir) / cfg.data.name
    if not (root / "meta.json").exists():
        download(cfg.data, progress=False, log=lambda *a: None)
        preprocess(cfg.data, progress=False, log=lambda *a: None)
    data = load_processed(root)
    if args.limit_train:
        idx = torch.randperm(len(data.train[1]), generator=torch.Generator().manual_seed(123))[: args.limit_train]
        data.train = (data.train[0][idx], data.train[1][idx])
    torch.set_num_threads(args.threads or torch.get_num_threads())
    epochs = []
    out = Path(args.out or DEFAULT_OUT / f"{args.setting}.pt")
    out.parent.mkdir(parents=True, exist_ok=True)
    original = DPAPMethod.end_epoch

    def recording(self, pruner, epoch):
        epochs.append([{"imp": l.importance.float().clone(), "post": l.post_sum.float().clone()} for l in self.layers])
        torch.save({"setting": args.setting, "arch": cfg.model.arch, "input_shape": data.meta["input_shape"],
                    "classes": data.meta["num_classes"], "epochs": epochs}, out)
        return original(self, pruner, epoch)

    DPAPMethod.end_epoch = recording
    try:
        fit(cfg, data, progress=sys.stderr.isatty())
    finally:
        DPAPMethod.end_epoch = original
    print(f"recorded {len(epochs)} epochs -> {out}")
    return 0


def replay_one(rec: dict, params: Path, setting: str, overrides: dict) -> dict:
    from dpap.pruning.compression import compression_of
    from dpap.evaluation.dynamics import pruning_dynamics
    from dpap.snn.networks import build_network
    from dpap.pruning import Pruner, make_pruner

    cfg = pd.setting_config(setting, params, overrides, None, True)
    net = build_network(rec["arch"], rec["input_shape"], rec["classes"])
    pruner = make_pruner(net, "dpap", cfg.pruning.dpap)
    history = []
    for e, layers in enumerate(rec["epochs"]):
        for state, layer in zip(pruner.method.layers, layers):
            state.importance.copy_(layer["imp"].double())
            state.post_sum.copy_(layer["post"].double())
        pruner.end_epoch(e)
        rep = compression_of(net, pruner)
        history.append({"compression": rep.compression, "layers": rep.as_dict()["layers"]})
    return {"dynamics": pruning_dynamics(history), "curve": [h["compression"] for h in history]}


def replay(args) -> int:
    path = Path(args.recording or DEFAULT_OUT / f"{args.setting}.pt")
    if not path.is_file():
        print(f"error: {path}: no recording; run `python benchmarks/replay_importance.py record --setting {args.setting}` first", file=sys.stderr)
        return 2
    rec = torch.load(path, weights_only=False)
    grid = yaml.safe_load(args.grid) or {}
    if not isinstance(grid, dict) or not all(isinstance(v, list) for v in grid.values()):
        print(f"error: --grid {args.grid!r}: expected a mapping of keys to lists, e.g. '{{dpap.epsilon: [0.8, 1.0]}}'", file=sys.stderr)
        return 2
    base = {}
    for kv in args.set:
        k, v = kv.split("=", 1)
        base[k.strip()] = yaml.safe_load(v)
    keys = list(grid)
    rows = []
    print(f"replay of {len(rec['epochs'])} recorded epochs ({rec['setting']}, {rec['arch']})")
    print(f"{'setting':<40} {'final':>6} {'max jump':>8} {'first':>5} {'conv ch.':>8} {'fc neur.':>8} {'fc syn.':>8}  curve (every 3rd epoch)")
    for values in itertools.product(*grid.values()) if keys else [()]:
        over = dict(base)
        over.update(zip(keys, values))
        r = replay_one(rec, Path(args.params), args.setting, over)
        d = r["dynamics"]
        label = " ".join(f"{k.split('.')[-1] if k.count('.') < 2 else '.'.join(k.split('.')[1:])}={v}" for k, v in zip(keys, values)) or "defaults"
        rows.append((r["curve"][-1], d.max_epoch_jump))
        print(f"{label:<40} {r['curve'][-1]:6.3f} {d.max_epoch_jump:8.3f} {str(d.first_prune_epoch):>5} {d.final.conv_channels_pruned:8.3f} "
              f"{d.final.fc_neurons_pruned:8.3f} {d.final.fc_synapses_pruned:8.3f}  {' '.join(f'{c:.2f}' for c in r['curve'][::3])}")
    print(f"RESULT settings={len(rows)} max_epoch_jump_max={max(j for _, j in rows):.3f} compression_min={min(c for c, _ in rows):.3f} "
          f"compression_max={max(c for c, _ in rows):.3f}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record", help="train unpruned and save each epoch's importance")
    r.add_argument("--setting", default="fashion-mnist", choices=list(pd.SETTINGS))
    r.add_argument("--limit-train", type=int, default=10000, help="training samples (0 = all)")
    r.add_argument("--epochs", type=int, default=None)
    r.add_argument("--threads", type=int, default=0)
    r.add_argument("--out", default=None)
    p = sub.add_parser("replay", help="replay a recording under a grid of settings")
    p.add_argument("--setting", default="fashion-mnist", choices=list(pd.SETTINGS))
    p.add_argument("--recording", default=None)
    p.add_argument("--grid", default="{dpap.epsilon: [0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.4]}")
    p.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE")
    for q in (r, p):
        q.add_argument("--params", default=str(pd.ROOT / "params.yaml"))
    args = ap.parse_args(argv)
    return record(args) if args.cmd == "record" else replay(args)


if __name__ == "__main__":
    sys.exit(main())
