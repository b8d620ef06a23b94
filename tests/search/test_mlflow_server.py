"""A shared MLflow tracking server (tools/mlflow_server.sh: `mlflow server` on loopback,
the test PostgreSQL's database `mlflow` as backend store, an artifact folder the server
fills): concurrent search workers and the train stage log to it through
MLFLOW_TRACKING_URI, and every run and artifact arrives. Real components only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna

from dpap import search as S

ROOT = Path(__file__).resolve().parents[2]
FEASIBLE_START = ["-S", "pruning.dpap.epsilon=1.6", "-S", "pruning.dpap.fc.beta=0.39", "-S", "pruning.dpap.fc.eta=8.9", "-S", "pruning.dpap.conv.protect=3.5"]


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_concurrent_search_workers_log_to_the_server(make_params, tmp_path, dpap_cmd, subprocess_env, pg_storage, mlflow_server, run_together):
    """Two `dpap search` processes on one PostgreSQL study, both logging to the server:
    one parent run, one child run per trial with its epochs and pictures, the parent's
    summary files, all in the server's store and artifact folder; nothing local."""
    uri, artifacts = mlflow_server
    env = dict(subprocess_env, MLFLOW_TRACKING_URI=uri)
    p = make_params(epochs=1, trials=4)
    cmd = [*dpap_cmd, "search", "--params", str(p), "--storage", pg_storage, "--out", str(tmp_path / "search"), *FEASIBLE_START]
    for _, err in run_together(cmd, 2, tmp_path, env, 500):
        assert "warning: MLflow logging failed" not in err, err[-3000:]

    trials = optuna.load_study(study_name="dpap-search", storage=S.make_storage(pg_storage)).trials
    assert [t.number for t in trials] == [0, 1, 2, 3] and all(t.state.is_finished() for t in trials)
    client = _client(uri)
    exp = client.get_experiment_by_name(S.EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("dpap.kind") == "search" and r.data.tags.get("optuna.storage") == S.storage_key(pg_storage)]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0].info.run_id
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
    assert sorted(int(r.data.tags["optuna.trial"]) for r in children) == [0, 1, 2, 3]  # every worker's run arrived
    assert {t.user_attrs["mlflow_run_id"] for t in trials} == {r.info.run_id for r in children}
    for t in trials:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.status == {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}[t.state.name]
        assert [m.step for m in client.get_metric_history(run.info.run_id, "test/accuracy")] == [1]
        masks = [a.path for a in client.list_artifacts(run.info.run_id, "masks")]
        assert masks == ["masks/epoch_001.npz"], masks
    # the artifacts went to the server's folder, over HTTP
    assert len(list(artifacts.rglob("epoch_001.npz"))) >= 4
    local = json.loads((tmp_path / "search" / "summary.json").read_text())
    logged = json.loads(Path(client.download_artifacts(parent, "summary.json", str(tmp_path))).read_text())
    assert logged == local and logged["trials"] == 4
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()


def test_train_stage_logs_to_the_server(make_params, tmp_path, subprocess_env, mlflow_server):
    """`python pipeline/train.py` with MLFLOW_TRACKING_URI set to the server: the run, its
    epochs, summary figure and model file are in the server."""
    uri, artifacts = mlflow_server
    env = dict(subprocess_env, MLFLOW_TRACKING_URI=uri)
    p = make_params(epochs=1)
    r = subprocess.run([sys.executable, str(ROOT / "pipeline" / "train.py"), "--params", str(p), "--no-progress"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    line = [s for s in r.stdout.splitlines() if s.startswith("mlflow run ")]
    assert line and line[0].endswith(f"({uri})"), r.stdout
    run_id = line[0].split()[2]
    client = _client(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["test/accuracy"] >= 0
    paths = {a.path for a in client.list_artifacts(run_id)}
    assert {"summary.png", "model_file"} <= paths, paths
    assert [a.path for a in client.list_artifacts(run_id, "model_file")] == ["model_file/model.pt"]
    assert list(artifacts.rglob("model.pt")) and not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()


def test_runs_starting_together_all_log_their_data_set(mlflow_server, digits, tmp_path):
    """Eight runs on the same data set starting at the same moment (search workers do):
    MLflow's store looks a data set up and then inserts it, so concurrent first inserts
    collide on its unique key; every run must still start, link the one data set, and
    stay RUNNING while it trains."""
    import threading

    from dpap.config import Config
    from dpap.tracking import MlflowCallback
    from dpap.training.loop import TrainingRun

    uri, _ = mlflow_server
    train, test = digits
    cfg = Config()
    n = 8
    barrier = threading.Barrier(n)
    digest = "race-" + tmp_path.name[-20:]
    errors, ids = [], []

    def start(i):
        try:
            run = TrainingRun(cfg, train, test, (1, 8, 8), 10, progress=False)
            cb = MlflowCallback(experiment="dpap-race-test", tracking_uri=uri, run_name=f"race-{i}", data_hash=digest, log_model=False, resume=False)
            barrier.wait()
            ids.append(cb.start(run))
        except Exception as exc:  # noqa: BLE001 - collected and shown below
            errors.append(f"{type(exc).__name__}: {exc}"[:500])

    threads = [threading.Thread(target=start, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    client = _client(uri)
    assert len(ids) == n
    for rid in ids:
        r = client.get_run(rid)
        assert r.info.status == "RUNNING"
        assert [d.dataset.digest for d in r.inputs.dataset_inputs] == [digest[:36]]
