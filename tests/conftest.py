"""Fixtures shared by every test folder, and how the suite is spread over pytest-xdist's
workers (``-n auto --dist loadfile`` in pyproject.toml: a file's tests run on one worker,
so a module's fixtures are made once; a session fixture, such as the pipeline tests'
repository after ``dvc repro`` or the search tests' PostgreSQL and MLflow server, once
per worker that needs it).

Two more rules of the suite, kept here:

* **Nothing is left outside the repository.** The session gets one temporary folder
  (``TMPDIR`` for every process the tests start: pytest's own ``tmp_path`` folders, the
  MLflow stores' and Optuna's lock files, the servers' folders; also ``XDG_CACHE_HOME``,
  ``XDG_CONFIG_HOME`` and DVC's site cache) and removes it at its end; the compiled-kernel
  and font caches go to ``.pytest_cache/`` (``pytest --cache-clear`` empties them).
* **pytest installs nothing.** A test that needs a system package that is missing
  (Chromium for ``tests/ui``, PostgreSQL for the shared-storage tests, Debian's
  Fashion-MNIST) is skipped, its reason naming :data:`SETUP_COMMAND`, which installs them.
"""

import glob
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import pytest
import torch

SETUP_COMMAND = "bash tools/setup_test_services.sh"
"""Installs the system packages some tests need (pytest never does)."""
TMP_ENV = "DPAP_TEST_TMPDIR"
"""The session's temporary folder, set by the process that made it (workers, and any
pytest a test starts, use it and leave its removal to that process)."""
WITHOUT_ENV = "DPAP_TEST_WITHOUT"
"""Comma-separated services (``chromium``, ``postgresql``) to treat as missing, to see the
suite as a machine without them does."""


# ----------------------------------------------------------- the temporary folder


def pytest_configure(config):
    """Make the session's temporary folder, unless this process belongs to a session that
    has one, and point every temporary path of the tests (and of what they start) into it."""
    if os.environ.get(TMP_ENV):
        tempfile.tempdir = None  # a worker: TMPDIR is the session's already
        return
    folder = Path(tempfile.mkdtemp(prefix="dpap-tests-"))
    folder.chmod(0o711)  # PostgreSQL runs as its own user below it (tests/search)
    config._dpap_test_env = {k: os.environ.get(k) for k in (TMP_ENV, "TMPDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "DVC_SITE_CACHE_DIR",
                                                              "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "MPLCONFIGDIR",
                                                              "MLFLOW_DISABLE_TELEMETRY")}
    config._dpap_test_tmp = folder
    config._dpap_test_started = time.time() - 1
    os.environ[TMP_ENV] = str(folder)
    os.environ["TMPDIR"] = str(folder)
    # per-user caches and settings (onnxruntime's ~/.cache/Microsoft, MLflow's and DVC's
    # ~/.config/...), and DVC's /var/tmp/dvc/repo/<hash> per repository
    os.environ["XDG_CACHE_HOME"] = str(folder / "cache")
    os.environ["XDG_CONFIG_HOME"] = str(folder / "config")
    os.environ["DVC_SITE_CACHE_DIR"] = str(folder / "dvc")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    cache = config.cache if getattr(config, "cache", None) is not None else None
    for env, name in (("TORCHINDUCTOR_CACHE_DIR", "torchinductor"), ("TRITON_CACHE_DIR", "triton"), ("MPLCONFIGDIR", "matplotlib")):
        if not os.environ.get(env):  # compiled kernels, matplotlib's font list: kept between sessions
            os.environ[env] = str(cache.mkdir(name) if cache is not None else folder / name)
    tempfile.tempdir = None


DVC_SITE_CACHE = Path("/var/tmp/dvc/repo")
"""Where DVC keeps a cache per repository when ``DVC_SITE_CACHE_DIR`` is not passed on."""


