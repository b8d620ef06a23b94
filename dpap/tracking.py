"""MLflow tracking (kept out of the core: only this module imports MLflow).

The one MLflow writer of the project. :class:`MlflowCallback` is a
:func:`dpap.training.fit` callback: after each epoch it logs the epoch's metrics under
one naming scheme (:func:`epoch_metrics`: ``train/…``, ``test/…``, ``pruning/…``,
``layers/<i>_<type>/…``; ``step`` = epoch number from 1), and pictures of pruning (each
layer's mask and survival histogram, ``log_image(key, step=epoch)``). It keeps the MLflow
run id in ``run.extra``, which the checkpoint carries, so a resumed training run continues
the same MLflow run; epochs MLflow already has are not logged twice.
:meth:`MlflowCallback.finish` logs final values at the final step, a summary figure and
the model (with a signature and an input example), and ends the run.

The search (:class:`SearchTracker`) makes one parent run per study and a nested child run
per trial, each trial logged by an :class:`MlflowCallback`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from .params_file import flatten_dotted

# No usage reports from MLflow (the project runs offline; a user can still opt in).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

EXPERIMENT = "dpap"


def _shielded(method):
    """Run ``method`` with Ctrl-C/SIGTERM deferred to its end (:mod:`dpap.interrupts`): an
    interrupt inside a store write would leave the store locked for the write that marks
    the run KILLED."""
    import functools

    from .interrupts import shielded

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with shielded():
            return method(*args, **kwargs)

    return wrapper


class TrackingStoreError(RuntimeError):
    """The MLflow store cannot be used (not a database, locked, unreachable, unwritable)."""


LOCK_TIMEOUT_ENV = "DPAP_MLFLOW_LOCK_TIMEOUT"
"""Seconds to wait for a SQLite store another process holds locked before giving up with
one line (default :data:`LOCK_TIMEOUT`)."""
LOCK_TIMEOUT = 10.0


def sqlite_file(tracking_uri: str) -> Optional[Path]:
    """The database file of a ``sqlite:///`` URI (None for any other store)."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri[len("sqlite:///") :])
    return None


def lock_timeout() -> float:
    """:data:`LOCK_TIMEOUT_ENV` as seconds (default :data:`LOCK_TIMEOUT`)."""
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not raw:
        return LOCK_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise TrackingStoreError(f"{LOCK_TIMEOUT_ENV}={raw!r}: expected seconds >= 0, e.g. {LOCK_TIMEOUT_ENV}=10")
    return value


def _locked_message(db: Path, timeout: float) -> str:
    return (f"MLflow store {db}: locked by another process (still locked after {timeout:g} s; {LOCK_TIMEOUT_ENV}=SECONDS waits longer); "
            f"let that process finish or stop it (`fuser {db}` names it), or set MLFLOW_TRACKING_URI to another store, or pass --no-mlflow")


def check_not_locked(db: Path, timeout: Optional[float] = None) -> None:
    """Raise :class:`TrackingStoreError` when another process holds the SQLite store ``db``
    locked for longer than ``timeout`` seconds (default :func:`lock_timeout`).

    MLflow itself would wait 20 s per query (its ``busy_timeout``) and then log a traceback;
    this asks once, with the standard library, for the lock a writer needs (``BEGIN
    IMMEDIATE``, rolled back at once). A missing file or one that is not a database passes:
    MLflow creates the one and :func:`open_store` reports the other."""
    import sqlite3

    if not db.is_file():
        return
    timeout = lock_timeout() if timeout is None else timeout
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=rw", uri=True, timeout=timeout, isolation_level=None)
    except sqlite3.Error:
        return
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):  # "database is locked" (SQLITE_BUSY), "database table is locked"
            raise TrackingStoreError(_locked_message(db, timeout)) from None
    except sqlite3.Error:
        pass
    finally:
        conn.close()


