"""The study's lock: the processes of a study ask for trials (so the budget is never
overshot), open the study and its MLflow parent run, recover lost trials and write the
outputs one at a time.

* PostgreSQL storage: a session-level advisory lock of the database server
  (``pg_advisory_lock``), so it holds across machines; the server drops it when its
  holder's connection goes, a worker killed mid-lock included.
* Journal file, SQLite file (one machine): Optuna's own lock file for journals,
  :class:`optuna.storages.journal.JournalFileOpenLock`, next to the storage. Its holder
  keeps it fresh (:data:`KEEP_ALIVE` s), so the lock of a killed holder, which goes stale,
  is broken after :data:`GRACE` s while a live holder is never broken, however long it
  writes.
* Any other RDB URL: the same lock file in the output folder, which serialises the
  processes of this machine only (the budget may then be overshot by one trial per other
  machine).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Optional

from optuna.storages.journal import JournalFileOpenLock

from dpap.search.storage_url import is_rdb_url, storage_error

GRACE = 30
"""Seconds after which a lock file nobody keeps fresh is taken to be a dead holder's."""
KEEP_ALIVE = 5.0
"""Seconds between the holder's touches of its lock file."""


def is_postgres_url(storage: str) -> bool:
    return storage.startswith(("postgresql://", "postgresql+", "postgres://"))


class FileStudyLock:
    """:class:`~optuna.storages.journal.JournalFileOpenLock` on ``path`` (the lock file is
    ``path + ".lock"``), refreshed while held. Reusable, not reentrant."""

    def __init__(self, path: str | Path, storage: str):
        self.storage = storage
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_error(storage, exc) from None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.lock = JournalFileOpenLock(str(self.path), grace_period=GRACE)
        self.lock_file = Path(f"{self.path}.lock")
        self._stop: Optional[threading.Event] = None
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "FileStudyLock":
        try:
            self.lock.acquire()
        except OSError as exc:
            raise storage_error(self.storage, exc) from None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep_alive, args=(self._stop,), daemon=True, name="dpap-study-lock")
        self._thread.start()
        return self

    def _keep_alive(self, stop: threading.Event) -> None:
        while not stop.wait(KEEP_ALIVE):
            with contextlib.suppress(OSError):
                os.utime(self.lock_file)

    def __exit__(self, *exc) -> None:
        assert self._stop is not None and self._thread is not None
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(RuntimeError):  # broken by another process: nothing to release
            self.lock.release()

    def close(self) -> None:
        """Nothing to close (the lock file exists only while held)."""


class PostgresStudyLock:
    """A session-level advisory lock of the PostgreSQL server of ``url``, keyed by ``name``
    (the study's), taken on a connection of its own that stays open between holdings (a
    new connection costs ~15 ms, mostly its password exchange; one that broke is made
    again). Reusable, not reentrant; :meth:`close` ends the connection."""

    def __init__(self, url: str, name: str):
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        self.storage = url
        self.engine = sqlalchemy.create_engine(url, poolclass=NullPool)
        digest = hashlib.sha256(f"dpap-search:{name}".encode()).digest()
        self.key = int.from_bytes(digest[:8], "big", signed=True)
        self._conn = None

    def __enter__(self) -> "PostgresStudyLock":
        import sqlalchemy

        for attempt in range(2):  # a kept connection may have broken (server restarted): once more, anew
            try:
                if self._conn is None:
                    self._conn = self.engine.connect()
                self._conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
                self._conn.commit()
                return self
            except sqlalchemy.exc.SQLAlchemyError:
                self.close()
                if attempt:
                    raise  # the caller names the storage (dpap.search.storage.storage_errors)
        raise AssertionError("unreachable")  # pragma: no cover

    def __exit__(self, *exc) -> None:
        import sqlalchemy

        try:
            self._conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            self._conn.commit()
        except sqlalchemy.exc.SQLAlchemyError:
            self.close()  # the connection is gone, and the lock with it

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


def schema_lock(storage: str) -> contextlib.AbstractContextManager:
    """The lock under which a storage's tables are created: Optuna's RDB storage creates
    them when missing, and two processes doing so at once on a fresh database collide
    (``duplicate key value violates unique constraint``). PostgreSQL: an advisory lock;
    SQLite: a lock file in the temporary folder, named by the database's path (its own
    folder may be read-only: SQLite then says so); else none needed (a journal file)."""
    if is_postgres_url(storage):
        return _held_once(PostgresStudyLock(storage, "schema"))
    if storage.startswith("sqlite:///"):
        key = hashlib.sha256(str(Path(storage[len("sqlite:///"):]).resolve()).encode()).hexdigest()[:16]
        return FileStudyLock(Path(tempfile.gettempdir()) / f"dpap-optuna-schema-{key}", storage)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _held_once(lock: PostgresStudyLock):
    try:
        with lock:
            yield
    finally:
        lock.close()


def study_lock(storage: str, out_dir: str | Path, study_name: str) -> FileStudyLock | PostgresStudyLock:
    """The lock of the study ``study_name`` in ``storage`` (see the module's text); use it
    as ``with lock: ...``, as often as needed. A lock file that cannot be made is a
    :class:`~dpap.search.errors.SearchError` naming the storage; a database that cannot be
    reached raises its own error, for :func:`~dpap.search.storage.storage_errors`."""
    if is_postgres_url(storage):
        return PostgresStudyLock(storage, f"study:{study_name}")
    if not is_rdb_url(storage):
        return FileStudyLock(f"{storage}.{study_name}.study", storage)
    if storage.startswith("sqlite:///"):
        return FileStudyLock(f"{storage[len('sqlite:///'):]}.{study_name}.study", storage)
    return FileStudyLock(Path(out_dir) / f".{study_name}.study", storage)
