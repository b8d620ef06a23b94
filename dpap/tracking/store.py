"""The MLflow store: where it is, opening it with one-line errors, its locks, and the
experiments in it.

A SQLite store another process holds locked, a file that is not a database, a server that
is down: each is one :class:`TrackingStoreError` line saying what to do, within seconds
(MLflow alone waits and retries for long, then logs a traceback). The first opening of a
fresh SQLite store is serialised among the processes of the machine, so they do not race
to create MLflow's tables.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import sqlite3
import tempfile
from contextlib import nullcontext
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

from mlflow.tracking import MlflowClient

from dpap.errors import DPAPError
from dpap.runtime.file_lock import file_lock
from dpap.tracking.provenance import project_root


class TrackingStoreError(DPAPError, RuntimeError):
    """The MLflow store cannot be used (not a database, locked, unreachable, unwritable)."""


LOCK_TIMEOUT_ENV = "DPAP_MLFLOW_LOCK_TIMEOUT"
"""Seconds to wait for a SQLite store another process holds locked before giving up with
one line (default :data:`LOCK_TIMEOUT`)."""
LOCK_TIMEOUT = 10.0

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
"""The experiment tag MLflow's UI reads to choose an experiment's view."""
EXPERIMENT_KIND = "custom_model_development"
"""The value of :data:`EXPERIMENT_KIND_TAG` for the model-training view (runs, charts of
metrics, models), not the GenAI view (traces, evaluations, prompts)."""


def sqlite_file(tracking_uri: str) -> Optional[Path]:
    """The database file of a ``sqlite:///`` URI (None for any other store)."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri[len("sqlite:///") :])
    return None


def lock_timeout() -> float:
    """:data:`LOCK_TIMEOUT_ENV` as seconds (default :data:`LOCK_TIMEOUT`)."""
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not raw:
        return LOCK_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise TrackingStoreError(f"{LOCK_TIMEOUT_ENV}={raw!r}: expected seconds >= 0, e.g. {LOCK_TIMEOUT_ENV}=10")
    return value


def _locked_message(db: Path, timeout: float) -> str:
    return (f"MLflow store {db}: locked by another process (still locked after {timeout:g} s; {LOCK_TIMEOUT_ENV}=SECONDS waits longer); "
            f"let that process finish or stop it (`fuser {db}` names it), or set MLFLOW_TRACKING_URI to another store, or pass --no-mlflow")


def check_not_locked(db: Path, timeout: Optional[float] = None) -> None:
    """Raise :class:`TrackingStoreError` when another process holds the SQLite store ``db``
    locked for longer than ``timeout`` seconds (default :func:`lock_timeout`).

    MLflow itself would wait 20 s per query (its ``busy_timeout``) and then log a traceback;
    this asks once, with the standard library, for the lock a writer needs (``BEGIN
    IMMEDIATE``, rolled back at once). A missing file or one that is not a database passes:
    MLflow creates the one and :func:`open_store` reports the other."""
    if not db.is_file():
        return
    timeout = lock_timeout() if timeout is None else timeout
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=rw", uri=True, timeout=timeout, isolation_level=None)
    except sqlite3.Error:
        return
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):  # "database is locked" (SQLITE_BUSY), "database table is locked"
            raise TrackingStoreError(_locked_message(db, timeout)) from None
    except sqlite3.Error:
        pass
    finally:
        conn.close()


