"""An exclusive lock between the processes of one machine (``fcntl.flock`` on a lock file).

Used where several ``dpap search`` processes (or the workers of one) share something that
has no lock of its own: asking a study for a trial without overshooting its budget, opening
the study and its MLflow parent run once, creating a fresh MLflow SQLite store, and writing
the search's outputs. ``flock`` locks belong to the open file, so a process that dies
releases its lock at once. Not for files on NFS (``flock`` is local there).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created, with its folder, when missing) for the
    ``with`` block; blocks until no other process holds it. No-op where ``fcntl`` is
    missing (not POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
