"""The Optuna search on a real (tiny) budget: real journal storage, real MLflow sqlite store."""

from __future__ import annotations

import math
import shutil
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from dpap import search as S
from dpap.cli import main
from dpap.config import load_params
from dpap.data import ProcessedData, load_processed
from dpap.training.loop import fit


def _study(storage: Path, name: str = "dpap-search") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=S.make_storage(str(storage)))


def _counted(trials):
    return [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (t.state == TrialState.FAIL and not t.user_attrs.get("retried"))]


def _mlflow_runs(uri: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(S.EXPERIMENT)
    return client, client.search_runs([exp.experiment_id], max_results=1000)


# --------------------------------------------------------------------------- Optuna 5


def test_optuna5_best_trial_is_best_feasible():
    """What the search relies on: with ``trial.set_constraint`` the best trial is the best
    feasible one, even when an infeasible trial has a higher value."""
    study = optuna.create_study(direction="maximize")
    for value, c in [(0.99, 0.4), (0.80, -0.01), (0.70, -0.2)]:
        t = study.ask()
        t.set_constraint(S.CONSTRAINT, c)
        study.tell(t, value)
    assert study.best_trial.value == 0.80
    only_infeasible = optuna.create_study(direction="maximize")
    t = only_infeasible.ask()
    t.set_constraint(S.CONSTRAINT, 0.1)
    only_infeasible.tell(t, 0.9)
    with pytest.raises(ValueError, match="No feasible"):
        only_infeasible.best_trial


# -------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "args, what",
    [
        (["--target", "1.5"], "--target: got 1.5, expected a number in (0, 1)"),
        (["--target", "0"], "--target: got 0, expected a number in (0, 1)"),
        (["--trials", "2.5"], "--trials: got 2.5, expected an integer >= 1"),
        (["--tolerance", "x"], "--tolerance: got 'x', expected a number > 0"),
        (["--tolerance", "0"], "--tolerance: got 0, expected a number > 0"),
        (["--trials", "0"], "--trials: got 0, expected an integer >= 1"),
        (["--workers", "0"], "--workers"),
        (["-S", "search.ranges={pruning.dpap.fc.beta: {low: 2, high: 2}}"], "empty range"),
        (["-S", "nonsense"], "KEY=VALUE"),
        (["-S", "search.heartbeat_interval=10", "-S", "search.grace_period=10"], "search.grace_period"),
        (["-S", "search.heartbeat_interval=0"], "search.heartbeat_interval"),
    ],
)
def test_bad_input_is_one_line(make_params, in_tmp, capsys, args, what):
    p = make_params()
    rc = main(["search", "--params", str(p), *args])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.count("\n") == 1 and err.startswith("error: ") and what in err, err
    assert not (in_tmp / "search").exists()  # failed at once: nothing created


def test_bad_input_console_script_has_no_traceback(make_params, tmp_path, dpap_cmd, subprocess_env):
    p = make_params()
    r = subprocess.run([*dpap_cmd, "search", "--params", str(p), "--target", "2"], capture_output=True, text=True, cwd=tmp_path, env=subprocess_env, timeout=120)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and "--target:" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_changed_settings_refuse_to_resume(make_params, tmp_path, processed_root):
    cfg = load_params(make_params())
    S.open_study(cfg, cfg.search.storage, "s", "hash")
    S.open_study(cfg, cfg.search.storage, "s", "hash")  # same settings: resumes
    other = load_params(make_params(target=0.7, name="p2.yaml"))
    with pytest.raises(S.SearchError, match="other settings.*target 0.5 -> 0.7"):
        S.open_study(other, other.search.storage, "s", "hash")


# ------------------------------------------------------------------------ divergence


def test_diverging_trials_fail_with_reason_and_search_goes_on(make_params, tmp_path, processed_root, mlflow_uri):
    cfg = load_params(make_params(trials=2), {"model.kind": "dnn"})
    d = load_processed(processed_root / "digits")
    x = d.train[0].clone()
    x[::7] = float("nan")  # a corrupt batch: the DNN's loss becomes NaN
    bad = ProcessedData(train=(x, d.train[1]), test=d.test, val=None, meta=dict(d.meta, hash="nan-data"))
    res = S.run_search(cfg, bad, out_dir=tmp_path / "search", tracking_uri=mlflow_uri, quiet=True)
    assert res.failed == 2 and res.trials == 2 and res.best_number is None
    trials = _study(Path(cfg.search.storage)).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    assert all(t.user_attrs["fail_reason"].startswith("diverged: loss became nan") for t in trials)
    client, runs = _mlflow_runs(mlflow_uri)
    assert sorted(r.info.status for r in runs if r.data.tags.get("dpap.kind") == "search-trial") == ["FAILED", "FAILED"]


