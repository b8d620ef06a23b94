"""Fixtures shared by every test folder, and how the suite is spread over pytest-xdist's
workers (``-n auto --dist loadfile`` in pyproject.toml: a file's tests run on one worker,
so a module's fixtures are made once; a session fixture, such as the pipeline tests'
repository after ``dvc repro`` or the search tests' PostgreSQL and MLflow server, once
per worker that needs it)."""

import os
import socket

import pytest
import torch

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
