"""Search workers: ask, train, tell until the study's budget is used; several processes
(of one ``dpap search`` or of several) share one study, each with its own sampler seed;
a trial left running by a dead worker is failed and retried."""

from __future__ import annotations

import dataclasses
import os
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..config import Config
from ..training import DivergedError
from .objective import make_objective
from .sampling import make_pruner, make_sampler
from .storage import make_storage, study_lock

if TYPE_CHECKING:  # pragma: no cover
    from ..tracking import SearchTracker


def _process_start(pid: int) -> Optional[str]:
    """The start time of ``pid`` (Linux ``/proc``), so a reused pid is not taken for alive."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie is dead
        return None
    return fields[19]


def _owner() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _process_start(os.getpid())}


def _owner_alive(owner: dict[str, Any]) -> Optional[bool]:
    """True/False for a worker of this machine; None when it ran elsewhere (unknown)."""
    if owner.get("host") != socket.gethostname():
        return None
    pid = int(owner.get("pid", -1))
    if pid <= 0:
        return False
    start = owner.get("start")
    if start is not None or Path("/proc").is_dir():
        return _process_start(pid) is not None and _process_start(pid) == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def budget_used(trials: list[FrozenTrial]) -> int:
    """Trials that count toward ``search.trials``: finished, running, and failed ones that
    were not retried (a trial lost with its worker is retried and counted once)."""
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}  # RDB heartbeat retries
    used = 0
    for t in trials:
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
            used += 1
        elif t.state == TrialState.FAIL and not t.user_attrs.get("retried", False) and t.number not in retried:
            used += 1
    return used


def recover_stale_trials(study: optuna.Study, tracker: Optional["SearchTracker"] = None) -> list[int]:
    """Fail every RUNNING trial whose worker process (on this machine) is gone and enqueue
    its parameters again, so the budget is not short by the lost trials. Returns the
    numbers of the failed trials. (Trials of other machines: RDB heartbeat, see
    :func:`make_storage`.)"""
    if is_heartbeat_storage(study):
        optuna.storages.fail_stale_trials(study)
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get("worker")
        if not isinstance(owner, dict) or _owner_alive(owner) is not False:
            continue
        reason = f"worker died mid-trial (pid {owner.get('pid')} on {owner.get('host')}); retried as a new trial"
        try:
            study._storage.set_trial_user_attr(t._trial_id, "fail_reason", reason)
            study._storage.set_trial_user_attr(t._trial_id, "retried", True)
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # finished meanwhile
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.user_attrs.get("retry_of", t.number)})
        if tracker is not None:
            tracker.kill_trial(t.user_attrs.get("mlflow_run_id"), reason)
        failed.append(t.number)
    return failed


def is_heartbeat_storage(study: optuna.Study) -> bool:
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(study._storage)


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
        from ..data import load_processed

        return load_processed(data)
    return data


def _say(job: WorkerJob, msg: str) -> None:
    if not job.quiet:
        prefix = f"[worker {job.index}] " if job.index else ""
        print(prefix + msg, flush=True)


def run_worker(job: WorkerJob) -> int:
    """Ask, train, tell until the study's budget (``search.trials``) is used; returns the
    number of trials this worker ran. Asking is serialised by a file lock, so several
    processes never overshoot the budget together. Each worker seeds its sampler with its
    own slot in the study (:func:`join_study`), so concurrent workers, in one ``dpap
    search`` or in several, never draw the same knobs; a lone worker has slot 0, the seed
    of a single-worker search."""
    if job.threads:
        import torch

        torch.set_num_threads(job.threads)
    cfg = job.cfg
    data = _load_data(job.data)
    storage = make_storage(job.storage)
    out = Path(job.out_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        with study_lock(job.storage, out, job.study_name):
            plain = optuna.load_study(study_name=job.study_name, storage=storage)
            slot = join_study(plain)
            salt = worker_salt(slot, len(plain.trials))
        study = optuna.load_study(study_name=job.study_name, storage=storage, sampler=make_sampler(cfg, salt), pruner=make_pruner(cfg))
    try:
        tracker = None
        if job.tracking_uri and job.parent_run_id:
            from ..tracking import SearchTracker

            tracker = SearchTracker(job.tracking_uri, job.parent_run_id, job.experiment_id)
        objective = make_objective(cfg, data, tracker=tracker, checkpoint_dir=out / "checkpoints" / job.study_name)
        ran = 0
        while True:
            with study_lock(job.storage, out, job.study_name):
                recover_stale_trials(study, tracker)
                if budget_used(study.get_trials(deepcopy=False)) >= cfg.search.trials:
                    break
                trial = study.ask()
                trial.set_user_attr("worker", _owner())
            ran += 1
            _run_trial(job, study, trial, objective)
        return ran
    finally:
        with study_lock(job.storage, out, job.study_name):
            leave_study(study, slot)


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
    process is gone frees its slot) and record this process in it. Call under
    :func:`study_lock`."""
    held = study.user_attrs.get(WORKERS_ATTR) or {}
    live = {k: o for k, o in held.items() if isinstance(o, dict) and _owner_alive(o) is not False}
    slot = 0
    while str(slot) in live:
        slot += 1
    live[str(slot)] = _owner()
    study.set_user_attr(WORKERS_ATTR, live)
    return slot


def leave_study(study: optuna.Study, slot: int) -> None:
    """Free ``slot`` (:func:`join_study`) when this process holds it. Call under
    :func:`study_lock`."""
    held = dict(study.user_attrs.get(WORKERS_ATTR) or {})
    owner = held.get(str(slot))
    if isinstance(owner, dict) and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
        del held[str(slot)]
        study.set_user_attr(WORKERS_ATTR, held)


def _run_trial(job: WorkerJob, study: optuna.Study, trial: optuna.Trial, objective) -> None:
    from optuna.storages._heartbeat import get_heartbeat_thread

    t0 = time.perf_counter()
    try:
        with get_heartbeat_thread(trial._trial_id, study._storage):
            value = objective(trial)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
        _say(job, f"trial {trial.number:3d} pruned   ({time.perf_counter() - t0:5.1f}s): {trial.user_attrs.get('prune_reason', '')}")
        return
    except DivergedError:
        study.tell(trial, state=TrialState.FAIL)
        _say(job, f"trial {trial.number:3d} failed   ({time.perf_counter() - t0:5.1f}s): {trial.user_attrs.get('fail_reason')}")
        return
    except KeyboardInterrupt:
        # Not the trial's fault: fail it and queue its parameters again for the next session.
        trial.set_user_attr("fail_reason", "interrupted (Ctrl-C); retried when the search is resumed")
        trial.set_user_attr("retried", True)
        study.tell(trial, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.user_attrs.get("retry_of", trial.number)})
        raise
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)
        raise
    study.tell(trial, value)
    u = trial.user_attrs
    mark = "feasible" if u.get("feasible") else "infeasible"
    _say(job, f"trial {trial.number:3d} complete ({time.perf_counter() - t0:5.1f}s): accuracy {value:.4f}, compression {u.get('compression', float('nan')):.3f} ({mark})")


def _spawned_worker(job: WorkerJob) -> int:
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return run_worker(job)
    except KeyboardInterrupt:
        return -1
