"""Where a study lives: a journal file or an RDB URL, opened with one-line errors, and the
study's lock."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import optuna

from ..file_lock import file_lock
from .errors import SearchError


def is_rdb_url(storage: str) -> bool:
    return "://" in storage


def make_storage(storage: str) -> optuna.storages.BaseStorage:
    """A journal file (``search/optuna.journal``, safe for several processes on one machine)
    or an RDB URL (``sqlite:///...``, ``postgresql://...``, with a heartbeat so a trial of a
    dead worker on another machine is failed). A storage that cannot be created, written or
    reached is a :class:`SearchError` (:func:`storage_error`)."""
    with storage_errors(storage):
        if is_rdb_url(storage):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    storage,
                    heartbeat_interval=60,
                    grace_period=180,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
                )
        path = Path(storage)
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def shown_storage(storage: str) -> str:
    """``storage`` as messages and MLflow tags show it: a URL's password masked."""
    if not is_rdb_url(storage):
        return storage
    try:
        from sqlalchemy.engine import make_url

        return make_url(storage).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL sqlalchemy can parse: the RDB storage says so
        return storage


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


def storage_error(storage: str, exc: BaseException) -> SearchError:
    """One line for a storage that cannot be used: which, why, and what to do."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename and str(exc.filename) != storage else ""
        reason = f"{exc.strerror}{where}"
    else:
        reason = " ".join(str(exc).strip().split("\n")[0].split())[:200] or type(exc).__name__
    missing = next((e.name for e in (exc, exc.__cause__, exc.__context__) if isinstance(e, ImportError) and e.name), None)
    if missing:
        reason = f"its database driver, Python module {missing!r}, is not installed"
    if isinstance(exc, ImportError):
        hint = "install the driver (e.g. pip install 'psycopg[binary]' for postgresql+psycopg://), or use a journal file: --storage search/optuna.journal"
    elif not is_rdb_url(storage):
        hint = "pass a file in a writable folder with --storage (search.storage), e.g. --storage search/optuna.journal"
    elif storage.startswith("sqlite"):
        hint = "check that its folder exists and is writable, or pass another --storage (search.storage)"
    else:
        hint = "check that the database server is up and the URL's host, port, user and database are right, or use a journal file: --storage search/optuna.journal"
    return SearchError(f"search storage {shown_storage(storage)}: cannot open it ({reason}); {hint}")


@contextlib.contextmanager
def storage_errors(storage: str):
    """Turn the errors of a storage that cannot be created, written or reached (a read-only
    folder, a file where a folder should be, a server nobody listens for, a missing
    database driver) into one :class:`SearchError`."""
    try:
        yield
    except SearchError:
        raise
    except _storage_error_types() as exc:
        raise storage_error(storage, exc) from None


def _lock_path(storage: str, out_dir: Path, study_name: str) -> Path:
    if not is_rdb_url(storage):
        return Path(storage + f".{study_name}.lock")
    if storage.startswith("sqlite:///"):
        return Path(storage[len("sqlite:///"):] + f".{study_name}.lock")
    return out_dir / f".{study_name}.lock"


@contextlib.contextmanager
def study_lock(storage: str, out_dir: Path, study_name: str):
    """The study's lock file (next to a journal or SQLite file, else in ``out_dir``), held
    for the ``with`` block: the processes of this machine ask for trials, open the study
    and its MLflow parent run, and write the outputs one at a time. A lock file that
    cannot be made is a :class:`SearchError` naming the storage."""
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(file_lock(_lock_path(storage, Path(out_dir), study_name)))
    except OSError as exc:
        raise storage_error(storage, exc) from None
    with stack:
        yield
