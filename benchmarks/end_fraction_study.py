"""Does DPAP lose accuracy because it never stops pruning? Runs one setting of
:mod:`benchmarks.pruning_dynamics` unpruned and with DPAP at several
``pruning.dpap.end_fraction`` values (decisions stop after that share of the epochs, so
the last epochs only train the pruned network), same seed and recipe, and prints final
accuracy, compression and the last epoch with a death for each.

    python benchmarks/end_fraction_study.py [--setting fashion-mnist] [--fractions 1.0,0.8,0.7,0.6]
        [--variant NAME:KEY=VALUE,KEY=VALUE ...] [--jobs 2] [--epochs N] [-S KEY=VALUE ...] [--out DIR]

``--variant`` adds a DPAP run with its own overrides (e.g. ``end0.7-eps1.1:pruning.dpap.end_fraction=0.7,pruning.dpap.epsilon=1.1``:
an earlier end with a larger ε, to reach the same compression).

Every run checkpoints each epoch in ``--out`` (a killed study resumes). Last line:
``RESULT unpruned=<acc> end1.0=<acc>/<compression> end0.8=... ...``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import pruning_dynamics as pd  # noqa: E402


def last_death_epoch(history: list[dict]) -> int | None:
    """The last epoch (from 1) whose end pruned anything (compression grew)."""
    last, prev = None, 0.0
    for m in history:
        if m["compression"] > prev + 1e-12:
            last = m["epoch"] + 1
        prev = m["compression"]
    return last


def main(argv=None) -> int:
    from dpap.config.params_file import parse_overrides

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", default="fashion-mnist", choices=sorted(pd.SETTINGS))
    ap.add_argument("--fractions", default="1.0,0.8,0.7,0.6")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE,...")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "end_fraction"))
    args = ap.parse_args(argv)
    extra = parse_overrides(args.set, "-S")
    fractions = [float(f) for f in args.fractions.split(",") if f]
    out = Path(args.out)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    pd.processed_root(pd.setting_config(args.setting, Path(args.params), extra, args.epochs, True))
    jobs = [{"setting": args.setting, "params": args.params, "epochs": args.epochs, "pruned": False, "extra": extra,
             "out": str(out), "threads": 1, "progress": False, "label": "unpruned"}]
    for f in fractions:
        jobs.append({**jobs[0], "pruned": True, "extra": {**extra, "pruning.dpap.end_fraction": f}, "label": f"end{f}",
                     "out": str(out / f"end{f}")})
    for v in args.variant:
        name, _, items = v.partition(":")
        jobs.append({**jobs[0], "pruned": True, "extra": {**extra, **parse_overrides(items.split(","), "--variant")}, "label": name,
                     "out": str(out / name)})
    for j in jobs:
        (Path(j["out"]) / "checkpoints").mkdir(parents=True, exist_ok=True)
    with multiprocessing.get_context("spawn").Pool(max(1, args.jobs)) as pool:
        results = pool.map(pd.run_one, jobs)
    print(f"\n{args.setting}: DPAP with decisions ending at a share of the epochs, against the unpruned run")
    print(f"{'run':>10} {'accuracy':>9} {'best':>7} {'compression':>11} {'last death':>10}")
    parts = []
    for j, r in zip(jobs, results):
        h = r["history"]
        acc, comp = h[-1]["test_accuracy"], h[-1]["compression"]
        print(f"{j['label']:>10} {acc:9.4f} {max(m['test_accuracy'] for m in h):7.4f} {comp:11.3f} {str(last_death_epoch(h)):>10}")
        parts.append(f"unpruned={acc:.4f}" if not j["pruned"] else f"{j['label']}={acc:.4f}/{comp:.3f}")
    print("RESULT " + " ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
