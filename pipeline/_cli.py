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


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types whose message is meant for the user (one line, no traceback)."""
    from dpap.user_errors import user_errors as errors

    return errors(FileNotFoundError)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


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
    """Run ``fn(argv)``; map user errors to ``error: <one line>`` and exit status 1 (also
    a write that a full or read-only disk refuses).
    SIGTERM is handled as Ctrl-C (``KeyboardInterrupt``): the stage ends what it must
    (the train stage marks its MLflow run KILLED and keeps the checkpoint) and exits 130.
    SIGINT is handled even when the parent ignored it (a shell does that to commands it
    starts in the background with ``&``). Both wait for an MLflow write in progress to
    end (:mod:`dpap.interrupts`). First, glibc is told to keep freed memory for the next
    step (:mod:`dpap.allocator`; ``DPAP_MALLOC=default`` leaves it as it is)."""
    import signal

    from dpap.allocator import keep_freed_memory
    from dpap.interrupts import interrupt_handler

    signal.signal(signal.SIGTERM, interrupt_handler)
    signal.signal(signal.SIGINT, interrupt_handler)
    try:
        keep_freed_memory()
        return int(fn(argv) or 0)
    except KeyboardInterrupt:
        print("error: interrupted; the checkpoint is kept: run the stage (or `dvc repro`) again to resume", file=sys.stderr)
        return 130
    except user_errors() as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:  # a full or read-only disk under a write the library did not wrap
        import errno

        from dpap.outputs import FULL, output_error

        if exc.errno not in (*FULL, errno.EROFS) or not exc.filename:
            raise
        print(f"error: {one_line(output_error(exc, exc.filename))}", file=sys.stderr)
        return 1
