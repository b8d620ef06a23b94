"""DPAP vs SD-SNN vs the unpruned baseline, same network, epochs and seed.

Runs, on one setting of :mod:`benchmarks.pruning_dynamics` (``fashion-mnist``: the
``mnist-snn`` preset's network and recipe on Fashion-MNIST, 30 epochs; ``digits``:
params.yaml as it is), four trainings:

* ``baseline``: ``pruning.enabled: false``;
* ``dpap``: DPAP, the default (``gradual``) protocol;
* ``sdsnn``: SD-SNN, the default (``fixed``) protocol;
* ``sdsnn-reference``: SD-SNN as the authors' code behaves (``protocol: reference``),

and prints per method the final and best test accuracy, compression, the share of conv
channels / FC neurons / FC synapses pruned, and how many sites regenerated; with DPAP
among the methods it also draws DPAP's compression and accuracy per epoch against the
unpruned run's (``--out``/``<setting>-dpap-<epochs>-epochs.png``). Every run
checkpoints each epoch and writes its history after each epoch (``--out``), so a killed
benchmark resumes and a cut-off one still reports what it did.

    python benchmarks/method_comparison.py [--setting fashion-mnist] [--jobs 4]
        [--methods baseline,dpap,sdsnn,sdsnn-reference] [--epochs N] [--out DIR]

On 2 CPU cores Fashion-MNIST takes 1-2 minutes an epoch per run (hours for the four);
``--setting digits`` about a minute in all. Last line: ``RESULT <method>_accuracy=…
<method>_compression=… <method>_regenerated=… ...``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

METHODS = {
    "baseline": {"pruning.enabled": False},
    "dpap": {"pruning.method": "dpap"},
    "sdsnn": {"pruning.method": "sdsnn", "pruning.sdsnn.protocol": "fixed"},
    "sdsnn-reference": {"pruning.method": "sdsnn", "pruning.sdsnn.protocol": "reference"},
}


def run_one(job: dict) -> dict:
    """One training run in a worker process; its history is rewritten after every epoch."""
    import torch

    from dpap.data import load_processed
    from dpap.runtime.outputs import atomic_write_text
    from dpap.training.loop import fit
    from pruning_dynamics import processed_root, setting_config

    if job["threads"]:
        torch.set_num_threads(job["threads"])
    extra = dict(job["extra"], **METHODS[job["method"]])
    cfg = setting_config(job["setting"], Path(job["params"]), extra, job["epochs"], True)
    data = load_processed(processed_root(cfg))
    out = Path(job["out"])
    tag = f"{job['setting']}-{job['method']}{job.get('label', '')}"
    path = out / f"{tag}.json"

    def save(run, m) -> None:
        atomic_write_text(path, json.dumps({"setting": job["setting"], "method": job["method"], "config": cfg.to_dict(),
                                            "device": str(run.device), "history": [asdict(h) for h in run.history]}))
        print(f"[{tag}] epoch {m.epoch + 1}: test {m.test_accuracy:.4f} compression {m.compression:.3f} ({m.seconds:.1f}s)", flush=True)

    print(f"[{tag}] {cfg.train.epochs} epochs of {cfg.model.arch} on {cfg.data.name}", flush=True)
    run = fit(cfg, data, checkpoint=out / "checkpoints" / f"{tag}.pt", callbacks=[save], progress=False)
    return {"tag": tag, "history": [asdict(h) for h in run.history]}


def summary(history: list[dict]) -> dict:
    from dpap.evaluation.dynamics import kind_shares

    last = history[-1]
    k = kind_shares(last["layers"])
    return {
        "epochs": len(history),
        "accuracy": last["test_accuracy"],
        "best_accuracy": max(m["test_accuracy"] for m in history),
        "compression": last["compression"],
        "conv_channels_pruned": k.conv_channels_pruned,
        "fc_neurons_pruned": k.fc_neurons_pruned,
        "fc_synapses_pruned": k.fc_synapses_pruned,
        "regenerated": sum(l.get("regenerated", 0) for m in history for l in m["layers"]),
        "seconds_per_epoch": sum(m["seconds"] for m in history) / len(history),
    }


def table(setting: str, rows: dict[str, dict]) -> str:
    lines = [f"\n{setting}: same network, epochs and seed",
             f"{'method':<16} {'epochs':>6} {'test acc':>8} {'best':>7} {'compr.':>7} {'conv ch.':>8} {'fc neur.':>8} {'fc syn.':>8} {'regrown':>7} {'s/epoch':>7}"]
    for name, r in rows.items():
        lines.append(f"{name:<16} {r['epochs']:6d} {r['accuracy']:8.4f} {r['best_accuracy']:7.4f} {r['compression']:7.3f} "
                     f"{r['conv_channels_pruned']:8.3f} {r['fc_neurons_pruned']:8.3f} {r['fc_synapses_pruned']:8.3f} {r['regenerated']:7d} {r['seconds_per_epoch']:7.1f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    from pruning_dynamics import SETTINGS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", default="fashion-mnist", choices=sorted(SETTINGS))
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated: " + ", ".join(METHODS))
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads per run (0: cores / jobs)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "method_comparison"))
    ap.add_argument("--report-only", action="store_true", help="print the table from the histories in --out")
    ap.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="params override for every run, e.g. pruning.sdsnn.fc_rate_gain=2")
    ap.add_argument("--label", default="", help="appended to each run's name (runs with other -S values side by side)")
    args = ap.parse_args(argv)
    from dpap.config import ConfigError
    from dpap.data import DataError
    from dpap.config.params_file import parse_overrides
    from pruning_dynamics import processed_root, setting_config

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        print(f"error: --methods: unknown {unknown[0]!r}; expected {', '.join(METHODS)}", file=sys.stderr)
        return 2
    try:
        extra = parse_overrides(args.set, "-S")
        for m in methods:  # every run's params valid before hours of training
            setting_config(args.setting, Path(args.params), dict(extra, **METHODS[m]), args.epochs, True)
        if not args.report_only:
            processed_root(setting_config(args.setting, Path(args.params), extra, args.epochs, True))  # once, before the jobs start
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        threads = args.threads or max(1, (os.cpu_count() or 1) // max(1, args.jobs))
        jobs = [{"setting": args.setting, "method": m, "params": args.params, "extra": extra, "epochs": args.epochs,
                 "out": str(out), "threads": threads, "label": args.label} for m in methods]
        if args.jobs > 1:
            with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
                pool.map(run_one, jobs, chunksize=1)
        else:
            for j in jobs:
                run_one(j)
    rows = {}
    for m in methods:
        path = out / f"{args.setting}-{m}{args.label}.json"
        if path.exists():
            rows[m + args.label] = summary(json.loads(path.read_text())["history"])
    print(table(args.setting, rows))
    histories = {m: json.loads((out / f"{args.setting}-{m}{args.label}.json").read_text())["history"]
                 for m in ("dpap", "baseline") if (out / f"{args.setting}-{m}{args.label}.json").exists()}
    if "dpap" in histories:  # DPAP's compression and accuracy against the unpruned run's, per epoch
        from pruning_dynamics import plot

        epochs = len(histories["dpap"])
        figure = out / f"{args.setting}{args.label}-dpap-{epochs}-epochs.png"
        plot({f"{args.setting}, {epochs} epochs": {"pruned": histories["dpap"], "baseline": histories.get("baseline")}}, figure)
        print(f"figure: {figure}")
    keys = [f"{m.replace('-', '_')}_{k}={v:.4f}" if isinstance(v, float) else f"{m.replace('-', '_')}_{k}={v}"
            for m, r in rows.items() for k, v in r.items() if k in ("accuracy", "compression", "regenerated", "epochs")]
    print("RESULT " + " ".join(keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
