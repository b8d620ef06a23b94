"""Helpers of the pipeline tests: the environment and runner of the stage scripts, and the
tiny parameter set their throw-away repositories use (fixtures in ``conftest.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# Few samples, a small network and aggressive survival knobs so that pruning happens in
# the first epochs; a run takes seconds. (A channel of 6C3 takes 15 % of this network: a
# share of 0.2 lets it die alone, docs/pruning.md, the cap on deaths.)
TINY = {
    "data": {"limit": 120},
    "model": {"arch": "6C3-AP2-24FC-10FC", "time_steps": 3},
    "pruning": {"dpap": {"fc": {"beta": 0.5, "epsilon": 1.2, "eta": 10.0}, "conv": {"beta": 0.5, "epsilon": 1.0},
                         "max_death_share": 0.2}},
    "train": {"epochs": 3, "batch_size": 40, "lr": 0.01, "threads": 1},
}


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_")) or k == "DVC_SITE_CACHE_DIR"}
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
