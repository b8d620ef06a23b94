"""Writing result files: atomically, and with a one-line error when the disk says no.

Every file a stage leaves behind (``models/model.pt``, ``checkpoints/train.pt``,
``metrics.json``, ``plots/*``, the digits file and manifest of the download stage) goes
through :func:`atomic_write_bytes`: the bytes go to a temporary file in the target's own
folder (``.<name>.<pid>.<random>.tmp``, :func:`temp_beside`), are flushed to the disk, and
the temporary file is renamed over the target (:func:`os.replace`). A reader sees the old
file or the new one, never half of one. When the write fails (a read-only folder or file
system, a full disk, a file where a folder should be, a folder where the file should be)
the temporary file is removed, the old file stays as it was, and :class:`OutputError` names the path, says what is wrong and
how to fix it, in one line. :func:`check_writable` asks the same question before a long
computation, so a read-only ``models/`` stops the train stage before its first epoch.
"""

from __future__ import annotations

from dpap.errors import DPAPError

import contextlib
import errno
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Optional

FULL = (errno.ENOSPC, errno.EDQUOT)
DENIED = (errno.EACCES, errno.EPERM)


class OutputError(DPAPError, RuntimeError):
    """A result file could not be written. ``path``: the file; ``errno``: the cause."""

    def __init__(self, message: str, path: Path, errno_: Optional[int] = None):
        super().__init__(message)
        self.path = path
        self.errno = errno_


def _blocking_file(folder: Path) -> Optional[Path]:
    """The first component of ``folder`` (from the root down) that exists and is not a
    folder: a file where a folder is expected."""
    for p in reversed([folder, *folder.parents]):
        if p.exists() and not p.is_dir():
            return p
    return None


def is_output_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is the file system refusing a write (full, read-only, denied, a file
    where a folder should be): something the user fixes, not a bug."""
    return isinstance(exc, OSError) and exc.errno in (*FULL, *DENIED, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST)


def output_error(exc: OSError, path: str | Path) -> OutputError:
    """The one-line :class:`OutputError` for ``exc``, raised while writing ``path``."""
    path = Path(path)
    folder = path.parent
    shown = f"{folder}/" if str(folder) != "." else "the current folder"
    code = exc.errno
    if code in FULL:
        why = f"the disk is full (no space left on device); free some space on the disk holding {shown} and run again"
    elif code == errno.EROFS:
        why = f"{shown} is on a read-only file system; remount it read-write or run from a writable copy"
    elif code in DENIED:
        why = f"{shown} is not writable (permission denied); make it writable (chmod u+w {folder}) and run again"
    elif (blocker := _blocking_file(folder)) is not None:
        why = f"{blocker} is a file where a folder is expected; move it aside and run again"
    elif code == errno.EISDIR and path.is_dir():
        return OutputError(f"cannot write {path}: it is a folder, not a file; move it aside and run again", path, code)
    else:
        why = f"{exc.strerror or type(exc).__name__}"
    kept = f" ({path} is unchanged)" if path.exists() else ""
    return OutputError(f"cannot write {path}: {why}{kept}", path, code)


def temp_beside(path: str | Path, prefix: str = ".", suffix: str = ".tmp") -> Path:
    """A temporary file's name in ``path``'s folder, ``<prefix><name>.<pid>.<random><suffix>``:
    its own to this process and thread, so that processes writing the same file at once
    (two benchmarks fetching one data set) never write into, or move, each other's."""
    path = Path(path)
    return path.with_name(f"{prefix}{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


def process_running(pid: int) -> bool:
    """Whether process ``pid`` runs (on this machine): a temporary file named with it may
    still be written, one of a process that is gone is a leftover."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):
        return False
    except PermissionError:  # another user's
        return True
    return True


LEFTOVER_AGE_S = 3600.0
"""A temporary file or folder is taken for a killed run's leftover only when nothing in it
changed for this long: a process on another machine sharing the folder, whose pid this
machine cannot see, may still be writing it."""


def is_leftover(path: Path, pid: Optional[int]) -> bool:
    """Whether ``path``, a temporary file or folder named with process ``pid`` (None: a fixed
    name of an earlier version), is a killed run's leftover: its process does not run here
    and nothing in it changed for :data:`LEFTOVER_AGE_S`."""
    if pid is not None and process_running(pid):
        return False
    try:
        newest = path.lstat().st_mtime
    except OSError:
        return False
    if path.is_dir() and not path.is_symlink():
        for folder, dirs, files in os.walk(path, onerror=lambda e: None):
            for name in (*dirs, *files):
                with contextlib.suppress(OSError):
                    newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
    return time.time() - newest > LEFTOVER_AGE_S


def remove_quietly(path: Path) -> None:
    """Remove ``path`` (a folder with its contents, a file or a link); a failure is ignored."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def atomic_write_bytes(path: str | Path, data: bytes, temp_prefix: str = ".") -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder
    (:func:`temp_beside`, named with ``temp_prefix``) and :func:`os.replace`. Raises
    :class:`OutputError` (and leaves no temporary file, and the old ``path`` as it was)
    when the file system refuses."""
    path = Path(path)
    tmp = temp_beside(path, temp_prefix)
    created = False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        created = True
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        created = False
    except OSError as exc:
        if not is_output_fault(exc):
            raise
        raise output_error(exc, path) from None
    finally:
        if created:
            with contextlib.suppress(OSError):
                tmp.unlink()
    return path


def atomic_write_text(path: str | Path, text: str, temp_prefix: str = ".") -> Path:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    return atomic_write_bytes(path, text.encode(), temp_prefix)


def check_writable(*paths: str | Path) -> None:
    """Raise :class:`OutputError` unless each of ``paths`` can be written: its folder
    exists or can be made, a file can be created in it, and ``path`` is not a folder. A
    full disk cannot be told in advance; :func:`atomic_write_bytes` reports it."""
    for path in map(Path, paths):
        if path.is_dir():
            raise output_error(OSError(errno.EISDIR, os.strerror(errno.EISDIR)), path)
        probe = path.with_name(f".{path.name}.{os.getpid()}.probe.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666))
            probe.unlink()
        except OSError as exc:
            if not is_output_fault(exc):
                raise
            raise output_error(exc, path) from None
