"""MLflow tracking (kept out of the core: only this package and the search's parent-run
writer, :mod:`dpap.search.tracker`, import MLflow).

One module per job:

=============== =====================================================================
``store``       the MLflow store: where it is, opened with one-line errors, its locks,
                the experiments (opened in MLflow's model-training view)
``provenance``  the repository root, its git commit, the CPU
``names``       the experiment, run names, metric names, the run-id key of checkpoints
``run_writer``  :class:`MlflowCallback`: a training run's MLflow run, epoch by epoch
``evaluation``  the evaluate stage's results added to the training run
=============== =====================================================================

This module re-exports the names other code uses.
"""

import os

# No usage reports from MLflow (the project runs offline; a user can still opt in). Set
# before the modules below import MLflow, which reads it on import.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from dpap.tracking.evaluation import log_evaluation  # noqa: E402
from dpap.tracking.names import EXPERIMENT, RUN_ID_KEY, default_run_name, epoch_metrics, evaluation_metrics  # noqa: E402
from dpap.tracking.provenance import cpu_model, git_commit, project_root  # noqa: E402
from dpap.tracking.run_writer import MlflowCallback  # noqa: E402
from dpap.tracking.store import (  # noqa: E402
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    LOCK_TIMEOUT,
    LOCK_TIMEOUT_ENV,
    TrackingStoreError,
    check_not_locked,
    creation_lock,
    creation_lock_path,
    default_artifact_location,
    default_tracking_uri,
    get_or_create_experiment,
    lock_timeout,
    open_store,
    sqlite_file,
)

__all__ = [
    "EXPERIMENT",
    "EXPERIMENT_KIND",
    "EXPERIMENT_KIND_TAG",
    "LOCK_TIMEOUT",
    "LOCK_TIMEOUT_ENV",
    "RUN_ID_KEY",
    "MlflowCallback",
    "TrackingStoreError",
    "check_not_locked",
    "cpu_model",
    "creation_lock",
    "creation_lock_path",
    "default_artifact_location",
    "default_run_name",
    "default_tracking_uri",
    "epoch_metrics",
    "evaluation_metrics",
    "get_or_create_experiment",
    "git_commit",
    "lock_timeout",
    "log_evaluation",
    "open_store",
    "project_root",
    "sqlite_file",
]
