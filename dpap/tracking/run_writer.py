"""The one MLflow writer of a training run: :class:`MlflowCallback`, a
:func:`dpap.training.loop.fit` callback (the train stage, notebooks and every search trial
use it).

After each epoch it logs the epoch's metrics under one naming scheme
(:func:`~dpap.tracking.names.epoch_metrics`: ``train/…``, ``test/…``, ``pruning/…``,
``layers/<i>_<type>/…``; ``step`` = epoch number from 1), and pictures of pruning (each
layer's mask and survival histogram, ``log_image(key, step=epoch)``). It keeps the MLflow
run id in ``run.extra`` (:data:`~dpap.tracking.names.RUN_ID_KEY`), which the checkpoint
carries, so a resumed training run continues the same MLflow run; epochs MLflow already
has are not logged twice. :meth:`MlflowCallback.finish` logs final values at the final
step, a summary figure and the model (with a signature and an input example), and ends
the run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import mlflow
import mlflow.pytorch
import numpy as np
import torch
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Metric, Param, RunTag
from mlflow.models import infer_signature
from mlflow.types import Schema, TensorSpec

from dpap.config.params_file import flatten_dotted
from dpap.evaluation.plots import mask_image, run_summary_figure, survival_histogram
from dpap.runtime.interrupts import shielded
from dpap.runtime.urls import masked_url
from dpap.training.compact_run import dense_view, is_compacted
from dpap.tracking.names import EXPERIMENT, RUN_ID_KEY, default_run_name, epoch_metrics
from dpap.tracking.provenance import cpu_model, git_commit
from dpap.tracking.store import default_tracking_uri, get_or_create_experiment, open_store


def _shielded(method):
    """Run ``method`` with Ctrl-C/SIGTERM deferred to its end (:mod:`dpap.runtime.interrupts`): an
    interrupt inside a store write would leave the store locked for the write that marks
    the run KILLED."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with shielded():
            return method(*args, **kwargs)

    return wrapper


def _is_duplicate_key(exc: BaseException) -> bool:
    """Whether ``exc`` is a store's unique-key violation (PostgreSQL, SQLite, MySQL), the
    sign of two writers inserting the same row at once."""
    text = f"{type(exc).__name__}: {exc}"
    return any(s in text for s in ("UniqueViolation", "duplicate key value", "UNIQUE constraint failed", "Duplicate entry"))


