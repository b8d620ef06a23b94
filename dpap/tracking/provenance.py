"""Where a run comes from: the repository root, its git commit, the CPU it ran on."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Optional


def project_root() -> Path:
    """The repository root: ``DVC_ROOT`` when DVC runs us (queued ``dvc exp`` runs work in
    a temporary copy but set it to the real root), else the current directory."""
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``; else :func:`platform.processor`) and
    core count: with the thread count and torch version, what float sums depend on."""
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name or platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def git_commit(root: Optional[Path] = None) -> Optional[str]:
    """``HEAD`` of the repository at ``root`` (default :func:`project_root`), with
    ``-dirty`` when tracked files differ; None outside a repository or without git."""
    root = root or project_root()
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None
