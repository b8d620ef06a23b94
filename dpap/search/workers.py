"""Search workers: ask, train, tell until the study's budget is used. Several processes
(of one ``dpap search``, of several, on several machines with a PostgreSQL storage) share
one study, each with its own sampler seed; asking is serialised by the study's lock
(:mod:`dpap.search.locks`), so the budget is never overshot. A trial that raises is
recorded FAIL with its error and the worker goes on; a trial left running by a dead
worker is failed and retried (:mod:`dpap.search.recovery`)."""

from __future__ import annotations

import os
import socket
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import optuna
import torch
from optuna.trial import TrialState

from dpap.runtime.allocator import keep_freed_memory
from dpap.config import Config
from dpap.data import load_processed
from dpap.search.locks import FileStudyLock, PostgresStudyLock, study_lock
from dpap.search.objective import make_objective
from dpap.search.recovery import Heartbeat, TrialRecovery, budget_used, recover_lost_trials, retry_history, this_worker, trial_id, worker_alive
from dpap.search.sampling import make_trial_pruner, make_sampler
from dpap.search.errors import SearchError
from dpap.search.storage import is_storage_failure, make_storage, storage_errors
from dpap.search.tracker import SearchTracker


@dataclass
class WorkerJob:
    """Everything a worker process needs (picklable for ``spawn``)."""

    cfg: Config
    data: Any
    """A ``ProcessedData`` or the path of a processed folder (loaded by the worker)."""
    storage: str
    study_name: str
    out_dir: str
    tracking_uri: Optional[str]
    parent_run_id: Optional[str]
    experiment_id: Optional[str]
    index: int = 0
    threads: int = 0
    quiet: bool = False


def _load_data(data):
    if isinstance(data, (str, Path)):
        return load_processed(data)
    return data


def _say(job: WorkerJob, msg: str) -> None:
    if not job.quiet:
        prefix = f"[worker {job.index}] " if job.index else ""
        print(prefix + msg, flush=True)


def open_storage(cfg: Config, storage: str, recovery: Optional[TrialRecovery] = None) -> optuna.storages.BaseStorage:
    """``storage`` opened with the search's heartbeat settings (RDB) and ``recovery`` as
    the callback for trials whose heartbeat stopped."""
    s = cfg.search
    return make_storage(storage, heartbeat_interval=s.heartbeat_interval, grace_period=s.grace_period, on_stale=recovery)


