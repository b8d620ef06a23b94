"""Not collected by the suite (the name is not ``test_*.py``): the tests of
``test_first_hour.py`` run it in a pytest of its own, as a user's ``pytest`` would, and
check what it leaves behind. It does what the suite's tests do that once left files in
the machine's temporary folder: MLflow SQLite stores (their creation lock), a search
study lock, a server folder, pytest's own ``tmp_path``."""

import tempfile
from pathlib import Path


def test_uses_what_once_left_files_behind(tmp_path):
    from dpap.search.locks import schema_lock
    from dpap.tracking.store import creation_lock_path, open_store

    db = tmp_path / "mlflow.db"
    open_store(f"sqlite:///{db}")
    lock = creation_lock_path(db)
    assert lock.is_file() and lock.name.startswith("dpap-mlflow-store-")
    server = Path(tempfile.mkdtemp(prefix="dpap-pg-"))  # as the PostgreSQL fixture makes one
    (server / "postmaster.pid").write_text("0\n")
    with schema_lock(f"sqlite:///{tmp_path / 'optuna.db'}"):  # dpap-optuna-schema-<key>
        pass
    (tmp_path / "x.txt").write_text("pytest's own folder")


def test_one_more_worker_file(tmp_path):
    from dpap.tracking.store import creation_lock_path, open_store

    open_store(f"sqlite:///{tmp_path / 'other.db'}")
    assert creation_lock_path(tmp_path / "other.db").is_file()
