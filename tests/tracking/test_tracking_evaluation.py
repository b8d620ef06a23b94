"""dpap.tracking.evaluation: the evaluate stage's results added to a run of a real store."""

from mlflow.tracking import MlflowClient

from dpap.tracking.evaluation import log_evaluation
from dpap.tracking.store import get_or_create_experiment, open_store


def _run(uri: str) -> str:
    client = open_store(uri)
    return client.create_run(get_or_create_experiment(client, "dpap", uri)).info.run_id


def test_log_evaluation_writes_metrics_and_files_to_the_run(store_uri, tmp_path):
    run_id = _run(store_uri)
    report = tmp_path / "metrics.json"
    report.write_text("{}\n")
    metrics = {"accuracy": 0.9, "compacted": True, "neurobench": {"footprint": 4096}}
    assert log_evaluation(run_id, metrics, files=[("evaluation", report)], step=3, tracking_uri=store_uri)
    client = MlflowClient(store_uri)
    logged = client.get_run(run_id).data.metrics
    assert logged == {"eval/accuracy": 0.9, "eval/neurobench/footprint": 4096.0}
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "eval/accuracy")] == [(3, 0.9)]
    assert [a.path for a in client.list_artifacts(run_id, "evaluation")] == ["evaluation/metrics.json"]


def test_log_evaluation_uses_the_default_store(store_uri):
    run_id = _run(store_uri)  # store_uri is MLFLOW_TRACKING_URI
    assert log_evaluation(run_id, {"accuracy": 0.5})
    assert MlflowClient(store_uri).get_run(run_id).data.metrics == {"eval/accuracy": 0.5}


def test_log_evaluation_of_a_run_the_store_lacks_is_false(store_uri):
    open_store(store_uri)
    assert log_evaluation("0" * 32, {"accuracy": 0.9}, tracking_uri=store_uri) is False
