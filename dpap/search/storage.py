"""Where a study lives: a journal file (one machine) or an RDB URL (PostgreSQL: several
machines), opened with one-line errors."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Callable, Optional

import optuna
from optuna.storages.journal import JournalFileBackend

from dpap.search.errors import SearchError
from dpap.search.locks import schema_lock
from dpap.search.storage_url import is_rdb_url, shown_storage, storage_error


def make_storage(
    storage: str,
    *,
    heartbeat_interval: int = 60,
    grace_period: int = 180,
    on_stale: Optional[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = None,
) -> optuna.storages.BaseStorage:
    """A journal file (``search/optuna.journal``: several processes on one machine) or an
    RDB URL (``postgresql+psycopg://user:password@host:port/db``: workers on several
    machines; ``sqlite:///...``).

    An RDB storage gets Optuna's heartbeat: a running trial records one every
    ``heartbeat_interval`` s (:func:`dpap.search.recovery.heartbeat`), and a trial silent for
    ``grace_period`` s is failed by the next worker that looks
    (:func:`optuna.storages.fail_stale_trials`), which then calls ``on_stale(study,
    trial)`` (the search's :class:`~dpap.search.recovery.TrialRecovery`: Optuna's
    :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback`). A journal has no heartbeat:
    its workers are on this machine, and a dead one's trial is found by its process
    (:mod:`dpap.search.recovery`).

    A storage that cannot be created, written or reached is a :class:`SearchError`
    (:func:`storage_error`)."""
    with storage_errors(storage):
        if is_rdb_url(storage):
            with schema_lock(storage), warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    storage,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                    heartbeat_stale_trial_callback=on_stale,
                )
        path = Path(storage)
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def storage_key(storage: str) -> str:
    """One name per storage, whatever the working directory: a journal file's or SQLite
    file's absolute path, any other URL without its password. Tags the study's MLflow
    parent run (``optuna.storage``), so every process of the study finds the same one."""
    if not is_rdb_url(storage):
        return str(Path(storage).resolve())
    if storage.startswith("sqlite:///"):
        return "sqlite:///" + str(Path(storage[len("sqlite:///"):]).resolve())
    return shown_storage(storage)


def _storage_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [OSError, ImportError, optuna.exceptions.StorageInternalError]
    try:
        import sqlalchemy.exc

        types.append(sqlalchemy.exc.SQLAlchemyError)
    except ImportError:  # pragma: no cover - journal storages only
        pass
    return tuple(types)


def is_storage_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is the database's (unreachable, gone, refusing), not a trial's."""
    try:
        import sqlalchemy.exc

        if isinstance(exc, sqlalchemy.exc.SQLAlchemyError):
            return True
    except ImportError:  # pragma: no cover
        pass
    return isinstance(exc, optuna.exceptions.StorageInternalError)


@contextlib.contextmanager
def storage_errors(storage: str, what: str = "cannot open it"):
    """Turn the errors of a storage that cannot be created, written or reached (a read-only
    folder, a file where a folder should be, a server nobody listens for, a missing
    database driver) into one :class:`SearchError`. With another ``what`` (a storage lost
    after it was opened: ``"lost it mid-search"``), only the database's errors are turned
    (a trial's own errors are the trial's, a file's are the output's)."""
    types = _storage_error_types() if what == "cannot open it" else tuple(t for t in _storage_error_types() if not issubclass(t, (OSError, ImportError)))
    try:
        yield
    except SearchError:
        raise
    except types as exc:
        raise storage_error(storage, exc, what) from None
