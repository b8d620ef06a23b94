"""The evaluate stage's results, added to the training run they evaluate."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from mlflow.entities import Metric

from dpap.tracking.names import evaluation_metrics
from dpap.tracking.store import default_tracking_uri, open_store


def log_evaluation(run_id: str, metrics: Mapping[str, Any], files: Sequence[tuple[str, str | Path]] = (), step: int = 0, tracking_uri: Optional[str] = None) -> bool:
    """Log the evaluate stage's scalar metrics (:func:`~dpap.tracking.names.evaluation_metrics`,
    at ``step``: the run's last epoch) and ``files`` (``(artifact folder, file)`` pairs) to
    the existing run ``run_id`` of the store ``tracking_uri`` (default
    :func:`~dpap.tracking.store.default_tracking_uri`). Returns False when the run is not in
    the store (e.g. a model trained with MLflow off)."""
    client = open_store(tracking_uri or default_tracking_uri())
    try:
        client.get_run(run_id)
    except Exception:
        return False
    now = int(time.time() * 1000)
    values = [Metric(k, v, now, step) for k, v in evaluation_metrics(metrics).items()]
    for i in range(0, len(values), 500):
        client.log_batch(run_id, metrics=values[i : i + 500])
    for folder, path in files:
        client.log_artifact(run_id, str(path), folder)
    return True
