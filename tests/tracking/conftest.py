"""Fixtures of the tracking tests: a real MLflow store, a SQLite file in the test's
temporary folder."""

import pytest


@pytest.fixture
def store_uri(tmp_path, monkeypatch) -> str:
    """A ``sqlite:///`` MLflow store in ``tmp_path`` (created by its first opening), also
    the default store (``MLFLOW_TRACKING_URI``)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