def _sweep_dvc_site_cache(folder: Path, since: float) -> None:
    """Remove DVC's caches of this session's repositories (they name their files' paths,
    which lie in ``folder``) from :data:`DVC_SITE_CACHE`: tests that start ``dvc`` with a
    clean environment do not pass ``DVC_SITE_CACHE_DIR`` on."""
    if not DVC_SITE_CACHE.is_dir():
        return
    needle = str(folder).encode()
    for repo in DVC_SITE_CACHE.iterdir():
        try:
            files = [f for f in repo.rglob("*") if f.is_file()]
            if not any(f.stat().st_mtime >= since for f in files):
                continue  # untouched in this session: not ours
            if any(needle in f.read_bytes() for f in files if f.stat().st_size < 1 << 26):
                shutil.rmtree(repo, ignore_errors=True)
        except OSError:
            continue


def pytest_unconfigure(config):
    folder = getattr(config, "_dpap_test_tmp", None)
    if folder is None:
        return
    shutil.rmtree(folder, ignore_errors=True)
    _sweep_dvc_site_cache(folder, config._dpap_test_started)
    for key, value in config._dpap_test_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    tempfile.tempdir = None


# ------------------------------------------------------------------ system packages


def _without() -> set[str]:
    return {s.strip() for s in os.environ.get(WITHOUT_ENV, "").split(",") if s.strip()}


def browser_installed() -> bool:
    """Debian's ``chromium`` and ``chromium-driver``, which drive the pages in tests/ui."""
    return "chromium" not in _without() and bool(shutil.which("chromium") and shutil.which("chromedriver"))


def postgres_installed() -> bool:
    """Debian's PostgreSQL server binaries, which ``tools/postgres.sh`` runs."""
    if "postgresql" in _without():
        return False
    return any(os.access(os.path.join(d, "pg_ctl"), os.X_OK) and os.access(os.path.join(d, "initdb"), os.X_OK)
               for d in glob.glob("/usr/lib/postgresql/*/bin"))


NEEDS = {
    "browser": ("chromium", browser_installed),
    "postgres": ("postgresql", postgres_installed),
}
"""Fixture -> (service, whether it is installed): a test using the fixture needs it."""
NEEDS_BY_FILE = {"test_postgres.py": "postgres"}
"""Test files each of whose tests needs a fixture's service (some start their own server)."""


def pytest_collection_modifyitems(config, items):
    """Mark skipped a test whose system package is missing: it is skipped before any of
    its fixtures runs, reported at its own line."""
    installed: dict[str, bool] = {}
    for item in items:
        needs = {name for name in NEEDS if name in getattr(item, "fixturenames", ())}
        if item.path.name in NEEDS_BY_FILE:
            needs.add(NEEDS_BY_FILE[item.path.name])
        missing = []
        for name in sorted(needs):
            service, check = NEEDS[name]
            if service not in installed:
                installed[service] = check()
            if not installed[service]:
                missing.append(service)
        if missing:
            item.add_marker(pytest.mark.skip(reason=f"{' and '.join(missing)} not installed (pytest installs nothing); run: {SETUP_COMMAND}"))

MAX_WORKERS = 4
"""At most this many workers for ``-n auto``: the suite's long tests start servers and
training processes of their own, and every worker imports torch."""


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per CPU this process may use, at most :data:`MAX_WORKERS`;
    ``PYTEST_XDIST_AUTO_NUM_WORKERS`` or ``-n N`` choose otherwise."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # pytest-xdist reads it
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(MAX_WORKERS, cpus))


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits as (train, test) :class:`~dpap.training.loop.Split` s: 360 test
    images ``[1, 8, 8]`` in [0, 1], stratified, the same split everywhere."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from dpap.training.history import Split

    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(d.target)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=360, random_state=0, stratify=y)
    return Split(xtr, ytr), Split(xte, yte)


@pytest.fixture
def refused_port():
    """A loopback port that refuses connections for the whole test: bound, never listening.
    Held, so no other process (another worker's MLflow server or PostgreSQL) can take it
    meanwhile, as it could a port that was probed and closed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]
