"""MLflow tracking of training runs (kept out of the core: only this module imports MLflow).

:class:`MlflowCallback` is a :func:`dpap.training.fit` callback. After each epoch it logs
the epoch's metrics (``step`` = epoch number, 1-based), the pruning masks (``.npz``) and
the survival functions (values ``.npz`` and a histogram ``.png`` per layer). It keeps the
MLflow run id in ``run.extra``, which the checkpoint carries, so a resumed training run
continues the same MLflow run; epochs MLflow already has are not logged twice.
:meth:`MlflowCallback.finish` logs the final model and closes the run.

The search reuses the callback for nested trial runs (``parent_run_id``, ``tags``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from .params_file import flatten_dotted

# No usage reports from MLflow (the project runs offline; a user can still opt in).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

EXPERIMENT = "dpap"
RUN_ID_KEY = "mlflow_run_id"


def project_root() -> Path:
    """The repository root: ``DVC_ROOT`` when DVC runs us (queued ``dvc exp`` runs work in
    a temporary copy but set it to the real root), else the current directory."""
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite store at the repository root."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{project_root() / 'mlflow.db'}"


def default_artifact_location(tracking_uri: str) -> Optional[str]:
    """For the default SQLite store: ``<root>/mlartifacts`` as a ``file://`` URI, so
    artifacts land next to ``mlflow.db`` whatever the working directory (None: the
    server's default)."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///") :])
        return (db.parent / "mlartifacts").resolve().as_uri()
    return None


def git_commit(root: Optional[Path] = None) -> Optional[str]:
    """``HEAD`` of the repository at ``root`` (with ``-dirty`` when tracked files differ)."""
    root = root or project_root()
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def get_or_create_experiment(client, name: str, tracking_uri: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=default_artifact_location(tracking_uri))
    except Exception:  # created meanwhile by a parallel process
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


class MlflowCallback:
    """Log a :class:`dpap.training.TrainingRun` to MLflow, epoch by epoch.

    >>> cb = MlflowCallback(data_hash=data.meta["hash"])
    >>> run = fit(cfg, data, checkpoint="checkpoints/train.pt", callbacks=[cb])
    >>> cb.finish(run)

    ``parent_run_id`` makes the run a nested child (Optuna trials); ``tags`` are added to
    the run's tags. ``artifacts_every`` logs masks and survival histograms every k
    epochs (0: never; the last epoch is always logged when k > 0)."""

    def __init__(
        self,
        experiment: str = EXPERIMENT,
        tracking_uri: Optional[str] = None,
        run_name: Optional[str] = None,
        parent_run_id: Optional[str] = None,
        tags: Optional[Mapping[str, str]] = None,
        data_hash: str = "",
        artifacts_every: int = 1,
        log_model: bool = True,
    ):
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.client = MlflowClient(self.tracking_uri)
        self.experiment = experiment
        self.run_name = run_name
        self.parent_run_id = parent_run_id
        self.tags = dict(tags or {})
        self.data_hash = data_hash
        self.artifacts_every = artifacts_every
        self.log_model_enabled = log_model
        self.run_id: Optional[str] = None
        self._logged_through = 0  # epochs (1-based) MLflow already has

    # ------------------------------------------------------------------ the run

    def _tags(self, run) -> dict[str, str]:
        cfg = run.cfg
        tags = {
            "mlflow.source.name": "pipeline/train.py",
            "mlflow.source.type": "LOCAL",
            "dpap.fingerprint": run.fingerprint,
            "dpap.resume_key": self._resume_key(run),
            "data.name": cfg.data.name,
            "data.hash": self.data_hash,
            "model.kind": cfg.model.kind,
            "dpap.enabled": str(cfg.dpap.enabled).lower(),
        }
        commit = git_commit()
        if commit:
            tags["git.commit"] = commit
            tags["mlflow.source.git.commit"] = commit.removesuffix("-dirty")
        exp_name = os.environ.get("DVC_EXP_NAME")
        if exp_name:
            tags["dvc.exp_name"] = exp_name
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        tags.update(self.tags)
        return tags

    def _resume_key(self, run) -> str:
        where = str(Path(run.checkpoint).resolve()) if run.checkpoint else "-"
        return hashlib.sha256(f"{run.fingerprint}|{where}|{self.parent_run_id}".encode()).hexdigest()[:16]

    def _find_unfinished(self, experiment_id: str, run) -> Optional[str]:
        """A run of this checkpoint that was killed before its first checkpoint recorded
        the run id (so a rerun adopts it instead of starting a duplicate)."""
        if run.checkpoint is None:
            return None
        found = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`dpap.resume_key` = '{self._resume_key(run)}' and attributes.status = 'RUNNING'",
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        return found[0].info.run_id if found else None

    def start(self, run) -> str:
        """Start (or continue) the MLflow run of ``run``; return its id."""
        if self.run_id is not None:
            return self.run_id
        experiment_id = get_or_create_experiment(self.client, self.experiment, self.tracking_uri)
        run_id = run.extra.get(RUN_ID_KEY)
        if run_id is not None:
            try:
                self.client.get_run(run_id)
            except Exception:  # the store was deleted or moved: start a new run
                run_id = None
        if run_id is None:
            run_id = self._find_unfinished(experiment_id, run)
        if run_id is None:
            name = self.run_name or os.environ.get("DVC_EXP_NAME") or default_run_name(run.cfg)
            mrun = self.client.create_run(experiment_id, run_name=name, tags=self._tags(run))
            run_id = mrun.info.run_id
            params = {k: ("None" if v is None else v) for k, v in flatten_dotted(run.cfg.to_dict(), keep=()).items()}
            params["data.hash"] = self.data_hash
            self._log_params(run_id, params)
        else:
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, "dpap.resumed", "true")
            hist = self.client.get_metric_history(run_id, "test_accuracy")
            self._logged_through = max((m.step for m in hist), default=0)
        run.extra[RUN_ID_KEY] = run_id
        self.run_id = run_id
        return run_id

    def _log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    # --------------------------------------------------------------- per epoch

    def __call__(self, run, metrics) -> None:
        from mlflow.entities import Metric

        run_id = self.start(run)
        step = metrics.epoch + 1
        if step <= self._logged_through:
            return  # re-run of an epoch MLflow already has (killed before its checkpoint)
        now = int(time.time() * 1000)
        values = [Metric(k, float(v), now, step) for k, v in metrics.flat().items() if v is not None]
        for layer in metrics.layers:
            i = layer["index"]
            values.append(Metric(f"layer{i}_units_alive_share", layer["units_alive"] / layer["units"], now, step))
        self.client.log_batch(run_id, metrics=values)
        last = step == run.cfg.train.epochs
        if run.pruner is not None and self.artifacts_every > 0 and (step % self.artifacts_every == 0 or last):
            self.log_epoch_artifacts(run, step)
        self._logged_through = step

    def log_epoch_artifacts(self, run, step: int) -> None:
        """Masks (``masks/epoch_NNN.npz``) and survival values and histograms
        (``survival/epoch_NNN.npz``, ``survival/epoch_NNN.png``)."""
        from .plots import survival_histograms

        masks = {k.replace(".", "_"): v.numpy() for k, v in run.pruner.masks().items()}
        survival = {k.replace(".", "_"): v.numpy() for k, v in run.pruner.survival_values().items()}
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            np.savez_compressed(tmp_path / f"epoch_{step:03d}.npz", **masks)
            self.client.log_artifact(self.run_id, str(tmp_path / f"epoch_{step:03d}.npz"), "masks")
            sdir = tmp_path / "survival"
            sdir.mkdir()
            np.savez_compressed(sdir / f"epoch_{step:03d}.npz", **survival)
            survival_histograms(run.pruner.survival_values(), sdir / f"epoch_{step:03d}.png", title=f"survival functions after epoch {step}")
            self.client.log_artifacts(self.run_id, str(sdir), "survival")

    # ------------------------------------------------------------------- end

    def finish(self, run, model_file: Optional[str | Path] = None, status: str = "FINISHED") -> None:
        """Log the final model (``mlflow.pytorch.log_model``, plus ``model_file`` as a
        plain artifact) and set the run's status. Safe to call when no epoch was logged
        (a run resumed after its last epoch): it then continues the recorded run."""
        run_id = self.start(run)
        try:
            if status == "FINISHED":
                if model_file is not None:
                    self.client.log_artifact(run_id, str(model_file), "model_file")
                if self.log_model_enabled:
                    self._log_pytorch_model(run)
                last = run.history[-1] if run.history else None
                if last is not None:
                    self.client.set_tag(run_id, "dpap.final_test_accuracy", f"{last.test_accuracy:.4f}")
                    self.client.set_tag(run_id, "dpap.final_compression", f"{last.compression:.4f}")
        finally:
            self.client.set_terminated(run_id, status=status)

    def _log_pytorch_model(self, run) -> None:
        import mlflow
        import mlflow.pytorch
        import torch

        mlflow.set_tracking_uri(self.tracking_uri)
        nested = mlflow.active_run() is not None
        net = run.net.to("cpu") if next(run.net.parameters()).device.type != "cpu" else run.net
        quiet = logging.getLogger("mlflow.pytorch")  # its pickle-format warning, every time
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            with mlflow.start_run(run_id=self.run_id, nested=nested):
                mlflow.pytorch.log_model(
                    net,
                    name="model",
                    serialization_format="pickle",  # pt2 would need an input example and tracing
                    pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                )
        finally:
            quiet.setLevel(level)
            if net is not run.net:
                run.net.to(run.device)


def default_run_name(cfg) -> str:
    what = "dpap" if cfg.dpap.enabled else "baseline"
    return f"{cfg.data.name}-{cfg.model.kind}-{what}"


def log_evaluation(run_id: str, metrics: Mapping[str, Any], files: Sequence[tuple[str, str | Path]] = (), step: int = 0, tracking_uri: Optional[str] = None) -> bool:
    """Log the evaluate stage's scalar metrics (prefixed ``eval_``) and ``files``
    (``(artifact folder, file)`` pairs) to an existing run. Returns False when the run is not in
    the store (e.g. a model trained with MLflow off)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri or default_tracking_uri())
    try:
        client.get_run(run_id)
    except Exception:
        return False
    now = int(time.time() * 1000)
    flat = flatten_dotted(metrics, keep=())
    values = [Metric(f"eval_{k}", float(v), now, step) for k, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    for i in range(0, len(values), 500):
        client.log_batch(run_id, metrics=values[i : i + 500])
    for folder, path in files:
        client.log_artifact(run_id, str(path), folder)
    return True
