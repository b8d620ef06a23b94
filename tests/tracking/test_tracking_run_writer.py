"""dpap.tracking.run_writer: a short real training run logged to a real SQLite store by
MlflowCallback, and continued after a resume."""

import pytest
from mlflow.tracking import MlflowClient

from dpap.config import Config
from dpap.tracking.run_writer import MlflowCallback
from dpap.training.history import Split
from dpap.training.loop import TrainingRun


@pytest.fixture
def logged(digits, store_uri):
    """A 2-epoch pruned run on part of the digits, logged and finished: ``(run, callback)``."""
    train, test = digits
    cfg = Config()
    cfg.train.epochs = 2
    cfg.train.threads = 1
    cfg.search.storage = "postgresql+psycopg://dpap:secret@db:5432/optuna"
    cb = MlflowCallback(tracking_uri=store_uri, run_name="tiny", images_every=2, log_model=False, data_hash="abc123",
                        params={"extra.knob": 7}, tags={"extra.tag": "yes"})
    run = TrainingRun(cfg, Split(train.x[:300], train.y[:300]), Split(test.x[:100], test.y[:100]), (1, 8, 8), 10, progress=False, callbacks=[cb])
    run.run()
    cb.finish(run, final={"final/score": 0.5}, tags={"end.tag": "done"})
    return run, cb


def test_a_run_is_logged_epoch_by_epoch(logged, store_uri):
    run, cb = logged
    client = MlflowClient(store_uri)
    mrun = client.get_run(cb.run_id)
    assert run.extra["mlflow_run_id"] == cb.run_id
    assert mrun.info.status == "FINISHED" and mrun.info.run_name == "tiny"
    assert client.get_experiment(mrun.info.experiment_id).name == "dpap"
    assert client.get_experiment(mrun.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert [m.step for m in client.get_metric_history(cb.run_id, "test/accuracy")] == [1, 2]
    assert [m.step for m in client.get_metric_history(cb.run_id, "final/score")] == [2]
    params, tags = mrun.data.params, mrun.data.tags
    assert params["train.epochs"] == "2" and params["data.hash"] == "abc123" and params["extra.knob"] == "7"
    assert "secret" not in params["search.storage"] and params["search.storage"].startswith("postgresql+psycopg://dpap:***@db")
    assert tags["extra.tag"] == "yes" and tags["end.tag"] == "done" and tags["data.hash"] == "abc123"
    assert tags["dpap.final_test_accuracy"] == f"{run.history[-1].test_accuracy:.4f}"
    assert tags["dpap.fingerprint"] == run.fingerprint and "cores)" in tags["cpu"]
    assert mrun.inputs.dataset_inputs[0].dataset.name == run.cfg.data.name


def test_pictures_and_masks_of_the_last_epoch(logged, store_uri):
    _, cb = logged
    client = MlflowClient(store_uri)
    assert {a.path for a in client.list_artifacts(cb.run_id, "masks")} == {"masks/epoch_002.npz"}
    assert "summary.png" in {a.path for a in client.list_artifacts(cb.run_id)}
    assert any("masks" in a.path for a in client.list_artifacts(cb.run_id, "images"))


def test_a_resumed_run_continues_the_same_mlflow_run(logged, store_uri):
    run, cb = logged
    again = MlflowCallback(tracking_uri=store_uri, log_model=False)
    assert again.start(run) == cb.run_id
    again.log_epoch(run, run.history[-1])  # epochs MLflow has are not logged twice
    client = MlflowClient(store_uri)
    assert client.get_run(cb.run_id).data.tags["dpap.resumed"] == "true"
    assert [m.step for m in client.get_metric_history(cb.run_id, "test/accuracy")] == [1, 2]
