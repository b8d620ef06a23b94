"""Does `dpap search` hit a chosen compression quickly? Targets 0.5, 0.7, 0.85 on digits.

For each target, runs ``dpap search --target T --tolerance 0.03 --trials N`` (a fresh
journal study in ``--out``, no MLflow) with params.yaml as it is (digits, 30 epochs a
trial, the default ranges and control knob), and reports the first trial whose final
compression lies within the band, the best feasible accuracy and its compression.

    python benchmarks/search_targets.py [--targets 0.5,0.7,0.85] [--trials 10] [--seeds 0]
        [--workers 1] [--out DIR] [-S train.threads=1 ...]

A digits trial takes 10-40 s on 2 CPU cores (trials that overshoot the band stop early).
Last line: ``RESULT first_feasible_at_<target>=<trial number, 1-based, or none> ...
worst_first_feasible=<n or none>``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default="0.5,0.7,0.85")
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--tolerance", type=float, default=0.03)
    ap.add_argument("--seeds", default="0", help="sampler seeds (search.seed), comma-separated")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "search_targets"))
    ap.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="passed to dpap search, e.g. train.threads=1")
    args = ap.parse_args(argv)
    from dpap.cli import main as dpap

    targets = [float(t) for t in args.targets.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for seed in seeds:
        for target in targets:
            out = Path(args.out) / f"target-{target:g}-seed-{seed}"
            shutil.rmtree(out, ignore_errors=True)
            rc = dpap(["search", "--params", args.params, "--target", str(target), "--tolerance", str(args.tolerance), "--trials", str(args.trials),
                       "--seed", str(seed), "--storage", str(out / "optuna.journal"), "--study-name", "bench", "--out", str(out),
                       "--workers", str(args.workers), "--no-mlflow", "--quiet", *[a for kv in args.set for a in ("-S", kv)]])
            if rc not in (0, 1):  # 1: no feasible trial
                print(f"error: dpap search exited {rc}", file=sys.stderr)
                return rc
            s = json.loads((out / "summary.json").read_text())
            rows.append((seed, target, s.get("first_feasible"), s.get("best_value"), s.get("best_compression"), s.get("trials")))
    print(f"\n{'seed':>4} {'target':>6} {'first feasible trial':>21} {'best accuracy':>13} {'its compression':>15} {'trials':>6}")
    for seed, target, first, acc, comp, n in rows:
        print(f"{seed:4d} {target:6.2f} {str(first) if first is not None else 'none':>21} {acc if acc is None else f'{acc:.4f}':>13} {comp if comp is None else f'{comp:.3f}':>15} {n:>6}")
    worst = None if any(r[2] is None for r in rows) else max(r[2] for r in rows)
    keys = [f"first_feasible_at_{t:g}={max((r[2] for r in rows if r[1] == t and r[2] is not None), default=None) if all(r[2] is not None for r in rows if r[1] == t) else 'none'}" for t in targets]
    print("RESULT " + " ".join(keys) + f" worst_first_feasible={worst if worst is not None else 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
