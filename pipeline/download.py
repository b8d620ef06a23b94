"""Download stage: fetch and verify the data set named in params.yaml (``data.name``).

    python pipeline/download.py [--params params.yaml] [--offline] [--checksums FILE]

Writes ``<data.raw_dir>/<data.name>/`` with a ``MANIFEST.json`` of sha256 checksums.
Files are verified by content against the published checksums; your own checksums
(``data.checksums`` in params.yaml, or ``--checksums FILE`` in the format ``sha256sum``
prints) replace them for the files they name, with a one-line warning on stderr.
Errors (unknown data set, no source, checksum mismatch) print ``error: ...`` and exit 1.
"""

from __future__ import annotations

import sys

import _cli


def main(argv: list[str] | None = None) -> int:
    ap = _cli.parser(__doc__.splitlines()[0], tracking=False)
    ap.add_argument("--offline", action="store_true", help="never touch the network (same as DPAP_OFFLINE=1)")
    ap.add_argument("--checksums", metavar="FILE",
                    help="your own checksums ('<sha256>  <file name>' lines, as sha256sum prints), trusted instead "
                         "of the published ones for the files they name (over data.checksums)")
    args = ap.parse_args(argv)
    from dpap.config import load_params
    from dpap.data import download, raw_root
    from dpap.data.checksums import read_checksum_file
    from dpap.runtime.outputs import is_output_fault, output_error

    cfg = load_params(args.params).data  # validated before anything is touched
    own = read_checksum_file(args.checksums) if args.checksums else None
    try:
        root = download(cfg, checksums=own, checksums_from=args.checksums or "checksums=",
                        offline=True if args.offline else None, progress=True, log=print)
    except OSError as exc:  # a full or read-only disk, a file where a folder should be
        if not is_output_fault(exc):
            raise
        raise output_error(exc, exc.filename or raw_root(cfg)) from None
    print(f"download: {cfg.name} ready in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(_cli.main_guard(main))
