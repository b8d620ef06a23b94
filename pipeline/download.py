"""Download stage: fetch and verify the data set named in params.yaml (``data.name``).

    python pipeline/download.py [--params params.yaml] [--offline]

Writes ``<data.raw_dir>/<data.name>/`` with a ``MANIFEST.json`` of sha256 checksums.
Errors (unknown data set, no source, checksum mismatch) print ``error: ...`` and exit 1.
"""

from __future__ import annotations

import sys

import _cli


def main(argv: list[str] | None = None) -> int:
    ap = _cli.parser(__doc__.splitlines()[0], tracking=False)
    ap.add_argument("--offline", action="store_true", help="never touch the network (same as DPAP_OFFLINE=1)")
    args = ap.parse_args(argv)
    from dpap.config import load_params
    from dpap.data import download, raw_root
    from dpap.outputs import is_output_fault, output_error

    cfg = load_params(args.params).data  # validated before anything is touched
    try:
        root = download(cfg, offline=True if args.offline else None, progress=True, log=print)
    except OSError as exc:  # a full or read-only disk, a file where a folder should be
        if not is_output_fault(exc):
            raise
        raise output_error(exc, exc.filename or raw_root(cfg)) from None
    print(f"download: {cfg.name} ready in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(_cli.main_guard(main))
