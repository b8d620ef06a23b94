"""Params stage: validate the whole params.yaml (every key, type and range) in well under
a second, on every ``dvc repro`` that follows an edit of the file, even when the edit
touches no key a later stage tracks (a typo such as ``train.lrr``).

    python pipeline/check_params.py [--params params.yaml]

A bad file prints one line, ``error: params.yaml: <key>: ...``, and exits 1.
"""

from __future__ import annotations

import sys

import _cli


def main(argv: list[str] | None = None) -> int:
    args = _cli.parser(__doc__.splitlines()[0], tracking=False).parse_args(argv)
    from dpap.config import load_params

    cfg = load_params(args.params)
    p = cfg.pruning
    protocol = getattr(p.settings, "protocol", None)
    method = (f"{p.method} ({protocol} protocol)" if protocol else p.method) if p.enabled else "no pruning"
    print(f"params: {args.params} is valid ({cfg.data.name}, {cfg.model.arch}, {cfg.train.epochs} epochs, {method})")
    return 0


if __name__ == "__main__":
    sys.exit(_cli.main_guard(main))
