"""One knob, ε, sets how much the gradual protocol prunes: the curve it draws.

Trains one setting of ``benchmarks/pruning_dynamics.py`` (default: Fashion-MNIST with the
``mnist-snn`` preset's network and recipe, 30 epochs) once per value of ``pruning.dpap.epsilon``
and prints final compression, test accuracy, the largest one-epoch jump, the first
pruning epoch and the share pruned per layer kind. Runs checkpoint every epoch into
``--out`` and their histories stay there: running the script again resumes and reprints.

    python benchmarks/epsilon_sweep.py [--values 0.7,0.8,0.9,1.0,1.1,1.2,1.4] [--jobs 2]
        [--setting fashion-mnist] [--epochs N] [-S key=value ...] [--out DIR]

Last line: ``RESULT monotone=<true|false> compression_low=… compression_high=…
values=<n>`` (monotone: compression never decreases as ε grows).
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("pruning_dynamics", HERE / "pruning_dynamics.py")
pd = importlib.util.module_from_spec(_spec)
sys.modules["pruning_dynamics"] = pd  # spawned workers import it by name
_spec.loader.exec_module(pd)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--values", default="0.7,0.8,0.9,1.0,1.1,1.2,1.4", help="comma-separated ε values")
    ap.add_argument("--setting", default="fashion-mnist", choices=list(pd.SETTINGS))
    ap.add_argument("--params", default=str(pd.ROOT / "params.yaml"))
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=str(pd.ROOT / "benchmarks" / "results" / "epsilon_sweep"))
    args = ap.parse_args(argv)
    try:
        values = [float(v) for v in args.values.split(",") if v.strip()]
    except ValueError:
        print(f"error: --values {args.values!r}: expected numbers separated by commas", file=sys.stderr)
        return 2
    from dpap.config import ConfigError
    from dpap.config.params_file import parse_overrides

    try:
        extra = parse_overrides(args.set, "-S")
        for v in values:
            pd.setting_config(args.setting, Path(args.params), {**extra, "pruning.dpap.epsilon": v}, args.epochs, True)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from dpap.data import DataError

    try:
        pd.processed_root(pd.setting_config(args.setting, Path(args.params), extra, args.epochs, True))  # once, before the jobs start
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    threads = args.threads or max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    jobs = [
        {"setting": args.setting, "pruned": True, "params": args.params, "extra": {**extra, "pruning.dpap.epsilon": v}, "epochs": args.epochs,
         "out": str(Path(args.out) / f"epsilon-{v:g}"), "threads": threads, "progress": args.jobs == 1 and sys.stderr.isatty()}
        for v in values
    ]
    for j in jobs:
        Path(j["out"]).mkdir(parents=True, exist_ok=True)
    if args.jobs > 1:
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            done = pool.map(pd.run_one, jobs, chunksize=1)
    else:
        done = [pd.run_one(j) for j in jobs]

    from dpap.evaluation.dynamics import pruning_dynamics

    print(f"\n{args.setting}: final compression and accuracy against ε (pruning.dpap.epsilon)")
    print(f"{'ε':>5} {'compression':>11} {'test acc':>8} {'max jump':>8} {'first':>5} {'conv ch.':>8} {'fc neur.':>8} {'fc syn.':>8}")
    comps = []
    for v, r in zip(values, done):
        h = r["history"]
        d = pruning_dynamics(h)
        comps.append(h[-1]["compression"])
        f = d.final
        print(f"{v:5.2f} {h[-1]['compression']:11.3f} {h[-1]['test_accuracy']:8.4f} {d.max_epoch_jump:8.3f} {str(d.first_prune_epoch):>5} "
              f"{f.conv_channels_pruned:8.3f} {f.fc_neurons_pruned:8.3f} {f.fc_synapses_pruned:8.3f}")
    order = sorted(range(len(values)), key=values.__getitem__)
    ordered = [comps[i] for i in order]
    monotone = all(b >= a for a, b in zip(ordered, ordered[1:]))
    print(f"RESULT monotone={'true' if monotone else 'false'} compression_low={min(comps):.3f} compression_high={max(comps):.3f} values={len(values)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
