"""Writing the search's output files whole (a reader never sees half of one)."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Write ``path`` whole: ``write(tmp)`` fills a temporary file in the same folder (same
    suffix, so writers that go by it pick the format), which then replaces ``path`` in one
    step (``os.replace``). Readers, and other processes writing the same file, never see a
    partial one."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{secrets.token_hex(4)}{path.suffix}")  # created by write(), usual mode
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