def creation_lock_path(db: Path) -> Path:
    """The lock file that serialises the first opening of the SQLite store ``db`` among the
    processes of this machine (in the temporary folder, keyed by the file's absolute path,
    so nothing is added next to the store)."""
    key = hashlib.sha256(str(db.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"dpap-mlflow-store-{key}.lock"


def creation_lock(db: Path):
    """:func:`dpap.runtime.file_lock.file_lock` on :func:`creation_lock_path`."""
    return file_lock(creation_lock_path(db))


def _check_server(tracking_uri: str, timeout_s: float = 5.0) -> None:
    """For an ``http(s)://`` store: one TCP connection, so a server that is down is one
    line within seconds (MLflow's own client retries for minutes before it gives up)."""
    url = urlsplit(tracking_uri)
    if url.scheme not in ("http", "https") or not url.hostname:
        return
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
        socket.create_connection((url.hostname, port), timeout=timeout_s).close()
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise TrackingStoreError(
            f"MLflow store {tracking_uri}: cannot connect ({reason}); check that the server is up, "
            f"or set MLFLOW_TRACKING_URI, or pass --no-mlflow"
        ) from None


def open_store(tracking_uri: str) -> MlflowClient:
    """An :class:`~mlflow.tracking.MlflowClient` for ``tracking_uri``, after one cheap query
    that proves the store works; else :class:`TrackingStoreError` with one line saying
    what to do.

    For a SQLite store: first :func:`check_not_locked`; then the first query, which makes
    MLflow create (or check) its tables, runs under a file lock (:func:`creation_lock`), so
    several processes starting on a fresh ``mlflow.db`` at once do not race to create the
    same tables (MLflow would fail in all but one with ``table ... already exists``).
    MLflow's own log lines are held back meanwhile; the error, if any, is the one line."""
    _check_server(tracking_uri)
    db = sqlite_file(tracking_uri)
    if db is not None:
        check_not_locked(db)
    mlflow_log = logging.getLogger("mlflow")
    level = mlflow_log.level
    mlflow_log.setLevel(logging.CRITICAL)
    try:
        with creation_lock(db) if db is not None else nullcontext():
            client = MlflowClient(tracking_uri)
            client.search_experiments(max_results=1)
        return client
    except TrackingStoreError:
        raise
    except Exception as exc:  # sqlalchemy, sqlite3, MlflowException, OSError, requests ...
        reason = " ".join(str(exc).split("\n")[0].split()) or type(exc).__name__
        if db is not None and "database is locked" in reason:
            raise TrackingStoreError(_locked_message(db, 20)) from None
        where = str(db) if db is not None else tracking_uri
        if db is None:
            hint = "check that the server is up, "
        elif db.is_file():
            hint = f"move it aside (mv {where} {where}.broken) and run again for a fresh store, "
        else:
            hint = "check that its folder can be created and written, "
        raise TrackingStoreError(f"MLflow store {where}: {reason[:200]}; {hint}or set MLFLOW_TRACKING_URI, or pass --no-mlflow") from None
    finally:
        mlflow_log.setLevel(level)


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite store at the repository root
    (:func:`~dpap.tracking.provenance.project_root`)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{project_root() / 'mlflow.db'}"


def default_artifact_location(tracking_uri: str) -> Optional[str]:
    """For a SQLite store: ``<its folder>/mlartifacts`` as a ``file://`` URI, so artifacts
    land next to ``mlflow.db`` whatever the working directory (None: the server's
    default)."""
    db = sqlite_file(tracking_uri)
    if db is not None:
        return (db.parent / "mlartifacts").resolve().as_uri()
    return None


def get_or_create_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """The id of the experiment ``name``: restored when deleted, created (with its
    artifacts at :func:`default_artifact_location`) when missing, also when a parallel
    process creates it at the same moment. The experiment opens in MLflow's model-training
    view (:data:`EXPERIMENT_KIND_TAG` = :data:`EXPERIMENT_KIND`, set when it is created
    and on an experiment that lacks the tag)."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=default_artifact_location(tracking_uri),
                                            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except Exception:  # created meanwhile by a parallel process
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    if EXPERIMENT_KIND_TAG not in exp.tags:
        _set_experiment_kind(client, exp.experiment_id)
    return exp.experiment_id


def _set_experiment_kind(client: MlflowClient, experiment_id: str) -> None:
    """Tag the experiment for the model-training view. Two processes tagging it at once may
    collide on the tag's row; the loser finds the tag set."""
    try:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    except Exception:
        if EXPERIMENT_KIND_TAG not in client.get_experiment(experiment_id).tags:
            raise
