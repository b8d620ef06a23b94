"""`dpap search` workers on a real PostgreSQL server (started on loopback by the
repository's tools/postgres.sh): one study shared by several processes, the budget met
exactly, and a worker killed mid-trial whose trial Optuna's heartbeat fails and another
worker retries from the trial's checkpoint. Real components only: `dpap search`
subprocesses, PostgreSQL, a real MLflow sqlite store."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from dpap import search as S

STUDY = "dpap-search"
# The params' own knobs, feasible for 0.5 ± 0.45 (as in test_concurrency.py): the study's
# first trial evaluates them, so every search here has a feasible trial.
FEASIBLE_START = ["-S", "pruning.dpap.epsilon=1.6", "-S", "pruning.dpap.fc.beta=0.39", "-S", "pruning.dpap.fc.eta=8.9", "-S", "pruning.dpap.conv.protect=3.5"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).password


def _study(url: str) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=S.make_storage(url))


def _mlflow_children(uri: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(S.EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return client, [r for r in runs if r.data.tags.get("dpap.kind") == "search-trial"]


def test_three_workers_share_one_study(make_params, tmp_path, dpap_cmd, subprocess_env, mlflow_uri, pg_storage, communicate_all):
    """Three `dpap search` processes on one PostgreSQL study: the budget is met exactly
    (trial numbers 0..5, none left running or waiting), every trial is recorded once (its
    own knobs, one MLflow run), and the outputs describe the finished study."""
    p = make_params(epochs=1, trials=6)
    cmd = [*dpap_cmd, "search", "--params", str(p), "--storage", pg_storage, "--out", str(tmp_path / "search"), *FEASIBLE_START]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = communicate_all(procs, timeout=500)
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-2000:]}\n{err[-3000:]}"
        assert "Traceback" not in err, err[-3000:]
        assert _password(pg_storage) not in out + err and S.shown_storage(pg_storage) in out  # the password is masked

    study = _study(pg_storage)
    trials = study.trials
    assert [t.number for t in trials] == list(range(6))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials), [t.state for t in trials]
    knobs = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(knobs)) == 6  # no trial ran twice, no worker repeated another's draw
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) >= 2  # the work was shared
    assert study.user_attrs[S.WORKERS_ATTR] == {}

    client, children = _mlflow_children(mlflow_uri)
    assert sorted(int(r.data.tags["optuna.trial"]) for r in children) == list(range(6))
    assert {t.user_attrs["mlflow_run_id"] for t in trials} == {r.info.run_id for r in children}
    parent = client.get_run(children[0].data.tags["mlflow.parentRunId"])
    for run in (parent, children[0]):  # the storage URL is logged, its password is not
        logged = " ".join(f"{k}={v}" for k, v in {**run.data.params, **run.data.tags}.items())
        assert S.shown_storage(pg_storage) in logged and _password(pg_storage) not in logged
    summary = json.loads((tmp_path / "search" / "summary.json").read_text())
    assert summary["trials"] == 6 and summary["failed"] == 0 and summary["storage"] == S.shown_storage(pg_storage)


def _checkpoint(out: Path, number: int) -> Path:
    return out / "checkpoints" / STUDY / f"trial-{number}.pt"


def test_killed_worker_trial_fails_by_heartbeat_and_is_retried(make_params, tmp_path, dpap_cmd, subprocess_env, mlflow_uri, pg_storage, communicate_all):
    """Two workers; one is killed (SIGKILL, no cleanup) mid-trial, after an epoch
    checkpoint. Its heartbeat stops, so the other fails the trial after the grace period
    (Optuna's fail_stale_trials), queues its knobs again (RetryHeartbeatStaleTrialCallback)
    and runs the retry, which resumes from the lost trial's checkpoint. The budget is met,
    nothing is lost, no trial is counted twice."""
    p = make_params(epochs=4, trials=4)
    out = tmp_path / "search"
    cmd = [*dpap_cmd, "search", "--params", str(p), "--storage", pg_storage, "--out", str(out), *FEASIBLE_START,
           "-S", "search.heartbeat_interval=1", "-S", "search.grace_period=5"]
    victim = subprocess.Popen(cmd, cwd=tmp_path, env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    other = None
    killed = None
    try:
        deadline = time.time() + 300
        while time.time() < deadline and victim.poll() is None and killed is None:
            time.sleep(0.2)
            try:
                running = _study(pg_storage).get_trials(states=(TrialState.RUNNING,))
            except KeyError:  # the study is not created yet
                continue
            if other is None and running:  # the victim has started: start the survivor
                other = subprocess.Popen(cmd, cwd=tmp_path, env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            mine = [t for t in running if t.user_attrs.get("worker", {}).get("pid") == victim.pid and _checkpoint(out, t.user_attrs.get("retry_of", t.number)).exists()]
            if mine and other is not None:
                victim.send_signal(signal.SIGKILL)  # mid-trial, its checkpoint on disk
                victim.wait()
                killed = mine[0]
        assert killed is not None, f"the victim never had a trial mid-way to kill: {victim.communicate()[0][-3000:] if victim.poll() is not None else ''}"
        (out_text, err_text), = communicate_all([other], timeout=500)
    finally:
        for proc in (victim, other):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert other.returncode in (0, 1), f"exit {other.returncode}\n{out_text[-2000:]}\n{err_text[-3000:]}"  # 1: no feasible trial
    assert "Traceback" not in err_text, err_text[-3000:]

    trials = _study(pg_storage).trials
    assert [t.number for t in trials] == list(range(len(trials)))
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    dead = trials[killed.number]
    assert dead.state == TrialState.FAIL
    retries = [t for t in trials if S.retry_history(t) == [killed.number]]
    assert len(retries) == 1, [(t.number, S.retry_history(t)) for t in trials]
    (retry,) = retries
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retry.params == killed.params and retry.user_attrs["retry_of"] == killed.number
    assert retry.user_attrs["worker"]["pid"] == other.pid  # retried by the other worker
    assert retry.user_attrs["resumed_epochs"] >= 1  # it went on from the lost trial's checkpoint
    assert S.budget_used(trials) == 4
    counted = [t for t in trials if t.state != TrialState.FAIL]
    assert len(counted) == 4 and len({tuple(sorted(t.params.items())) for t in counted}) == 4
    assert "no heartbeat for 5 s" in _killed_run_reason(mlflow_uri, dead)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"] == 4 and summary["failed"] == 0  # the lost trial is not counted


def _killed_run_reason(uri: str, trial) -> str:
    """The lost trial's MLflow run: ended KILLED by the worker that retried it."""
    from mlflow.tracking import MlflowClient

    run = MlflowClient(tracking_uri=uri).get_run(trial.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED"
    return run.data.tags.get("reason", "")


def test_fresh_database_opened_by_several_processes_at_once(pg_storage, tmp_path, communicate_all):
    """Four processes open the same fresh database at the same moment: Optuna creates its
    tables once (under the storage's schema lock), none fails with a duplicate key."""
    import sys

    go = tmp_path / "go"
    code = (
        "import sys, time, pathlib\n"
        "from dpap.search import make_storage\n"
        "go = pathlib.Path(sys.argv[2])\n"
        "while not go.exists(): time.sleep(0.01)\n"
        "make_storage(sys.argv[1]); print('ok')\n"
    )
    import os

    env = dict(os.environ, PYTHONWARNINGS="ignore")
    procs = [subprocess.Popen([sys.executable, "-c", code, pg_storage, str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(4)]
    time.sleep(8)  # all four imported and waiting
    go.touch()
    outs = communicate_all(procs, timeout=120)
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0 and out.strip() == "ok", err[-2000:]
    assert optuna.get_all_study_names(S.make_storage(pg_storage)) == []


def test_study_lock_of_a_killed_holder_is_free_at_once(pg_storage, tmp_path):
    """The study's lock on PostgreSQL is the server's advisory lock: while one process
    holds it another waits; when the holder is killed (SIGKILL, mid-lock) the server drops
    it with the connection, and the waiter gets it within a second."""
    import os
    import sys

    from dpap.search.locks import study_lock

    code = (
        "import sys, time\n"
        "from dpap.search.locks import study_lock\n"
        "lock = study_lock(sys.argv[1], sys.argv[2], 's')\n"
        "lock.__enter__(); print('held', flush=True); time.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, pg_storage, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = study_lock(pg_storage, tmp_path, "s")
        other = study_lock(pg_storage, tmp_path, "another study")
        with other:  # another study's lock is not this one
            pass
        import threading

        got = threading.Event()

        def take() -> None:
            with lock:
                got.set()

        waiter = threading.Thread(target=take, daemon=True)
        waiter.start()
        assert not got.wait(2.0)  # held by the other process
        t0 = time.monotonic()
        holder.send_signal(signal.SIGKILL)
        # at once, not after a timeout (a lost connection's keepalive takes minutes); 5 s
        # leaves room for a machine busy with other test workers
        assert got.wait(10.0) and time.monotonic() - t0 < 5.0
        waiter.join()
        lock.close()
        other.close()
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()


def test_database_lost_mid_search_is_one_line_and_the_study_resumes(make_params, tmp_path, dpap_cmd, subprocess_env, mlflow_uri, communicate_all):
    """The PostgreSQL server stops while a trial runs (its own server, not the session's):
    `dpap search` stops with one line naming the storage (password masked) and exit 2.
    Once the server is back, the same command resumes the study: the trial that was
    running is failed for its missing heartbeat and run again, and the budget is met."""
    import os
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="dpap-pg-lost-"))
    folder.chmod(0o755)
    env = dict(os.environ, DPAP_PG_DIR=str(folder / "pg"), DPAP_PG_PORT=str(_free_port()))
    script = str(Path(__file__).resolve().parents[2] / "tools" / "postgres.sh")

    def server(what: str) -> str:
        r = subprocess.run([script, what], env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    try:
        url = server("start")
        p = make_params(epochs=4, trials=3)
        cmd = [*dpap_cmd, "search", "--params", str(p), "--storage", url, "--out", str(tmp_path / "search"), *FEASIBLE_START,
               "-S", "search.heartbeat_interval=1", "-S", "search.grace_period=4"]
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        running = None
        deadline = time.time() + 200
        while time.time() < deadline and proc.poll() is None and running is None:
            time.sleep(0.2)
            try:
                running = next((t for t in _study(url).get_trials(states=(TrialState.RUNNING,)) if t.intermediate_values), None)
            except KeyError:
                pass
        assert running is not None, proc.communicate()[1][-3000:] if proc.poll() is not None else "no trial ran"
        server("stop")  # fast shutdown: the search's connections are cut
        (out, err), = communicate_all([proc], timeout=120)
        assert proc.returncode == 1, f"exit {proc.returncode}\n{out[-2000:]}\n{err[-3000:]}"
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert errors == [err.strip().splitlines()[-1]], err[-3000:]
        assert errors[0].startswith(f"error: search storage {S.shown_storage(url)}: lost it mid-search ("), errors[0]
        assert "run the same command again" in errors[0] and "Traceback" not in err and _password(url) not in err

        server("start")
        r = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env, capture_output=True, text=True, timeout=400)
        assert r.returncode in (0, 1), r.stdout[-2000:] + r.stderr[-3000:]
        trials = _study(url).trials
        assert trials[running.number].state == TrialState.FAIL
        assert [t.number for t in trials if S.retry_history(t) == [running.number]], [(t.number, t.state) for t in trials]
        assert S.budget_used(trials) == 3 and not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    finally:
        subprocess.run([script, "stop"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


def test_missing_database_is_one_line(make_params, in_tmp, mlflow_uri, postgres, capfd):
    """A PostgreSQL URL whose database does not exist: exit 2, one line, no password."""
    from dpap.cli import main

    url = postgres.url.rsplit("/", 1)[0] + "/no_such_db"
    capfd.readouterr()
    rc = main(["search", "--params", str(make_params(trials=1)), "--storage", url])
    out, err = capfd.readouterr()
    assert rc == 1, out + err
    assert err.count("\n") == 1 and err.startswith(f"error: search storage {S.shown_storage(url)}: cannot open it ("), err
    assert "no_such_db" in err and "does not exist" in err and _password(url) not in err
    assert not (in_tmp / "search").exists()
