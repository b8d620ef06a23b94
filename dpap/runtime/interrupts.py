"""Ctrl-C and SIGTERM that wait for a store write to finish.

A ``KeyboardInterrupt`` raised in the middle of an MLflow write (a SQLite commit) leaves
that connection holding the database lock: the write that marks the run KILLED then
fails with "database is locked" and a traceback. The stage scripts install
:func:`interrupt_handler` for SIGINT and SIGTERM; inside :func:`shielded` blocks (the
MLflow callback's writes) a signal is remembered and raised as ``KeyboardInterrupt``
when the outermost block ends, everywhere else at once, as Python's own handler does.

Signal handling is process-wide by nature, so the one piece of state here is too: how
deep the current thread is in shielded blocks and which signal waits.
"""

from __future__ import annotations

import contextlib
import threading

_state = threading.local()


def _depth() -> int:
    return getattr(_state, "depth", 0)


def interrupt_handler(signum, frame) -> None:
    """A signal handler: ``KeyboardInterrupt`` now, or when the shielded block ends."""
    if _depth() > 0:
        _state.pending = signum
        return
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def shielded():
    """Defer SIGINT/SIGTERM (where :func:`interrupt_handler` is installed) to the end of
    the block; blocks nest."""
    _state.depth = _depth() + 1
    try:
        yield
    finally:
        _state.depth -= 1
        pending = getattr(_state, "pending", None)
        if _state.depth == 0 and pending is not None:
            _state.pending = None
            raise KeyboardInterrupt(f"signal {pending}")
