"""dpap.tracking.store against real SQLite MLflow stores: experiments opened in the
model-training view, one-line errors for a locked or broken store."""

import sqlite3
import tempfile
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from dpap.tracking.store import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    LOCK_TIMEOUT,
    LOCK_TIMEOUT_ENV,
    TrackingStoreError,
    check_not_locked,
    creation_lock_path,
    default_artifact_location,
    default_tracking_uri,
    get_or_create_experiment,
    lock_timeout,
    open_store,
    sqlite_file,
)

TRAINING_VIEW = {"mlflow.experimentKind": "custom_model_development"}
"""The experiment tag MLflow 3's UI reads to open an experiment in its model-training view
(``ExperimentKind.CUSTOM_MODEL_DEVELOPMENT``), not the GenAI view."""


def _kind_tags(client: MlflowClient, exp_id: str) -> dict[str, str]:
    tags = client.get_experiment(exp_id).tags
    return {k: v for k, v in tags.items() if k == "mlflow.experimentKind"}


def test_the_training_view_tag_is_mlflows():
    assert {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND} == TRAINING_VIEW


def test_open_store_makes_a_new_experiment_in_the_training_view(store_uri, tmp_path):
    client = open_store(store_uri)
    assert (tmp_path / "mlflow.db").is_file()
    exp_id = get_or_create_experiment(client, "dpap", store_uri)
    exp = MlflowClient(store_uri).get_experiment(exp_id)
    assert exp.name == "dpap" and exp.lifecycle_stage == "active"
    assert _kind_tags(client, exp_id) == TRAINING_VIEW
    assert exp.artifact_location == (tmp_path / "mlartifacts").resolve().as_uri()
    assert get_or_create_experiment(client, "dpap", store_uri) == exp_id  # found, not made again


def test_an_existing_experiment_without_the_tag_gets_it(store_uri):
    client = open_store(store_uri)
    exp_id = MlflowClient(store_uri).create_experiment("older")  # made before the tag was set
    assert _kind_tags(client, exp_id) == {}
    assert get_or_create_experiment(client, "older", store_uri) == exp_id
    assert _kind_tags(client, exp_id) == TRAINING_VIEW


def test_a_kind_the_user_chose_is_kept(store_uri):
    client = open_store(store_uri)
    exp_id = MlflowClient(store_uri).create_experiment("chosen", tags={"mlflow.experimentKind": "genai_development"})
    get_or_create_experiment(client, "chosen", store_uri)
    assert _kind_tags(client, exp_id) == {"mlflow.experimentKind": "genai_development"}


def test_a_deleted_experiment_is_restored(store_uri):
    client = open_store(store_uri)
    exp_id = get_or_create_experiment(client, "dpap", store_uri)
    client.delete_experiment(exp_id)
    assert get_or_create_experiment(client, "dpap", store_uri) == exp_id
    assert client.get_experiment(exp_id).lifecycle_stage == "active"


@pytest.fixture
def locked_db(store_uri):
    """The store's file, held locked (``BEGIN EXCLUSIVE``) by another connection."""
    open_store(store_uri)
    db = sqlite_file(store_uri)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    yield db
    holder.execute("ROLLBACK")
    holder.close()


def test_check_not_locked_is_one_line_on_a_locked_store(locked_db):
    with pytest.raises(TrackingStoreError) as err:
        check_not_locked(locked_db, timeout=0.2)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"MLflow store {locked_db}: locked by another process (still locked after 0.2 s;"), msg
    assert LOCK_TIMEOUT_ENV in msg and "MLFLOW_TRACKING_URI" in msg and "--no-mlflow" in msg


def test_open_store_gives_up_on_a_locked_store_after_the_timeout(locked_db, store_uri, monkeypatch):
    monkeypatch.setenv(LOCK_TIMEOUT_ENV, "0.2")
    with pytest.raises(TrackingStoreError, match="locked by another process"):
        open_store(store_uri)


def test_check_not_locked_passes_a_free_a_missing_and_a_foreign_file(store_uri, tmp_path):
    open_store(store_uri)
    check_not_locked(sqlite_file(store_uri), timeout=0.2)
    check_not_locked(tmp_path / "missing.db", timeout=0.2)
    (tmp_path / "text.db").write_text("not a database\n" * 100)
    check_not_locked(tmp_path / "text.db", timeout=0.2)


def test_a_file_that_is_not_a_database_is_one_line(tmp_path):
    db = tmp_path / "mlflow.db"
    db.write_text("not a database\n" * 100)
    with pytest.raises(TrackingStoreError) as err:
        open_store(f"sqlite:///{db}")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"MLflow store {db}: ") and f"mv {db} {db}.broken" in msg, msg


def test_a_server_nobody_listens_on_is_one_line(refused_port):
    with pytest.raises(TrackingStoreError) as err:
        open_store(f"http://127.0.0.1:{refused_port}")
    msg = str(err.value)
    assert "\n" not in msg and "cannot connect" in msg and "--no-mlflow" in msg, msg


def test_lock_timeout_reads_seconds_from_the_environment(monkeypatch):
    monkeypatch.delenv(LOCK_TIMEOUT_ENV, raising=False)
    assert lock_timeout() == LOCK_TIMEOUT
    monkeypatch.setenv(LOCK_TIMEOUT_ENV, " 2.5 ")
    assert lock_timeout() == 2.5
    for bad in ("soon", "-1", "inf", "nan"):
        monkeypatch.setenv(LOCK_TIMEOUT_ENV, bad)
        with pytest.raises(TrackingStoreError, match=f"{LOCK_TIMEOUT_ENV}="):
            lock_timeout()


def test_store_locations(tmp_path, monkeypatch):
    assert sqlite_file(f"sqlite:///{tmp_path}/a.db") == tmp_path / "a.db"
    assert sqlite_file("http://mlflow:5000") is None
    assert default_artifact_location(f"sqlite:///{tmp_path}/a.db") == (tmp_path / "mlartifacts").as_uri()
    assert default_artifact_location("http://mlflow:5000") is None
    lock = creation_lock_path(tmp_path / "a.db")
    assert lock.parent == Path(tempfile.gettempdir()) and lock == creation_lock_path(tmp_path / "a.db")
    assert lock != creation_lock_path(tmp_path / "b.db")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert default_tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert default_tracking_uri() == "http://mlflow:5000"