def run_worker(
    job: WorkerJob,
    *,
    storage: Optional[optuna.storages.BaseStorage] = None,
    lock: Optional[FileStudyLock | PostgresStudyLock] = None,
    recovery: Optional[TrialRecovery] = None,
) -> int:
    """Ask, train, tell until the study's budget (``search.trials``) is used; returns the
    number of trials this worker ran. Asking is serialised by the study's lock, so several
    processes never overshoot the budget together; before each, lost trials are failed and
    queued again (:func:`~dpap.search.recovery.recover_lost_trials`). Each worker seeds its
    sampler with its own slot in the study (:func:`join_study`), so concurrent workers, in
    one ``dpap search`` or in several, never draw the same knobs; a lone worker has slot 0,
    the seed of a single-worker search.

    ``storage``, ``lock``, ``recovery``: those of the calling process, when the worker runs
    in it (fewer database connections); by default the worker opens its own."""
    if job.threads:
        torch.set_num_threads(job.threads)
    cfg = job.cfg
    data = _load_data(job.data)
    if storage is None:
        recovery = TrialRecovery(cfg.search.grace_period)
        storage = open_storage(cfg, job.storage, recovery)
    elif recovery is None:
        raise ValueError("run_worker: pass the storage's recovery with it")
    out = Path(job.out_dir)
    own_lock = lock is None
    lock = lock if lock is not None else study_lock(job.storage, out, job.study_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        with lock:
            plain = optuna.load_study(study_name=job.study_name, storage=storage)
            slot = join_study(plain)
            salt = worker_salt(slot, len(plain.trials))
        study = optuna.load_study(study_name=job.study_name, storage=storage, sampler=make_sampler(cfg, salt), pruner=make_trial_pruner(cfg))
    try:
        if recovery.tracker is None and job.tracking_uri and job.parent_run_id:
            recovery.tracker = SearchTracker(job.tracking_uri, job.parent_run_id, job.experiment_id)
        objective = make_objective(cfg, data, tracker=recovery.tracker, checkpoint_dir=out / "checkpoints" / job.study_name)
        ran = 0
        while True:
            with lock:
                recover_lost_trials(study, storage, recovery)
                if budget_used(study.get_trials(deepcopy=False)) >= cfg.search.trials:
                    break
                trial = study.ask()
                beat = start_trial(study, storage, trial, job)
            ran += 1
            try:
                _run_trial(job, study, storage, recovery, trial, objective)
            finally:
                beat.stop()
        return ran
    finally:
        try:
            with lock:
                leave_study(study, slot)
        except Exception as exc:  # noqa: BLE001 - best effort: a dead worker's slot is free anyway
            if not (is_storage_failure(exc) or isinstance(exc, SearchError)):
                raise
        if own_lock:
            lock.close()


def start_trial(study: optuna.Study, storage: optuna.storages.BaseStorage, trial: optuna.Trial, job: WorkerJob) -> Heartbeat:
    """Record who runs ``trial`` (``worker``; ``retry_of``: the trial it retries, if any)
    and start its heartbeat (RDB storages). Call under the study's lock, right after
    ``study.ask()``, so no other worker sees the trial running without a heartbeat."""
    tid = trial_id(storage, study.study_name, trial.number)
    trial.set_user_attr("worker", this_worker())
    history = retry_history(storage.get_trial(tid))
    if history:
        trial.set_user_attr("retry_of", history[0])

    def missed(exc: Exception) -> None:
        if not job.quiet:
            reason = " ".join((str(exc).strip().splitlines() or [""])[0].split())[:200]
            print(f"warning: trial {trial.number}: heartbeat not recorded ({type(exc).__name__}: {reason}); trying again in {job.cfg.search.heartbeat_interval} s", file=sys.stderr, flush=True)

    return Heartbeat(storage, tid, on_error=missed).start()


def worker_salt(slot: int, trials_before: int) -> int:
    """The sampler seed's salt (:func:`make_sampler`) of the worker in ``slot`` that joined a
    study holding ``trials_before`` trials: distinct for the workers of one session (the
    slots differ; 7919 and 104729 are primes, so no two pairs collide), and new for each
    resumed session."""
    return slot * 7919 + trials_before * 104729


WORKERS_ATTR = "workers"
"""Study user attribute: the live workers by slot (``{"0": {"host", "pid", "start"}}``)."""


def join_study(study: optuna.Study) -> int:
    """Take the smallest worker slot no live worker of the study holds (a worker whose
    process is gone frees its slot; workers of other machines keep theirs) and record this
    process in it. Call under the study's lock."""
    held = study.user_attrs.get(WORKERS_ATTR) or {}
    live = {k: o for k, o in held.items() if isinstance(o, dict) and worker_alive(o) is not False}
    slot = 0
    while str(slot) in live:
        slot += 1
    live[str(slot)] = this_worker()
    study.set_user_attr(WORKERS_ATTR, live)
    return slot


def leave_study(study: optuna.Study, slot: int) -> None:
    """Free ``slot`` (:func:`join_study`) when this process holds it. Call under the
    study's lock."""
    held = dict(study.user_attrs.get(WORKERS_ATTR) or {})
    owner = held.get(str(slot))
    if isinstance(owner, dict) and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
        del held[str(slot)]
        study.set_user_attr(WORKERS_ATTR, held)


def _run_trial(job: WorkerJob, study: optuna.Study, storage: optuna.storages.BaseStorage, recovery: TrialRecovery, trial: optuna.Trial, objective) -> None:
    """Run ``trial`` and tell its end: COMPLETE, PRUNED, or FAIL with ``fail_reason`` (any
    exception of the trial: divergence, out of memory, a sample the training refuses; the
    worker goes on). Ctrl-C fails it and queues its knobs again, then stops the worker."""
    t0 = time.perf_counter()
    took = lambda: f"({time.perf_counter() - t0:5.1f}s)"  # noqa: E731
    try:
        value = objective(trial)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
        _say(job, f"trial {trial.number:3d} pruned   {took()}: {trial.user_attrs.get('prune_reason', '')}")
        return
    except optuna.exceptions.UpdateFinishedTrialError:
        # Another worker failed it for a missing heartbeat (this process stalled longer
        # than search.grace_period) and queued its knobs again: nothing left to tell.
        _say(job, f"trial {trial.number:3d} lost     {took()}: failed by another worker (no heartbeat for {job.cfg.search.grace_period} s) and retried there")
        return
    except KeyboardInterrupt:
        # Not the trial's fault: fail it and queue its knobs again for the next session.
        tid = trial_id(storage, study.study_name, trial.number)
        recovery.fail_and_retry(study, storage, storage.get_trial(tid), "interrupted (Ctrl-C)")
        raise
    except Exception as exc:  # noqa: BLE001 - recorded with the trial; the search goes on
        if is_storage_failure(exc):
            raise  # the database is gone: nothing can be recorded; the worker stops (one line)
        reason = trial.user_attrs.get("fail_reason") or f"{type(exc).__name__}: {exc}"
        try:
            if "fail_reason" not in trial.user_attrs:
                trial.set_user_attr("fail_reason", reason[:2000])
            study.tell(trial, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            return
        _say(job, f"trial {trial.number:3d} failed   {took()}: {reason}")
        return
    try:
        study.tell(trial, value)
    except optuna.exceptions.UpdateFinishedTrialError:
        _say(job, f"trial {trial.number:3d} lost     {took()}: failed by another worker (no heartbeat for {job.cfg.search.grace_period} s) and retried there")
        return
    u = trial.user_attrs
    mark = "feasible" if u.get("feasible") else "infeasible"
    _say(job, f"trial {trial.number:3d} complete {took()}: accuracy {value:.4f}, compression {u.get('compression', float('nan')):.3f} ({mark})")


def _spawned_worker(job: WorkerJob) -> int:
    keep_freed_memory()  # a fresh process: as the dpap command's (dpap.runtime.allocator)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with storage_errors(job.storage, "lost it mid-search"):  # a SearchError crosses processes whole
            return run_worker(job)
    except KeyboardInterrupt:
        return -1
