"""Fixtures of the search tests: a small processed digits set, a tiny params.yaml, and a
real MLflow sqlite store and Optuna journal in tmp folders (no mocks)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ARCH = "8C3-AP2-32FC-10FC"


@pytest.fixture(scope="session")
def processed_root(tmp_path_factory) -> Path:
    """``<root>/digits``: digits through the real download/preprocess stages, 300 samples per split."""
    from dpap.config import DataConfig
    from dpap.data import download, preprocess

    root = tmp_path_factory.mktemp("data")
    cfg = DataConfig(name="digits", raw_dir=str(root / "raw"), processed_dir=str(root / "processed"), limit=300)
    download(cfg)
    preprocess(cfg)
    return root / "processed"


PARAMS = """\
# tiny settings for the search tests
data:
  name: digits
  processed_dir: {processed}   # the test's processed data
model:
  arch: {arch}
  time_steps: 2
train:
  epochs: {epochs}
  batch_size: 100
  threads: 1        # same float sums in every process: same pruning decisions
search:
  target: {target}
  tolerance: {tolerance}
  trials: {trials}
  storage: {storage}
  ranges:
    conv.protect: {{low: 1.0, high: 6.0}}
    epsilon: {{low: 0.6, high: 1.6}}
    fc.beta: {{low: 0.3, high: 1.0}}
    fc.eta: {{low: 5.0, high: 30.0, log: true}}
"""


@pytest.fixture
def make_params(tmp_path, processed_root):
    def make(epochs=2, target=0.5, tolerance=0.45, trials=3, name="params.yaml") -> Path:
        p = tmp_path / name
        p.write_text(PARAMS.format(processed=processed_root, arch=ARCH, epochs=epochs, target=target, tolerance=tolerance, trials=trials, storage=tmp_path / "search" / "optuna.journal"))
        return p

    return make


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def dpap_cmd() -> list[str]:
    """The ``dpap`` command as a subprocess (the console script's module)."""
    import sys

    return [sys.executable, "-m", "dpap.cli"]


@pytest.fixture
def subprocess_env(mlflow_uri) -> dict:
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = mlflow_uri
    env["PYTHONWARNINGS"] = "ignore"
    return env
