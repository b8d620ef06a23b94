"""Download stage: fetch and verify the data set named in params.yaml (``data.name``).

    python pipeline/download.py [--params params.yaml] [--offline]

Writes ``<data.raw_dir>/<data.name>/`` with a ``MANIFEST.json`` of sha256 checksums.
Errors (unknown data set, no source, checksum mismatch) print ``error: ...`` and exit 1.
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
    ap.add_argument("--offline", action="store_true", help="never touch the network (same as DPAP_OFFLINE=1)")
    args = ap.parse_args(argv)
    from dpap.data import DataError, download

    try:
        cfg = load_params(args.params).data
        root = download(cfg, offline=True if args.offline else None, progress=True, log=print)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"download: {cfg.name} ready in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
