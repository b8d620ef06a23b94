"""Shared plumbing of the thin stage scripts in ``pipeline/``.

A stage script parses ``--params`` (default ``params.yaml``), calls the library, and lets
:func:`main_guard` turn the project's exceptions into one line on stderr
(``error: <message>``) and exit status 1. No traceback for a user error; a real bug
(any other exception) still shows its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

# The scripts run as ``python pipeline/<stage>.py``; make ``import _cli`` and ``import dpap``
# work from a source checkout that was not ``pip install``-ed.
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))


def parser(description: str, tracking: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
    if tracking:
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow (also: DPAP_MLFLOW=0)")
    return p


def mlflow_enabled(args: argparse.Namespace) -> bool:
    return not args.no_mlflow and os.environ.get("DPAP_MLFLOW", "1") not in ("0", "false", "no")


def main_guard(fn: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run the stage ``fn(argv)`` behind dpap's one front door (:func:`dpap.runtime.entry.guarded`):
    ``error: <one line>`` and the error's exit status (docs/faults.md); interrupted: 130,
    the checkpoint kept."""
    from dpap.runtime.entry import guarded

    return guarded(lambda: fn(argv), interrupted="interrupted; the checkpoint is kept: run the stage (or `dvc repro`) again to resume")


