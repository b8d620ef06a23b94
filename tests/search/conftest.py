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
    pruning.dpap.conv.protect: {{low: 1.0, high: 6.0}}
    pruning.dpap.epsilon: {{low: 0.6, high: 1.6}}
    pruning.dpap.fc.beta: {{low: 0.3, high: 1.0}}
    pruning.dpap.fc.eta: {{low: 5.0, high: 30.0, log: true}}
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


def _communicate_all(procs, timeout: float) -> list[tuple[str, str]]:
    outs = []
    try:
        for proc in procs:
            outs.append(proc.communicate(timeout=timeout))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return outs


@pytest.fixture
def communicate_all():
    """``communicate_all(procs, timeout)``: every process's ``(stdout, stderr)``; any still
    running at the timeout is killed, so no worker outlives its test."""
    return _communicate_all


@pytest.fixture
def run_together():
    """``run(cmd, n, cwd, env, timeout)``: start ``n`` copies of ``cmd`` at once, wait for
    all (:func:`communicate_all`), assert each exited 0 with no traceback, and return
    their ``(stdout, stderr)``."""
    import subprocess

    def run(cmd, n, cwd, env, timeout):
        procs = [subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n)]
        outs = _communicate_all(procs, timeout)
        for proc, (out, err) in zip(procs, outs):
            assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-2000:]}\n{err[-3000:]}"
            assert "Traceback" not in err, err[-3000:]
        return outs

    return run


# ------------------------------------------------------- PostgreSQL and an MLflow server

ROOT = Path(__file__).resolve().parents[2]
CANNOT_INSTALL = ("apt-get could not install", "installing it needs root", "there is no apt-get here")
"""What tools/postgres.sh says when PostgreSQL is missing and cannot be installed."""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """A PostgreSQL server started by the repository's ``tools/postgres.sh`` (loopback, a
    free port, its own folder); :meth:`createdb` gives each test a fresh database."""

    def __init__(self, env: dict, url: str):
        self.env = env
        self.url = url

    def createdb(self, name: str) -> str:
        import subprocess

        r = subprocess.run([str(ROOT / "tools" / "postgres.sh"), "createdb", name], env=self.env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()


@pytest.fixture(scope="session")
def postgres():
    """``tools/postgres.sh start`` in a temporary folder (installs Debian's postgresql when
    missing); skipped, with the script's line, only where it cannot be installed."""
    import shutil
    import subprocess
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="dpap-pg-"))
    folder.chmod(0o755)  # the server's user (postgres) must reach its data below
    env = dict(os.environ, DPAP_PG_DIR=str(folder / "pg"), DPAP_PG_PORT=str(free_port()))
    script = str(ROOT / "tools" / "postgres.sh")
    r = subprocess.run([script, "start"], env=env, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        if any(s in r.stderr for s in CANNOT_INSTALL):
            pytest.skip(f"no PostgreSQL here: {r.stderr.strip()}")
        pytest.fail(f"tools/postgres.sh start failed: {r.stderr.strip()}")
    try:
        yield Postgres(env, r.stdout.strip())
    finally:
        subprocess.run([script, "stop"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_storage(postgres, request) -> str:
    """A fresh PostgreSQL database for this test's study: its URL."""
    import hashlib

    name = "t_" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]
    return postgres.createdb(name)


@pytest.fixture(scope="session")
def mlflow_server(postgres):
    """``tools/mlflow_server.sh start``: an MLflow server on loopback with the test
    PostgreSQL's database ``mlflow`` as backend store and a temporary artifact folder.
    Yields ``(tracking URI, artifact folder)``."""
    import shutil
    import subprocess
    import sys
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="dpap-mlflow-"))
    env = dict(postgres.env, DPAP_MLFLOW_DIR=str(folder), DPAP_MLFLOW_PORT=str(free_port()), PYTHON=sys.executable)
    script = str(ROOT / "tools" / "mlflow_server.sh")
    r = subprocess.run([script, "start"], env=env, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        log = (folder / "server.log").read_text()[-3000:] if (folder / "server.log").exists() else ""
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"tools/mlflow_server.sh start failed: {r.stderr.strip()}\n{log}")
    try:
        yield r.stdout.strip(), folder / "artifacts"
    finally:
        subprocess.run([script, "stop"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)