def test_a_trial_that_raises_is_failed_with_its_error_and_the_search_goes_on(make_params, tmp_path, processed_root, mlflow_uri, capsys):
    """Any exception of a trial (here a bad sample in the data: a label out of range, so
    its one-hot target raises RuntimeError in the first epoch) is recorded FAIL with the error, its
    MLflow run ends FAILED, and the next trial still runs: the search ends normally."""
    cfg = load_params(make_params(trials=2))
    d = load_processed(processed_root / "digits")
    y = d.train[1].clone()
    y[3] = 99
    bad = ProcessedData(train=(d.train[0], y), test=d.test, val=None, meta=dict(d.meta, hash="bad-label"))
    res = S.run_search(cfg, bad, out_dir=tmp_path / "search", tracking_uri=mlflow_uri)
    out = capsys.readouterr().out
    assert res.failed == 2 and res.trials == 2 and res.best_number is None
    trials = _study(Path(cfg.search.storage)).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    assert all(t.user_attrs["fail_reason"] == "RuntimeError: Class values must be smaller than num_classes." for t in trials), [t.user_attrs for t in trials]
    assert out.count("failed") >= 2 and "RuntimeError: Class values" in out
    client, runs = _mlflow_runs(mlflow_uri)
    assert sorted(r.info.status for r in runs if r.data.tags.get("dpap.kind") == "search-trial") == ["FAILED", "FAILED"]


# ------------------------------------------------------------- resume after a kill


def test_resume_after_killed_worker(make_params, tmp_path, mlflow_uri, monkeypatch, dpap_cmd, subprocess_env):
    p = make_params(epochs=5, trials=3)
    storage = tmp_path / "search" / "optuna.journal"
    cmd = [*dpap_cmd, "search", "--params", str(p), "--out", str(tmp_path / "search")]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=subprocess_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed = None
    deadline = time.time() + 150
    try:
        while time.time() < deadline and proc.poll() is None:
            if storage.exists():
                try:
                    running = [t for t in _study(storage).get_trials(states=(TrialState.RUNNING,)) if t.intermediate_values]
                except KeyError:  # study not created yet
                    running = []
                if running:
                    proc.send_signal(signal.SIGKILL)  # the worker dies mid-trial, no cleanup
                    proc.wait()
                    break
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    left = _study(storage).get_trials(states=(TrialState.RUNNING,))
    assert len(left) == 1, f"expected one trial left running by the killed worker; stderr: {proc.stderr.read().decode()[-2000:]}"
    killed = left[0]

    monkeypatch.chdir(tmp_path)
    rc = main(["search", "--params", str(p), "--out", str(tmp_path / "search"), "--quiet"])
    assert rc in (0, 1)  # 1: no feasible trial (possible on this tiny budget)

    trials = _study(storage).trials
    assert [t.number for t in trials] == list(range(len(trials)))
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    counted = _counted(trials)
    assert len(counted) == 3 == S.budget_used(trials)
    dead = trials[killed.number]
    assert dead.state == TrialState.FAIL and dead.user_attrs["retried"] is True
    assert "worker died mid-trial" in dead.user_attrs["fail_reason"]
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == killed.number]
    assert retry.params == killed.params and retry in counted
    assert len({tuple(sorted(t.params.items())) for t in counted}) == 3  # nothing ran twice

    client, runs = _mlflow_runs(mlflow_uri)
    assert client.get_run(killed.user_attrs["mlflow_run_id"]).info.status == "KILLED"
    parent = [r for r in runs if r.data.tags.get("dpap.kind") == "search"]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"  # one parent, reused on resume
    for t in counted:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.data.tags["mlflow.parentRunId"] == parent[0].info.run_id
        assert run.data.tags["optuna.trial"] == str(t.number)


# ------------------------------------------------- two workers, best params applied