def creation_lock_path(db: Path) -> Path:
    """The lock file that serialises the first opening of the SQLite store ``db`` among the
    processes of this machine (in the temporary folder, keyed by the file's absolute path,
    so nothing is added next to the store)."""
    key = hashlib.sha256(str(db.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"dpap-mlflow-store-{key}.lock"


def _check_server(tracking_uri: str, timeout_s: float = 5.0) -> None:
    """For an ``http(s)://`` store: one TCP connection, so a server that is down is one
    line within seconds (MLflow's own client retries for minutes before it gives up)."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(tracking_uri)
    if url.scheme not in ("http", "https") or not url.hostname:
        return
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
        socket.create_connection((url.hostname, port), timeout=timeout_s).close()
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise TrackingStoreError(
            f"MLflow store {tracking_uri}: cannot connect ({reason}); check that the server is up, "
            f"or set MLFLOW_TRACKING_URI, or pass --no-mlflow"
        ) from None


def open_store(tracking_uri: str):
    """An :class:`~mlflow.tracking.MlflowClient` for ``tracking_uri``, after one cheap query
    that proves the store works; else :class:`TrackingStoreError` with one line saying
    what to do.

    For a SQLite store: first :func:`check_not_locked`; then the first query, which makes
    MLflow create (or check) its tables, runs under a file lock, so several processes
    starting on a fresh ``mlflow.db`` at once do not race to create the same tables (MLflow
    would fail in all but one with ``table ... already exists``). MLflow's own log lines
    are held back meanwhile; the error, if any, is the one line."""
    from contextlib import nullcontext

    from mlflow.tracking import MlflowClient

    _check_server(tracking_uri)
    db = sqlite_file(tracking_uri)
    if db is not None:
        check_not_locked(db)
    mlflow_log = logging.getLogger("mlflow")
    level = mlflow_log.level
    mlflow_log.setLevel(logging.CRITICAL)
    try:
        with creation_lock(db) if db is not None else nullcontext():
            client = MlflowClient(tracking_uri)
            client.search_experiments(max_results=1)
        return client
    except TrackingStoreError:
        raise
    except Exception as exc:  # sqlalchemy, sqlite3, MlflowException, OSError, requests ...
        reason = " ".join(str(exc).split("\n")[0].split()) or type(exc).__name__
        if db is not None and "database is locked" in reason:
            raise TrackingStoreError(_locked_message(db, 20)) from None
        where = str(db) if db is not None else tracking_uri
        if db is None:
            hint = "check that the server is up, "
        elif db.is_file():
            hint = f"move it aside (mv {where} {where}.broken) and run again for a fresh store, "
        else:
            hint = "check that its folder can be created and written, "
        raise TrackingStoreError(f"MLflow store {where}: {reason[:200]}; {hint}or set MLFLOW_TRACKING_URI, or pass --no-mlflow") from None
    finally:
        mlflow_log.setLevel(level)


def creation_lock(db: Path):
    """:func:`dpap.file_lock.file_lock` on :func:`creation_lock_path`."""
    from .file_lock import file_lock

    return file_lock(creation_lock_path(db))


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


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``; else :func:`platform.processor`) and
    core count: with the thread count and torch version, what float sums depend on."""
    import platform

    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name or platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


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


def epoch_metrics(m) -> dict[str, float]:
    """One epoch (:class:`~dpap.training.EpochMetrics`) as MLflow metrics, named so the
    UI groups its charts into sections: ``train/``, ``test/``, ``val/``, ``pruning/`` and
    ``layers/<i>_<type>/``."""
    from .dynamics import kind_shares

    out = {
        "train/loss": m.train_loss,
        "train/accuracy": m.train_accuracy,
        "train/lr": m.lr,
        "train/seconds": m.seconds,
        "test/accuracy": m.test_accuracy,
        "pruning/compression": m.compression,
        "pruning/params_retained": m.params_retained,
        "pruning/zero_weight_share": m.zero_weight_share,
    }
    if m.val_accuracy is not None:
        out["val/accuracy"] = m.val_accuracy
    if m.layers:
        shares = kind_shares(m.layers)
        out.update({f"pruning/{k}": v for k, v in vars(shares).items()})
    for layer in m.layers:
        name = f"layers/{layer['index']}_{layer['layer_type']}"
        out[f"{name}/synapses_pruned"] = 1.0 - layer["synapses_alive"] / layer["synapses"] if layer["synapses"] else 0.0
        out[f"{name}/units_alive"] = layer["units_alive"]
        out[f"{name}/units_alive_share"] = layer["units_alive"] / layer["units"] if layer["units"] else 0.0
        out[f"{name}/compression"] = layer["compression"]
        for key in ("units_died", "regenerated", "rate", "width"):  # what the method did; the compacted width
            if key in layer:
                out[f"{name}/{key}"] = layer[key]
    if any("regenerated" in layer for layer in m.layers):
        out["pruning/regenerated"] = sum(layer.get("regenerated", 0) for layer in m.layers)
    return {k: float(v) for k, v in out.items() if v is not None}


STATUS_OF_TRIAL = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
"""The MLflow status a search trial's run ends with, by Optuna state."""


class MlflowCallback:
    """Log a :class:`dpap.training.TrainingRun` to MLflow, epoch by epoch: the one MLflow
    writer of the project (the train stage, notebooks and every search trial use it).

    >>> cb = MlflowCallback(data_hash=data.meta["hash"])
    >>> run = fit(cfg, data, checkpoint="checkpoints/train.pt", callbacks=[cb])
    >>> cb.finish(run)

    Steps are epoch numbers (from 1) in every run; metric names come from
    :func:`epoch_metrics`. Each epoch also logs, with ``log_image(key, step=epoch)`` so the
    UI's step slider plays them, every layer's mask (``masks/layer<i>_<type>``) and survival
    histogram (``survival/layer<i>_<type>_<units|synapses>``), and the masks as ``.npz``.
    ``parent_run_id`` makes the run a nested child (search trials); ``tags`` and ``params``
    are added to the run's; ``images_every`` logs the pictures every k epochs (0: never;
    the last epoch always when k > 0). ``resume``: continue the MLflow run recorded in the
    training checkpoint (``run.extra``); a search trial's retry starts a run of its own."""

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
        import torch

        cfg = run.cfg
        tags = {
            "mlflow.source.name": "pipeline/train.py",
            "mlflow.source.type": "LOCAL",
            "dpap.fingerprint": run.fingerprint,
            "dpap.resume_key": self._resume_key(run),
            "data.name": cfg.data.name,
            "data.hash": self.data_hash,
            "model.kind": cfg.model.kind,
            "pruning.method": "dpap" if cfg.dpap.enabled else "none",
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
                from .search.storage import shown_storage

                params["search.storage"] = shown_storage(str(params["search.storage"]))
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
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def _log_input(self, run) -> None:
        """The processed data set as the run's input: name, content digest, split sizes."""
        import mlflow
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.types import Schema, TensorSpec

        source_uri = str((self.data_dir or Path(run.cfg.data.processed_dir) / run.cfg.data.name).resolve())
        from mlflow.data.dataset_source_registry import resolve_dataset_source

        import warnings

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
        import mlflow

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
        from mlflow.entities import Metric

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
        from .plots import mask_image, survival_histogram

        from .compaction.run import dense_view, is_compacted

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
        from mlflow.entities import Metric, RunTag

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
                    from .plots import run_summary_figure

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
        import mlflow
        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature

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


def _is_duplicate_key(exc: BaseException) -> bool:
    """Whether ``exc`` is a store's unique-key violation (PostgreSQL, SQLite, MySQL), the
    sign of two writers inserting the same row at once."""
    text = f"{type(exc).__name__}: {exc}"
    return any(s in text for s in ("UniqueViolation", "duplicate key value", "UNIQUE constraint failed", "Duplicate entry"))


def default_run_name(cfg) -> str:
    what = "dpap" if cfg.dpap.enabled else "baseline"
    return f"{cfg.data.name}-{cfg.model.kind}-{what}"


def evaluation_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The evaluate stage's scalar results as ``eval/<name>``, and NeuroBench's as
    ``eval/neurobench/<name>`` (per-layer values stay in the ``evaluation/metrics.json``
    artifact)."""

    def scalars(d: Mapping[str, Any], prefix: str) -> dict[str, float]:
        return {f"{prefix}{k}": float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    out = scalars(metrics, "eval/")
    if isinstance(metrics.get("neurobench"), Mapping):
        out.update(scalars(metrics["neurobench"], "eval/neurobench/"))
    return out


def log_evaluation(run_id: str, metrics: Mapping[str, Any], files: Sequence[tuple[str, str | Path]] = (), step: int = 0, tracking_uri: Optional[str] = None) -> bool:
    """Log the evaluate stage's scalar metrics (:func:`evaluation_metrics`, at ``step``: the
    run's last epoch) and ``files`` (``(artifact folder, file)`` pairs) to an existing run.
    Returns False when the run is not in the store (e.g. a model trained with MLflow off)."""
    from mlflow.entities import Metric

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


# ----------------------------------------------------------------------- search

SEARCH_EXPERIMENT = "dpap-search"
SUMMARY_TAG = "dpap.summary_of"
"""Tag of a search's parent run: which state of the study its summary describes."""


def _raise(exc: Exception) -> None:
    raise exc


def find_parent_run(client, experiment_id: str, study_name: str, storage: str) -> Optional[str]:
    """The oldest live parent run of the study ``study_name`` in ``storage`` (by its tags
    ``dpap.kind = search``, ``optuna.study``, ``optuna.storage``), or None. The names are
    compared here, not in the filter, so any characters in them are fine."""
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string="tags.`dpap.kind` = 'search'", max_results=500,
                                  order_by=["attributes.start_time ASC"], page_token=token)
        for run in page:
            tags = run.data.tags
            if tags.get("optuna.study") == study_name and tags.get("optuna.storage") == storage:
                return run.info.run_id
        token = page.token
        if not token:
            return None


class SearchTracker:
    """MLflow for ``dpap search``: one parent run per study (reused on resume), one nested
    child run per trial, logged by an :class:`MlflowCallback` like any training run (same
    metric names, steps = epochs). A trial's run ends FINISHED, KILLED (pruned) or FAILED,
    with the Optuna state in the tag ``optuna.state``. Works through ``MlflowClient`` only,
    so worker processes share nothing but the store; a tracking error never stops a trial
    (one warning, then the search goes on)."""

    def __init__(self, tracking_uri: str, parent_run_id: str, experiment_id: str):
        self.uri = tracking_uri
        self.client = open_store(tracking_uri)
        self.parent_run_id = parent_run_id
        self.experiment_id = experiment_id
        self._warned = False

    @classmethod
    def for_study(cls, tracking_uri: str, study, params: Mapping[str, Any], storage: str) -> "SearchTracker":
        """The study's one parent run: the one recorded in
        ``study.user_attrs["mlflow_parent_run_id"]`` when this store has it, else the one
        tagged with the study's name and ``storage`` (``optuna.study``, ``optuna.storage``;
        oldest first), else a new one with ``params`` (the search settings).

        Several processes of one study must call this one at a time (``dpap search`` holds
        the study's lock file), so they share one parent run; its id is recorded in the
        study for the next."""
        from mlflow.exceptions import MlflowException

        client = open_store(tracking_uri)
        exp_id = get_or_create_experiment(client, SEARCH_EXPERIMENT, tracking_uri)
        run_id = study.user_attrs.get("mlflow_parent_run_id")
        if run_id is not None:
            try:
                if client.get_run(run_id).info.lifecycle_stage == "deleted":
                    run_id = None
            except MlflowException:
                run_id = None  # another tracking store: find or start its parent
        if run_id is None:
            run_id = find_parent_run(client, exp_id, study.study_name, storage)
        if run_id is None:
            tags = {"dpap.kind": "search", "optuna.study": study.study_name, "optuna.storage": storage}
            commit = git_commit()
            if commit:
                tags["git.commit"] = commit
            from mlflow.entities import Param

            run = client.create_run(exp_id, run_name=study.study_name, tags=tags)
            run_id = run.info.run_id
            client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        if study.user_attrs.get("mlflow_parent_run_id") != run_id:
            study.set_user_attr("mlflow_parent_run_id", run_id)
        if client.get_run(run_id).info.status != "RUNNING":
            client.update_run(run_id, status="RUNNING")
        return cls(tracking_uri, run_id, exp_id)

    def summarised(self, key: str) -> bool:
        """Whether the parent run already ended with the summary of the study state ``key``
        (:data:`SUMMARY_TAG`; written by another process of the study that finished at the
        same time): :meth:`finish` would log the same values again."""
        run = self._safe(self.client.get_run, self.parent_run_id)
        return run is not None and run.info.status == "FINISHED" and run.data.tags.get(SUMMARY_TAG) == key

    def _safe(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - tracking must not kill a trial
            if not self._warned:
                import sys

                print(f"warning: MLflow logging failed ({type(exc).__name__}: {exc}); the search goes on", file=sys.stderr, flush=True)
                self._warned = True
            return None

    def trial_callback(self, trial, overrides: Mapping[str, Any], data_hash: str = "", epochs: int = 0) -> Optional[MlflowCallback]:
        """The :func:`dpap.training.fit` callback that logs one trial as a child run; the
        run id goes to the trial's user attribute ``mlflow_run_id`` as soon as it exists.
        None when the store cannot be opened now (e.g. locked by another program for
        longer than :func:`lock_timeout`): one warning, and the trial runs untracked."""
        params = {"optuna.trial_number": trial.number, **{f"search.{k}": v for k, v in overrides.items()}}
        if "retry_of" in trial.user_attrs:
            params["optuna.retry_of"] = trial.user_attrs["retry_of"]
        tags = {"optuna.trial": str(trial.number), "optuna.study": trial.study.study_name, "dpap.kind": "search-trial"}
        cb = self._safe(
            MlflowCallback,
            experiment=SEARCH_EXPERIMENT, tracking_uri=self.uri, run_name=f"trial-{trial.number}", parent_run_id=self.parent_run_id,
            tags=tags, params=params, data_hash=data_hash, images_every=max(1, epochs), log_model=False, resume=False,
            on_start=lambda run_id: trial.set_user_attr("mlflow_run_id", run_id),
            on_error=lambda exc: self._safe(_raise, exc),
        )
        return cb

    def end_trial(self, cb: MlflowCallback, run, trial, state: str, final: Mapping[str, float], reason: Optional[str] = None) -> None:
        """End a trial's run: final values at its last epoch, status by Optuna ``state``
        (COMPLETE, PRUNED or FAIL), the state and ``reason`` as tags. A trial that failed
        before its first epoch gets a run too, so every trial has one."""

        def end():
            tags = {"optuna.state": state}
            if reason:
                tags["reason"] = reason
            status = STATUS_OF_TRIAL[state]
            if run is not None and cb.run_id is not None:
                cb.finish(run, status=status, final=final, tags=tags)
                return
            from mlflow.entities import Param, RunTag

            created = self.client.create_run(self.experiment_id, run_name=cb.run_name, tags={**cb.tags, "mlflow.parentRunId": self.parent_run_id})
            run_id = created.info.run_id
            self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in cb.params.items()], tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])
            self.client.set_terminated(run_id, status)
            trial.set_user_attr("mlflow_run_id", run_id)

        self._safe(end)

    def kill_trial(self, run_id: Optional[str], reason: str) -> None:
        """A trial left running by a dead worker: its run ends KILLED."""
        if run_id is None:
            return

        def kill():
            self.client.set_tag(run_id, "optuna.state", "FAIL")
            self.client.set_tag(run_id, "reason", reason)
            self.client.set_terminated(run_id, "KILLED")

        self._safe(kill)

    def finish(self, summary: Mapping[str, Any], artifacts: Sequence[Path], step: int = 0, figures: Optional[Mapping[str, Any]] = None, tags: Optional[Mapping[str, str]] = None) -> None:
        """The parent run's summary metrics (``search/…`` at ``step``: the trials run),
        ``artifacts`` (files), ``figures`` (name -> plotly or matplotlib figure: written as
        HTML and/or PNG under ``figures/``) and ``tags``; then it ends FINISHED."""

        def fin():
            from mlflow.entities import Metric, RunTag

            now = int(time.time() * 1000)
            metrics = [Metric(f"search/{k}", float(v), now, step) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None]
            self.client.log_batch(self.parent_run_id, metrics=metrics, tags=[RunTag(k, str(v)[:5000]) for k, v in (tags or {}).items()])
            for a in artifacts:
                if Path(a).exists():
                    self.client.log_artifact(self.parent_run_id, str(a))
            with tempfile.TemporaryDirectory() as tmp:
                for name, fig in (figures or {}).items():
                    if hasattr(fig, "write_html"):  # plotly
                        fig.write_html(Path(tmp) / f"{name}.html", include_plotlyjs=True)
                    if hasattr(fig, "savefig"):  # matplotlib
                        fig.savefig(Path(tmp) / f"{name}.png", dpi=90, bbox_inches="tight")
                if any(Path(tmp).iterdir()):
                    self.client.log_artifacts(self.parent_run_id, tmp, "figures")
            self.client.set_terminated(self.parent_run_id, "FINISHED")

        self._safe(fin)
