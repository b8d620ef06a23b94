"""Preprocess stage: verified raw files -> ``train.pt``/``val.pt``/``test.pt`` + ``meta.json``.

    python pipeline/preprocess.py [--params params.yaml]

Reads ``<data.raw_dir>/<data.name>/`` (checked against its MANIFEST.json) and replaces
``<data.processed_dir>/<data.name>/`` atomically. Errors print ``error: ...``, exit 1.
"""

from __future__ import annotations

import sys

import _cli


def main(argv: list[str] | None = None) -> int:
    ap = _cli.parser(__doc__.splitlines()[0], tracking=False)
    ap.add_argument("--workers", type=int, default=None, help="processes for event binning (default: CPUs, max 8)")
    args = ap.parse_args(argv)
    from dpap.config import load_params
    from dpap.data import preprocess, processed_root
    from dpap.runtime.outputs import is_output_fault, output_error

    cfg = load_params(args.params).data  # validated before anything is touched
    try:
        out = preprocess(cfg, progress=True, log=print, workers=args.workers)
    except OSError as exc:  # a full or read-only disk, a file where a folder should be
        if not is_output_fault(exc):
            raise
        raise output_error(exc, exc.filename or processed_root(cfg)) from None
    print(f"preprocess: {cfg.name} written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(_cli.main_guard(main))