class MlflowCallback:
    """Log a :class:`dpap.training.loop.TrainingRun` to MLflow, epoch by epoch: the one MLflow
    writer of the project (the train stage, notebooks and every search trial use it).

    >>> cb = MlflowCallback(data_hash=data.meta["hash"])
    >>> run = fit(cfg, data, checkpoint="checkpoints/train.pt", callbacks=[cb])
    >>> cb.finish(run)

    Steps are epoch numbers (from 1) in every run; metric names come from
    :func:`~dpap.tracking.names.epoch_metrics`. Each epoch also logs, with
    ``log_image(key, step=epoch)`` so the UI's step slider plays them, every layer's mask
    (``masks/layer<i>_<type>``) and survival histogram
    (``survival/layer<i>_<type>_<units|synapses>``), and the masks as ``.npz``.
    ``parent_run_id`` makes the run a nested child (search trials); ``tags`` and ``params``
    are added to the run's; ``images_every`` logs the pictures every k epochs (0: never;
    the last epoch always when k > 0). ``resume``: continue the MLflow run recorded in the
    training checkpoint (``run.extra``); a search trial's retry starts a run of its own.
    ``on_start(run_id)`` is called once the run exists; ``on_error(exc)``, when given,
    receives an epoch's logging error instead of the training loop."""

    def __init__(
        self,
        experiment: str = EXPERIMENT,
        tracking_uri: Optional[str] = None,
        run_name: Optional[str] = None,
        parent_run_id: Optional[str] = None,
        tags: Optional[Mapping[str, str]] = None,
        params: Optional[Mapping[str, Any]] = None,
        data_hash: str = "",
        data_dir: Optional[str | Path] = None,
        images_every: int = 1,
        log_model: bool = True,
        resume: bool = True,
        on_start: Optional[Callable[[str], None]] = None,
        on_error: Optional[Callable[[Exception], None]] = None,
    ):
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.client = open_store(self.tracking_uri)
        self.experiment = experiment
        self.run_name = run_name
        self.parent_run_id = parent_run_id
        self.tags = dict(tags or {})
        self.params = dict(params or {})
        self.data_hash = data_hash
        self.data_dir = Path(data_dir) if data_dir else None
        self.images_every = images_every
        self.log_model_enabled = log_model
        self.resume = resume
        self.on_start = on_start
        self.on_error = on_error
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
            "pruning.method": cfg.pruning.method if cfg.pruning.enabled else "none",
            "torch.version": torch.__version__,
            "torch.threads": str(torch.get_num_threads()),
            "cpu": cpu_model(),
            "device": str(run.device) + (f" ({torch.cuda.get_device_name(run.device)})" if run.device.type == "cuda" else ""),
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
        if run.checkpoint is None or not self.resume:
            return None
        found = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`dpap.resume_key` = '{self._resume_key(run)}' and attributes.status = 'RUNNING'",
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        return found[0].info.run_id if found else None

    @_shielded
    def start(self, run) -> str:
        """Start (or continue) the MLflow run of ``run``; return its id."""
        if self.run_id is not None:
            return self.run_id
        experiment_id = get_or_create_experiment(self.client, self.experiment, self.tracking_uri)
        run_id = run.extra.get(RUN_ID_KEY) if self.resume else None
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
            if "search.storage" in params:  # a database URL's password stays out of the store
                params["search.storage"] = masked_url(str(params["search.storage"]))
            params["data.hash"] = self.data_hash
            params.update(self.params)
            self._log_params(run_id, params)
            self.run_id = run_id
            self._log_input(run)
        else:
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, "dpap.resumed", "true")
            hist = self.client.get_metric_history(run_id, "test/accuracy")
            self._logged_through = max((m.step for m in hist), default=0)
        run.extra[RUN_ID_KEY] = run_id
        self.run_id = run_id
        if self.on_start is not None:
            self.on_start(run_id)
        return run_id

    def _log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def _log_input(self, run) -> None:
        """The processed data set as the run's input: name, content digest, split sizes."""
        source_uri = str((self.data_dir or Path(run.cfg.data.processed_dir) / run.cfg.data.name).resolve())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            source = resolve_dataset_source(source_uri)
        x = run.train_split.x
        schema = Schema([TensorSpec(np.dtype(str(x.dtype).removeprefix("torch.")), (-1, *x.shape[1:]), "x")])
        dataset = MetaDataset(source, name=run.cfg.data.name, digest=(self.data_hash or "")[:36] or None, schema=schema)
        sizes = {"train_size": len(run.train_split), "test_size": len(run.test_split)}
        if run.val_split is not None:
            sizes["val_size"] = len(run.val_split)
        tags = {k: str(v) for k, v in sizes.items()}
        # Two runs logging the same data set at the same moment race in MLflow's store (it
        # looks the data set up, then inserts it: one of them hits the unique key). The
        # loser's retry finds the row and only links it, so try again a few times.
        for attempt in range(4):
            try:
                with self._active():
                    mlflow.log_input(dataset, context="training", tags=tags)
                return
            except Exception as exc:  # noqa: BLE001 - re-raised below unless it is the race
                if attempt == 3 or not _is_duplicate_key(exc):
                    raise
                time.sleep(0.1 * (attempt + 1))

    @contextlib.contextmanager
    def _active(self):
        """The fluent API's run context for ``self.run_id`` (nested when another is active),
        for the calls only the fluent API has (``log_input``, ``log_model``). Leaving that
        context ends the run as FINISHED (or FAILED); the run is still training, so it is
        set back to RUNNING, as the UI and a resume after ``kill -9`` expect."""
        mlflow.set_tracking_uri(self.tracking_uri)
        try:
            with mlflow.start_run(run_id=self.run_id, nested=mlflow.active_run() is not None):
                yield
        finally:
            self.client.update_run(self.run_id, status="RUNNING")

    # --------------------------------------------------------------- per epoch

    @_shielded
    def __call__(self, run, metrics) -> None:
        if self.on_error is None:
            return self.log_epoch(run, metrics)
        try:
            self.log_epoch(run, metrics)
        except Exception as exc:  # noqa: BLE001 - handed to on_error (a search trial goes on)
            self.on_error(exc)

    def log_epoch(self, run, metrics) -> None:
        """Log the epochs of ``run.history`` MLflow does not have, and the pictures of
        the epoch ``metrics``."""
        run_id = self.start(run)
        now = int(time.time() * 1000)
        values = []
        # every epoch MLflow does not have yet: a run resumed from a checkpoint in a new
        # MLflow run (a search trial's retry) brings its earlier epochs along
        for m in run.history:
            step = m.epoch + 1
            if step > self._logged_through:
                values += [Metric(k, v, now, step) for k, v in epoch_metrics(m).items()]
        if not values:
            return  # re-run of an epoch MLflow already has (killed before its checkpoint)
        for i in range(0, len(values), 500):
            self.client.log_batch(run_id, metrics=values[i : i + 500])
        step = metrics.epoch + 1
        last = step == run.cfg.train.epochs
        if run.pruner is not None and self.images_every > 0 and (step % self.images_every == 0 or last):
            self.log_pictures(run, step)
        self._logged_through = step

    def log_pictures(self, run, step: int) -> None:
        """Each layer's mask and survival histogram as images at ``step``, and the masks
        and survival values as ``masks/epoch_NNN.npz``, ``survival/epoch_NNN.npz``."""
        pruner = run.pruner
        masks = pruner.masks()
        if is_compacted(run):  # masks in the dense shapes, so every epoch's picture compares
            _, units, synapses = dense_view(run)
            masks = {k: v for i in range(len(units)) for k, v in ((f"layer{i}.units", units[i]), (f"layer{i}.synapses", synapses[i]))}
        survival = pruner.survival_values()
        for info in pruner.layers:
            name = f"layer{info.index}_{info.layer_type}"
            units, syn = masks[f"layer{info.index}.units"].numpy(), masks[f"layer{info.index}.synapses"].numpy()
            self.client.log_image(self.run_id, mask_image(name, info.layer_type, units, syn, step), key=f"masks/{name}", step=step)
        value_name = pruner.method.value_name  # survival (DPAP) | range_width (SD-SNN)
        for key, values in survival.items():
            layer, kind, what = key.split(".")
            image = survival_histogram(f"{layer} {kind} {what}", values.numpy(), step, value_name=value_name)
            self.client.log_image(self.run_id, image, key=f"{value_name}/{layer}_{kind}_{what}", step=step)
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            np.savez_compressed(tmp_path / f"epoch_{step:03d}.npz", **{k.replace(".", "_"): v.numpy() for k, v in masks.items()})
            self.client.log_artifact(self.run_id, str(tmp_path / f"epoch_{step:03d}.npz"), "masks")
            (tmp_path / value_name).mkdir()
            np.savez_compressed(tmp_path / value_name / f"epoch_{step:03d}.npz", **{k.replace(".", "_"): v.numpy() for k, v in survival.items()})
            self.client.log_artifact(self.run_id, str(tmp_path / value_name / f"epoch_{step:03d}.npz"), value_name)

    # ------------------------------------------------------------------- end

    @_shielded
    def finish(
        self,
        run,
        model_file: Optional[str | Path] = None,
        status: str = "FINISHED",
        final: Optional[Mapping[str, float]] = None,
        tags: Optional[Mapping[str, str]] = None,
        example: Optional[Any] = None,
    ) -> None:
        """End the run: ``final`` metrics at the final step (the last epoch), ``tags``, and
        for a FINISHED run the summary figure and the model (``mlflow.pytorch.log_model``
        with a signature and, given ``example`` inputs, an input example; plus
        ``model_file`` as a plain artifact). Safe to call when no epoch was logged (a run
        resumed after its last epoch): it then continues the recorded run."""
        run_id = self.start(run)
        try:
            step = len(run.history)
            now = int(time.time() * 1000)
            batch_tags = [RunTag(k, str(v)[:5000]) for k, v in (tags or {}).items()]
            batch_metrics = [Metric(k, float(v), now, step) for k, v in (final or {}).items() if v is not None]
            if batch_tags or batch_metrics:
                self.client.log_batch(run_id, metrics=batch_metrics, tags=batch_tags)
            if status == "FINISHED":
                if run.history:
                    rows = [dataclasses.asdict(m) for m in run.history]
                    self.client.log_image(run_id, run_summary_figure(rows), artifact_file="summary.png")
                    last = run.history[-1]
                    self.client.set_tag(run_id, "dpap.final_test_accuracy", f"{last.test_accuracy:.4f}")
                    self.client.set_tag(run_id, "dpap.final_compression", f"{last.compression:.4f}")
                if model_file is not None:
                    self.client.log_artifact(run_id, str(model_file), "model_file")
                if self.log_model_enabled:
                    self._log_pytorch_model(run, example)
        finally:
            self.client.set_terminated(run_id, status=status)

    def _log_pytorch_model(self, run, example=None) -> None:
        net = run.net.to("cpu") if next(run.net.parameters()).device.type != "cpu" else run.net
        signature = input_example = None
        if example is not None:
            x = torch.as_tensor(example)[:2].float().cpu()
            was_training = net.training
            net.eval()
            with torch.no_grad():
                y = net(x)
            net.train(was_training)
            input_example = x.numpy()
            signature = infer_signature(input_example, y.numpy())
        quiet = logging.getLogger("mlflow.pytorch")  # its pickle-format warning, every time
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            with self._active():
                mlflow.pytorch.log_model(
                    net,
                    name="model",
                    serialization_format="pickle",  # pt2 would need tracing
                    signature=signature,
                    input_example=input_example,
                    pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                )
        finally:
            quiet.setLevel(level)
            if net is not run.net:
                run.net.to(run.device)
