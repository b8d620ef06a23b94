"""Fixtures for the pipeline tests: a throw-away git+DVC copy of this repository with a
tiny parameter set, on which the real stage scripts, ``dvc`` and MLflow run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# Few samples, a small network and aggressive survival knobs so that pruning happens in
# the first epochs; a run takes seconds.
TINY = {
    "data": {"limit": 120},
    "model": {"arch": "6C3-AP2-24FC-10FC", "time_steps": 3},
    "pruning": {"dpap": {"fc": {"beta": 0.5, "epsilon": 1.2, "eta": 10.0}, "conv": {"beta": 0.5, "epsilon": 1.0}}},
    "train": {"epochs": 3, "batch_size": 40, "lr": 0.01, "threads": 1},
}


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))}
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    e.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    e["DVC_NO_ANALYTICS"] = "1"
    e["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return e


def run(cmd: list[str], cwd: Path, check: bool = True, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def merge(base: dict, over: dict) -> dict:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merge(base[k], v)
        else:
            base[k] = v
    return base


def write_params(path: Path, over: dict = TINY) -> None:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    path.write_text(yaml.safe_dump(merge(raw, over), sort_keys=False))


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
