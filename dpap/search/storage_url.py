"""A study's storage as a string: journal file or RDB URL, how messages show it, and the
one-line error for a storage that cannot be used. Used by :mod:`dpap.search.storage` and
:mod:`dpap.search.locks` alike."""

from __future__ import annotations

from dpap.runtime.urls import is_url, masked_url
from dpap.search.errors import SearchError


def is_rdb_url(storage: str) -> bool:
    """Whether ``storage`` is an RDB URL (else a journal file's path)."""
    return is_url(storage)


def shown_storage(storage: str) -> str:
    """``storage`` as messages and MLflow tags show it: a URL's password masked."""
    return masked_url(storage)


def storage_error(storage: str, exc: BaseException, what: str = "cannot open it") -> SearchError:
    """One line for a storage that cannot be used: which, ``what`` went wrong, why, and
    what to do."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename and str(exc.filename) != storage else ""
        reason = f"{exc.strerror}{where}"
    else:
        reason = " ".join(str(exc).strip().split("\n")[0].split())[:200] or type(exc).__name__
    missing = next((e.name for e in (exc, exc.__cause__, exc.__context__) if isinstance(e, ImportError) and e.name), None)
    if missing:
        reason = f"its database driver, Python module {missing!r}, is not installed"
    if what != "cannot open it":
        hint = "check that the database server is up, then run the same command again: the study resumes"
    elif isinstance(exc, ImportError):
        hint = "install the driver (e.g. pip install 'psycopg[binary]' for postgresql+psycopg://), or use a journal file: --storage search/optuna.journal"
    elif not is_rdb_url(storage):
        hint = "pass a file in a writable folder with --storage (search.storage), e.g. --storage search/optuna.journal"
    elif storage.startswith("sqlite"):
        hint = "check that its folder exists and is writable, or pass another --storage (search.storage)"
    else:
        hint = "check that the database server is up and the URL's host, port, user and database are right, or use a journal file: --storage search/optuna.journal"
    return SearchError(f"search storage {shown_storage(storage)}: {what} ({reason}); {hint}")
