"""dpap.tracking.provenance: the repository, its commit, the CPU."""

import os
import re
import subprocess
from pathlib import Path

from dpap.tracking.provenance import cpu_model, git_commit, project_root

REPO = Path(__file__).resolve().parents[2]


def test_git_commit_names_head_of_this_repository():
    commit = git_commit(REPO)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    assert commit is not None and re.fullmatch(r"[0-9a-f]{40}(-dirty)?", commit), commit
    assert commit.removesuffix("-dirty") == head


def test_git_commit_is_dirty_exactly_when_tracked_files_differ(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)  # noqa: E731
    git("init", "-q")
    (tmp_path / "f.txt").write_text("a\n")
    git("add", "f.txt")
    git("commit", "-q", "-m", "one")
    head = git("rev-parse", "HEAD").stdout.strip()
    (tmp_path / "untracked.txt").write_text("x\n")
    assert git_commit(tmp_path) == head  # untracked files do not count
    (tmp_path / "f.txt").write_text("b\n")
    assert git_commit(tmp_path) == f"{head}-dirty"


def test_git_commit_outside_a_repository_is_none(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert git_commit(tmp_path) is None


def test_project_root_is_dvc_root_else_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "root").mkdir()
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "root"))
    assert project_root() == (tmp_path / "root").resolve()
    monkeypatch.delenv("DVC_ROOT")
    monkeypatch.chdir(tmp_path)
    assert project_root() == tmp_path.resolve()


def test_git_commit_defaults_to_the_project_root(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.chdir(tmp_path)  # not a repository
    monkeypatch.setenv("DVC_ROOT", str(REPO))
    assert git_commit() == git_commit(REPO) is not None
    monkeypatch.delenv("DVC_ROOT")
    assert git_commit() is None


def test_cpu_model_names_the_cores():
    name = cpu_model()
    assert name.endswith(f" ({os.cpu_count()} cores)") and len(name) > len(f" ({os.cpu_count()} cores)"), name
