"""Fixtures for the pipeline tests: a throw-away git+DVC copy of this repository with a
tiny parameter set, on which the real stage scripts, ``dvc`` and MLflow run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from stage_runs import ROOT, run, write_params


def make_repo(dest: Path) -> Path:
    """Copy the files git tracks (plus this checkout's uncommitted pipeline files) into
    ``dest``, ``git init`` and commit: a fresh clone, without the parent's outputs."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\n")
    for f in filter(None, files):
        src = ROOT / f
        if not src.is_file() or f.startswith(("tests/", "benchmarks/")) or f in ("dvc.lock", "metrics.json") or f.startswith("plots/"):
            continue
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / f)
    write_params(dest / "params.yaml")
    run(["git", "init", "-q"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-q", "-m", "fixture"], dest)
    return dest


@pytest.fixture(scope="session")
def repro_repo(tmp_path_factory) -> Path:
    """A repository on which ``dvc repro`` has run once."""
    repo = make_repo(tmp_path_factory.mktemp("repo"))
    p = run(["dvc", "repro"], repo, timeout=400)
    (repo / "repro.log").write_text(p.stdout + p.stderr)
    return repo


@pytest.fixture
def work(repro_repo, tmp_path) -> Path:
    """A throw-away copy of ``repro_repo`` (scripts, presets, data, model, metrics, plots,
    params) to break things in: each test gets its own."""
    w = tmp_path / "w"
    for d in ("pipeline", "dpap", "presets", "data", "models", "plots"):
        shutil.copytree(repro_repo / d, w / d, ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("params.yaml", "metrics.json"):
        shutil.copy(repro_repo / f, w / f)
    return w