def test_two_workers_then_apply_best_reproduces(make_params, in_tmp, mlflow_uri, capsys):
    p = make_params(epochs=3, trials=4)
    rc = main(["search", "--params", str(p), "--workers", "2", "--quiet"])
    out = capsys.readouterr().out
    storage = in_tmp / "search" / "optuna.journal"
    trials = _study(storage).trials
    assert [t.number for t in trials] == [0, 1, 2, 3]  # every trial once, budget not overshot
    assert all(t.state.is_finished() for t in trials)
    assert {t.user_attrs["worker"]["pid"] for t in trials}.isdisjoint({__import__("os").getpid()})  # ran in the workers
    client, runs = _mlflow_runs(mlflow_uri)
    nested = [r for r in runs if r.data.tags.get("dpap.kind") == "search-trial"]
    assert sorted(int(r.data.tags["optuna.trial"]) for r in nested) == [0, 1, 2, 3]
    assert {t.user_attrs["mlflow_run_id"] for t in trials} == {r.info.run_id for r in nested}
    # one writer, one scheme: a trial's run has the pipeline's metric names, steps = epochs,
    # final values at the last epoch, and ends by its Optuna state
    for t in trials:
        r = client.get_run(t.user_attrs["mlflow_run_id"])
        assert r.info.status == {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}[t.state.name]
        assert r.data.tags["optuna.state"] == t.state.name
        epochs = sorted(m.step for m in client.get_metric_history(r.info.run_id, "test/accuracy"))
        assert epochs == list(range(1, len(epochs) + 1)) and epochs, epochs
        if t.state == TrialState.COMPLETE:
            assert [m.step for m in client.get_metric_history(r.info.run_id, "search/accuracy")] == [epochs[-1]]
            assert r.data.metrics["search/accuracy"] == pytest.approx(t.value)
        # the dashboard reads the constraint from here (the sampler's constraints_func)
        if t.state == TrialState.COMPLETE:
            assert list(t.system_attrs["constraints"]) == [pytest.approx(t.constraints["compression"])]
    parent = [r for r in runs if r.data.tags.get("dpap.kind") == "search"][0]
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert {"figures/optimization_history.html", "figures/optimization_history_png.png"} <= figures, figures
    assert parent.data.tags["best.trial"] == str(_study(storage).best_trial.number)
    assert not (in_tmp / "mlruns").exists() and not (Path.cwd() / "mlruns").exists()  # artifacts next to the store
    assert "target compression" in out and "trials" in out
    assert (in_tmp / "search" / "accuracy_vs_compression.png").stat().st_size > 1000

    assert rc == 0, out
    study = _study(storage)
    best = study.best_trial
    assert S.is_feasible(best)
    original = p.read_text()
    rc = main(["apply-best", "--params", str(p)])
    assert rc == 0
    text = p.read_text()
    assert "# tiny settings for the search tests" in text and "# the test's processed data" in text  # comments kept
    assert text != original
    cfg = load_params(p)
    for key, value in S.best_overrides(best).items():
        node = cfg
        for part in key.split("."):
            node = getattr(node, part)
        assert node == value
    run = fit(cfg, load_processed(Path(cfg.data.processed_dir) / cfg.data.name), progress=False)
    assert run.history[-1].compression == best.user_attrs["compression"]
    assert run.history[-1].test_accuracy == best.user_attrs["test_accuracy"]


def test_dashboard_storage_names_the_best_feasible_trial(tmp_path):
    """optuna-dashboard asks the storage for get_best_trial, which ignores constraints:
    FeasibleBestStorage answers with Optuna's best feasible trial and passes the rest on."""
    from dpap.search.dashboard import FeasibleBestStorage

    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, direction="maximize", study_name="s")
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for value, violation in ((0.70, -0.01), (0.95, 0.2), (0.80, 0.0), (0.99, 0.5), (0.75, -0.3)):
        study.add_trial(optuna.trial.create_trial(value=value, params={"x": value}, distributions=dist, system_attrs={"constraints": [violation]}))
    wrapped = FeasibleBestStorage(storage)
    sid = wrapped.get_study_id_from_name("s")
    assert storage.get_best_trial(sid).number == 3  # the plain answer: the most accurate, infeasible
    assert wrapped.get_best_trial(sid).number == 2  # 0.80, violation 0.0: the best feasible
    assert wrapped.get_best_trial(sid).number == optuna.load_study(study_name="s", storage=wrapped).best_trial.number
    assert len(wrapped.get_all_trials(sid)) == 5 and wrapped.get_study_directions(sid) == [optuna.study.StudyDirection.MAXIMIZE]
    # no feasible trial yet: the storage's own answer (the dashboard greys it as infeasible)
    s2 = optuna.create_study(storage=storage, direction="maximize", study_name="s2")
    s2.add_trial(optuna.trial.create_trial(value=0.9, params={"x": 0.9}, distributions=dist, system_attrs={"constraints": [0.3]}))
    assert wrapped.get_best_trial(wrapped.get_study_id_from_name("s2")).value == 0.9
