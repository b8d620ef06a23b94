"""Preprocess stage: verified raw files -> ``train.pt``/``val.pt``/``test.pt`` + ``meta.json``.

    python pipeline/preprocess.py [--params params.yaml]

Reads ``<data.raw_dir>/<data.name>/`` (checked against its MANIFEST.json) and replaces
``<data.processed_dir>/<data.name>/`` atomically. Errors print ``error: ...``, exit 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpap.config import ConfigError, load_params  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    ap.add_argument("--workers", type=int, default=None, help="processes for event binning (default: CPUs, max 8)")
    args = ap.parse_args(argv)
    from dpap.data import DataError, preprocess

    try:
        cfg = load_params(args.params).data
        out = preprocess(cfg, progress=True, log=print, workers=args.workers)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"preprocess: {cfg.name} written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
