"""A search from start to end: open (or resume) the study, run the workers, wait for the
other processes of the study (recovering trials they lose), write the outputs."""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import optuna
from optuna.trial import TrialState

from dpap.config import Config
from dpap.pruning.dpap.method import conv_mode_of
from dpap.search.errors import SearchError
from dpap.search.locks import FileStudyLock, PostgresStudyLock, study_lock
from dpap.search.recovery import TrialRecovery, budget_used, recover_lost_trials
from dpap.search.reports import SearchResult, search_params, write_outputs
from dpap.search.space import check_search, current_knobs, search_epochs, search_fingerprint, trial_config
from dpap.search.storage import make_storage, storage_errors, storage_key
from dpap.search.storage_url import shown_storage
from dpap.search.tracker import SearchTracker
from dpap.search.workers import WorkerJob, _load_data, _spawned_worker, open_storage, run_worker
from dpap.tracking import open_store
from dpap.training.setup import make_network


def open_study(cfg: Config, storage: str, study_name: str, data_hash: str, store: Optional[optuna.storages.BaseStorage] = None,
               conv_mode: str = "channels") -> optuna.Study:
    """Create the study, or load it to resume; refuse one created for other settings.
    ``store``: ``storage`` already opened (else it is opened here). ``conv_mode``: how DPAP
    prunes the network's conv layers (its first trial, params.yaml's own knobs, reads
    ``conv.*`` for that mode)."""
    store = store if store is not None else make_storage(storage)
    want = search_fingerprint(cfg, data_hash)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(study_name=study_name, storage=store, direction="maximize", load_if_exists=True)
    have = study.user_attrs.get("search")
    if have is None:
        if study.trials:
            raise SearchError(f"study {study_name!r} in {shown_storage(storage)} was not made by `dpap search`; pass --study-name NAME for a new one")
        study.set_user_attr("search", want)
        start = current_knobs(cfg, conv_mode)
        if start is not None:  # evaluate the current settings first: a known anchor for TPE
            study.enqueue_trial(start, user_attrs={"current_params": True})
    elif have != want:
        diff = [k for k in want if have.get(k) != want[k]]
        what = ", ".join(f"{k} {have.get(k)!r} -> {want[k]!r}" if k != "training" else "training settings/data" for k in diff)
        raise SearchError(f"study {study_name!r} in {shown_storage(storage)} was created for other settings ({what}); pass --study-name NAME to start a new study, or restore the settings to resume it")
    return study


