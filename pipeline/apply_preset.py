"""Merge a paper preset (presets/<name>.yaml) into params.yaml, keeping its comments.

    python pipeline/apply_preset.py mnist-snn && dvc repro
    python pipeline/apply_preset.py --list

Presets: mnist-snn, mnist-sdsnn, nmnist-snn, dvs-gesture-snn, cifar10-snn, mnist-dnn, cifar10-dnn.
"""

from __future__ import annotations

import argparse
import sys

import _cli


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", nargs="?", help="preset name (file stem in presets/)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--list", action="store_true", help="list the presets")
    args = ap.parse_args(argv)
    from dpap.config.presets import apply_preset, available

    if args.list or not args.name:
        print("\n".join(available()))
        return 0 if args.list else 2
    changes = apply_preset(args.name, args.params)
    for k, v in changes.items():
        print(f"{k}: {v}")
    print(f"preset {args.name} merged into {args.params}; run `dvc repro` (or `dvc exp run`)")
    return 0


if __name__ == "__main__":
    sys.exit(_cli.main_guard(main))
