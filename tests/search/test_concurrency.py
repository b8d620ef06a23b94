"""Several `dpap search` processes on one study, and storages or stores that cannot be used.

Real components only: `dpap search` subprocesses, a real Optuna journal, a real MLflow
sqlite store, a real sqlite lock held by another process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from dpap import search as S
from dpap.cli import main

# A params.yaml whose own knobs lie in the ranges and give compression 0.097 after one
# epoch (feasible for 0.5 ± 0.45): the study's first trial evaluates them, so the search
# has a feasible trial and both processes exit 0 whoever draws what.
FEASIBLE_START = ["-S", "pruning.dpap.epsilon=1.6", "-S", "pruning.dpap.fc.beta=0.39", "-S", "pruning.dpap.fc.eta=8.9", "-S", "pruning.dpap.conv.protect=3.5"]


def _study(storage: Path) -> optuna.Study:
    return optuna.load_study(study_name="dpap-search", storage=S.make_storage(str(storage)))


def test_two_processes_at_once_on_a_fresh_store(make_params, tmp_path, dpap_cmd, subprocess_env, mlflow_uri, run_together):
    """Two `dpap search` started together on a fresh directory (no mlflow.db, no journal):
    neither crashes creating the MLflow store, they share one budget and one parent run,
    draw different knobs, and the outputs describe the finished study."""
    p = make_params(epochs=1, trials=4)
    cmd = [*dpap_cmd, "search", "--params", str(p), *FEASIBLE_START]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "search").exists()
    for _, err in run_together(cmd, 2, tmp_path, subprocess_env, 400):
        assert "already exists" not in err, err[-3000:]

    study = _study(tmp_path / "search" / "optuna.journal")
    trials = study.trials
    assert [t.number for t in trials] == [0, 1, 2, 3]  # the one budget, not overshot
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials), [t.state for t in trials]
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) == 2  # both processes ran trials
    knobs = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(knobs)) == len(knobs), knobs  # no worker repeated another's draw
    assert study.user_attrs[S.WORKERS_ATTR] == {}  # every worker left its slot

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    exp = client.get_experiment_by_name(S.EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("dpap.kind") == "search"]
    assert len(parents) == 1, [r.info.run_id for r in parents]
    parent = parents[0]
    assert parent.info.status == "FINISHED" and study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id
    children = [r for r in runs if r.data.tags.get("dpap.kind") == "search-trial"]
    assert sorted(int(r.data.tags["optuna.trial"]) for r in children) == [0, 1, 2, 3]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    assert [m.value for m in client.get_metric_history(parent.info.run_id, "search/trials")] == [4.0]  # summarised once

    summary = json.loads((tmp_path / "search" / "summary.json").read_text())
    best = study.best_trial
    assert summary["trials"] == 4 and summary["complete"] + summary["pruned"] + summary["failed"] == 4
    assert summary["complete"] == sum(t.state == TrialState.COMPLETE for t in trials)
    assert summary["feasible"] == sum(S.is_feasible(t) for t in trials) >= 1
    assert summary["best_number"] == best.number and summary["best_params"] == S.best_overrides(best)
    assert summary["mlflow_parent_run_id"] == parent.info.run_id
    assert f"trial {best.number})" in (tmp_path / "search" / "best_params.yaml").read_text()
    assert not [f.name for f in (tmp_path / "search").iterdir() if f.name.startswith(".")]  # no temporary file left


def test_worker_slots(tmp_path):
    """Concurrent workers take distinct slots (distinct sampler seeds); a freed slot or one
    of a dead process is taken again, so a lone worker always has slot 0."""
    storage = str(tmp_path / "optuna.journal")
    study = optuna.create_study(study_name="s", storage=S.make_storage(storage))
    assert S.join_study(study) == 0
    assert S.join_study(study) == 1  # a second worker while the first still holds 0
    S.leave_study(study, 0)
    assert S.join_study(study) == 0
    S.leave_study(study, 0)
    S.leave_study(study, 1)
    assert study.user_attrs[S.WORKERS_ATTR] == {}
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    study.set_user_attr(S.WORKERS_ATTR, {"0": {"host": socket.gethostname(), "pid": int(dead), "start": "0"}})
    assert S.join_study(study) == 0  # the dead worker's slot
    assert len({S.worker_salt(slot, n) for slot in range(8) for n in range(50)}) == 8 * 50
    assert S.worker_salt(0, 7) == 7 * 104729  # a lone worker: the single-worker seed


def test_parent_run_found_by_its_tags(make_params, tmp_path, mlflow_uri):
    """A study whose recorded parent run is not in this store finds the one tagged with
    its name and storage instead of starting a second."""
    from dpap.config import load_params
    from dpap.search.tracker import SearchTracker

    cfg = load_params(make_params())
    study = S.open_study(cfg, cfg.search.storage, "s", "hash")
    key = S.storage_key(cfg.search.storage)
    first = SearchTracker.for_study(mlflow_uri, study, {"target": 0.5}, key).parent_run_id
    study.set_user_attr("mlflow_parent_run_id", "0" * 32)  # e.g. recorded by another store
    again = SearchTracker.for_study(mlflow_uri, study, {"target": 0.5}, key)
    assert again.parent_run_id == first and study.user_attrs["mlflow_parent_run_id"] == first
    other = S.open_study(cfg, cfg.search.storage, "t", "hash")  # another study: its own parent
    assert SearchTracker.for_study(mlflow_uri, other, {"target": 0.5}, key).parent_run_id != first


# ------------------------------------------------------------- unusable storage or store


@pytest.fixture
def read_only_dir(tmp_path) -> Path:
    """A folder nobody may write to: a chmod 555 folder, or for root (whom chmod does not
    stop) sysfs, which refuses new files even to root."""
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    if not os.access(d, os.W_OK):
        yield d
        d.chmod(0o755)
        return
    d.chmod(0o755)
    sysfs = Path("/sys/fs")
    if sysfs.is_dir() and not _can_create(sysfs):
        yield sysfs
        return
    pytest.skip("no folder here refuses writes to this user")


def _can_create(folder: Path) -> bool:
    try:
        (folder / "dpap-write-test").open("x").close()
    except OSError:
        return False
    (folder / "dpap-write-test").unlink()
    return True


@pytest.mark.parametrize("case", ["journal-read-only-folder", "journal-under-a-file", "sqlite-read-only-folder", "postgresql-nobody-listens"])
def test_unusable_storage_is_one_line(case, make_params, in_tmp, mlflow_uri, capfd, request):
    """A storage that cannot be created, written or reached: exit 2, one line naming it and
    what to do, nothing made (captured at the file descriptors: MLflow's and SQLAlchemy's
    log lines would show too)."""
    p = make_params(trials=1)
    if case == "journal-read-only-folder":
        storage, shown, what = str(request.getfixturevalue("read_only_dir") / "optuna.journal"), None, "Permission denied"
    elif case == "journal-under-a-file":
        storage, shown, what = str(p / "search" / "optuna.journal"), None, "Not a directory"
    elif case == "sqlite-read-only-folder":
        storage, shown, what = f"sqlite:///{request.getfixturevalue('read_only_dir') / 'optuna.db'}", None, "unable to open database file"
    else:
        port = request.getfixturevalue("refused_port")
        storage = f"postgresql+psycopg://dpap:secret@127.0.0.1:{port}/dpap"
        shown, what = f"postgresql+psycopg://dpap:***@127.0.0.1:{port}/dpap", ""  # refused, or no driver installed
    capfd.readouterr()
    rc = main(["search", "--params", str(p), "--storage", storage])
    out, err = capfd.readouterr()
    assert rc == 1, out + err
    assert err.count("\n") == 1 and err.startswith(f"error: search storage {shown or storage}: cannot open it ("), err
    assert what in err and ("writable" in err or "server is up" in err or "install the driver" in err), err
    assert "secret" not in err  # a password in the URL is not printed
    assert not (in_tmp / "search").exists()


def test_locked_mlflow_store_is_one_line(make_params, tmp_path, mlflow_uri, dpap_cmd, subprocess_env):
    """An mlflow.db another process holds an exclusive lock on: `dpap search` gives up
    after DPAP_MLFLOW_LOCK_TIMEOUT seconds with one line naming the file, the other process
    and the ways out (MLflow alone would wait 20 s and print a traceback); nothing made."""
    from dpap.tracking import open_store

    db = tmp_path / "mlflow.db"
    open_store(mlflow_uri)  # a real MLflow store
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import sqlite3, sys; c = sqlite3.connect({str(db)!r}, isolation_level=None); c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        env = dict(subprocess_env, DPAP_MLFLOW_LOCK_TIMEOUT="1")
        r = subprocess.run([*dpap_cmd, "search", "--params", str(make_params(trials=1))], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"error: MLflow store {db}: locked by another process"), r.stderr
    assert "after 1 s" in r.stderr and "--no-mlflow" in r.stderr and "MLFLOW_TRACKING_URI" in r.stderr, r.stderr
    assert not (tmp_path / "search").exists()