def run_search(
    cfg: Config,
    data,
    *,
    workers: int = 1,
    out_dir: str | Path = "search",
    tracking_uri: Optional[str] = None,
    overrides: Optional[dict[str, Any]] = None,
    quiet: bool = False,
) -> SearchResult:
    """Run (or resume) the study of ``cfg.search`` until ``search.trials`` trials count.

    ``data``: a ``ProcessedData`` or the path of a processed folder. ``tracking_uri``: the
    MLflow store (None: no tracking). ``overrides``: the dotted settings the user changed on
    top of params.yaml (written into ``best_params.yaml`` so applying it reproduces the
    trial). Writes ``best_params.yaml``, ``accuracy_vs_compression.png`` and
    ``summary.json`` into ``out_dir``.

    Several processes may run the same study at once (``dpap search`` started twice, on
    one storage): they share one trial budget and one MLflow parent run, their samplers are
    seeded apart, and each, when the budget is used, waits for the trials still running in
    the others, then writes the outputs from the finished study, one process at a time,
    each file replaced whole. A store or storage that cannot be used fails first, with one
    line (:class:`~dpap.tracking.TrackingStoreError`, :class:`SearchError`)."""
    check_search(cfg, workers)
    s = cfg.search
    if tracking_uri:
        open_store(tracking_uri)  # locked, corrupt, unreachable: one line, before anything is made
    recovery = TrialRecovery(s.grace_period)
    store = open_storage(cfg, s.storage, recovery)  # unwritable, unreachable: one line
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loaded = _load_data(data)
    data_hash = loaded.meta.get("hash", "")
    net = make_network(trial_config(cfg, {}), loaded.meta["input_shape"], loaded.meta["num_classes"])  # a bad arch fails here, once
    conv_mode = conv_mode_of(cfg.pruning.dpap, net)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with contextlib.ExitStack() as held:  # one process at a time creates the study and its parent run
        with storage_errors(s.storage):
            lock = study_lock(s.storage, out, s.study_name)
            held.enter_context(lock)
            study = open_study(cfg, s.storage, s.study_name, data_hash, store=store, conv_mode=conv_mode)
        if tracking_uri:  # (the MLflow store's errors are its own)
            recovery.tracker = SearchTracker.for_study(tracking_uri, study, search_params(cfg, s.storage, s.study_name), storage_key(s.storage))
        with storage_errors(s.storage):
            lost = recover_lost_trials(study, store, recovery)
    tracker = recovery.tracker
    if lost and not quiet:
        print(f"note: trial(s) {', '.join(map(str, lost))} were left running by a dead worker: failed and queued again", flush=True)
    before = budget_used(study.get_trials(deepcopy=False))
    if not quiet:
        left = max(0, s.trials - before)
        print(f"study {s.study_name!r} in {shown_storage(s.storage)}: {before} trial(s) so far, {left} to run (target {s.target} ± {s.tolerance}, {search_epochs(cfg)} epochs each, {workers} worker(s))", flush=True)

    job = WorkerJob(
        cfg=cfg,
        data=data if isinstance(data, (str, Path)) else loaded,
        storage=s.storage,
        study_name=s.study_name,
        out_dir=str(out),
        tracking_uri=tracking_uri,
        parent_run_id=tracker.parent_run_id if tracker else None,
        experiment_id=tracker.experiment_id if tracker else None,
        quiet=quiet,
    )
    with storage_errors(s.storage, "lost it mid-search"):
        while True:
            run_workers(job, loaded, workers, storage=store, lock=lock, recovery=recovery)
            if not wait_for_other_workers(study, store, recovery, lock, s.trials, quiet=quiet):
                break
        try:
            with lock:  # one writer at a time; the last one writes the finished study
                study = optuna.load_study(study_name=s.study_name, storage=store)
                return write_outputs(study, cfg, out, tracker, overrides or {})
        finally:
            lock.close()


def run_workers(job: WorkerJob, data, workers: int, **here: Any) -> None:
    """``workers`` worker processes (spawned) until the budget is used; one worker runs in
    this process, with ``here``'s storage, lock and recovery (:func:`run_worker`)."""
    if workers == 1:
        run_worker(dataclasses.replace(job, data=data), **here)
        return
    threads = job.cfg.train.threads or max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        try:
            pool.map(_spawned_worker, [dataclasses.replace(job, index=i + 1, threads=threads) for i in range(workers)])
        except KeyboardInterrupt:
            pool.terminate()
            raise


def wait_for_other_workers(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    recovery: TrialRecovery,
    lock: FileStudyLock | PostgresStudyLock,
    trials: int,
    *,
    quiet: bool = False,
    poll: float = 1.0,
) -> bool:
    """Wait until the trials running now (in other processes of the study: this one's
    workers are done) are finished, so the outputs describe the whole budget. A trial
    whose worker died meanwhile is failed and queued again
    (:func:`~dpap.search.recovery.recover_lost_trials`); then True is returned at once, for
    this process to run the retry (the budget is open again). Trials those others start
    afterwards are not waited for."""
    waiting: Optional[set[int]] = None
    while True:
        with lock:
            recover_lost_trials(study, storage, recovery)
            trials_now = study.get_trials(deepcopy=False)
        if budget_used(trials_now) < trials:
            return True
        running = {t.number for t in trials_now if t.state == TrialState.RUNNING}
        if waiting is None:
            waiting = running
            if waiting and not quiet:
                print(f"waiting for trial(s) {', '.join(map(str, sorted(waiting)))}, still running in other processes of the study", flush=True)
        waiting &= running
        if not waiting:
            return False
        time.sleep(poll)
