"""Trials lost with their worker: found, failed, retried, and counted once.

A worker that dies mid-trial (killed, out of memory, its machine gone) leaves its trial
RUNNING. Another worker of the study finds it and fails it, and Optuna's
:class:`~optuna.storages.RetryHeartbeatStaleTrialCallback` queues its knobs again as a new
(WAITING) trial, which records the original in ``retry_history``; the retry resumes from
the lost trial's last epoch checkpoint (:func:`dpap.search.objective.make_objective`).
How a lost trial is found depends on the storage:

* RDB (PostgreSQL, SQLite): Optuna's heartbeat. A running trial records a heartbeat every
  ``search.heartbeat_interval`` s (:class:`Heartbeat`, through the storage's public
  ``record_heartbeat``); :func:`optuna.storages.fail_stale_trials` fails a trial silent for
  ``search.grace_period`` s, on any machine, and calls :class:`TrialRecovery`.
* Journal file (one machine; no heartbeat in Optuna's journal storage): the trial's
  ``worker`` user attribute names its process (host, pid, start time); a trial whose
  process is gone is failed, with ``fail_reason`` and ``retried`` user attributes, and
  handed to the same callback.

Only public Optuna API: the storage object the search made (never ``study._storage``),
its methods with trial ids from ``get_trial_id_from_study_id_trial_number``.
"""

from __future__ import annotations

import os
import socket
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:  # pragma: no cover
    from dpap.search.tracker import SearchTracker

MAX_RETRY = 3
"""Times one trial's knobs are retried after its worker was lost; then it counts as failed."""


# ------------------------------------------------------------------ worker processes


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


def this_worker() -> dict[str, Any]:
    """This process as a trial's ``worker`` user attribute: host, pid, start time."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _process_start(os.getpid())}


def worker_alive(owner: dict[str, Any]) -> Optional[bool]:
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


# --------------------------------------------------------------------------- ids


def trial_id(storage: optuna.storages.BaseStorage, study_name: str, number: int) -> int:
    """The storage's id of trial ``number`` of ``study_name`` (public storage methods)."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)


def retry_history(trial: FrozenTrial) -> list[int]:
    """The trials this one retries, the original first (Optuna's record; [] if none)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return list(RetryHeartbeatStaleTrialCallback.retry_history(trial))


def is_retried(trial: FrozenTrial, retried: set[int]) -> bool:
    """A FAIL trial whose knobs were queued again (its number in a ``retry_history`` of the
    study, ``retried``; or, in studies of earlier versions, its ``retried`` user attribute)."""
    return trial.state == TrialState.FAIL and (trial.number in retried or bool(trial.user_attrs.get("retried")))


def budget_used(trials: list[FrozenTrial]) -> int:
    """Trials that count toward ``search.trials``: finished, running, and failed ones that
    were not retried (a trial lost with its worker is retried and counted once)."""
    retried = {n for t in trials for n in retry_history(t)}
    return sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING) or (t.state == TrialState.FAIL and not is_retried(t, retried)))


# ------------------------------------------------------------------------ recovery


class TrialRecovery:
    """Retry a lost trial with Optuna's :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback`
    (at most :data:`MAX_RETRY` times per original trial) and end its MLflow run KILLED.

    It is the RDB storage's ``heartbeat_stale_trial_callback`` (called by
    :func:`optuna.storages.fail_stale_trials` with the trial already failed), and
    :meth:`fail_and_retry` fails a trial first (a journal worker that died, Ctrl-C).
    ``tracker`` may be set later (the storage is made before the MLflow parent run)."""

    def __init__(self, grace_period: Optional[int] = None, max_retry: int = MAX_RETRY):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        self.max_retry = max_retry
        self.grace_period = grace_period
        self.tracker: Optional["SearchTracker"] = None
        self.recovered: list[int] = []
        """Numbers of the trials this object failed or was handed, in order."""

    def will_retry(self, trial: FrozenTrial) -> bool:
        return len(retry_history(trial)) < self.max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """A trial Optuna failed for its missing heartbeat: retry it."""
        reason = f"no heartbeat for {self.grace_period} s (its worker died or lost the database mid-trial)"
        self._retry(study, trial, reason + ("; retried as a new trial" if self.will_retry(trial) else f"; not retried: retried {self.max_retry} times already"))

    def fail_and_retry(self, study: optuna.Study, storage: optuna.storages.BaseStorage, trial: FrozenTrial, reason: str) -> bool:
        """Fail the RUNNING ``trial`` (its ``fail_reason`` and ``retried`` user attributes
        first: a finished trial takes none) and retry it. False when it finished meanwhile."""
        tid = trial_id(storage, study.study_name, trial.number)
        again = self.will_retry(trial)
        reason += "; retried as a new trial" if again else f"; not retried: retried {self.max_retry} times already"
        try:
            storage.set_trial_user_attr(tid, "fail_reason", reason)
            storage.set_trial_user_attr(tid, "retried", again)
            storage.set_trial_state_values(tid, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            return False
        self._retry(study, trial, reason)  # ``trial``: the snapshot before those attributes, which the retry copies
        return True

    def _retry(self, study: optuna.Study, trial: FrozenTrial, reason: str) -> None:
        self.retry(study, trial)
        self.recovered.append(trial.number)
        if self.tracker is not None:
            self.tracker.kill_trial(trial.user_attrs.get("mlflow_run_id"), reason)


def heartbeat_enabled(storage: optuna.storages.BaseStorage) -> bool:
    return isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None


def recover_lost_trials(study: optuna.Study, storage: optuna.storages.BaseStorage, recovery: TrialRecovery) -> list[int]:
    """Fail and retry every RUNNING trial whose worker is gone: by heartbeat in an RDB
    storage, by process on this machine in a journal. Returns the trials' numbers. Call
    under the study's lock (:func:`dpap.search.locks.study_lock`)."""
    first = len(recovery.recovered)
    if heartbeat_enabled(storage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # calls ``recovery`` for each
        return recovery.recovered[first:]
    for t in study.get_trials(deepcopy=True, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get("worker")
        if isinstance(owner, dict) and worker_alive(owner) is False:
            recovery.fail_and_retry(study, storage, t, f"worker died mid-trial (pid {owner.get('pid')} on {owner.get('host')})")
    return recovery.recovered[first:]


# ------------------------------------------------------------------------ heartbeat


class Heartbeat:
    """While a trial runs, record its heartbeat in an RDB storage every
    ``heartbeat_interval`` s from a thread (the first one at :meth:`start`); nothing for a
    journal. ``on_error`` gets a failed write (the database unreachable for a moment:
    the next beat tries again)."""

    def __init__(self, storage: optuna.storages.BaseStorage, trial_id: int, on_error: Optional[Callable[[Exception], None]] = None):
        self.storage = storage
        self.trial_id = trial_id
        self.interval = storage.get_heartbeat_interval() if heartbeat_enabled(storage) else None
        self.on_error = on_error
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> "Heartbeat":
        if self.interval is None:
            return self
        self.storage.record_heartbeat(self.trial_id)
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"dpap-heartbeat-{self.trial_id}")
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception as exc:  # noqa: BLE001 - a missed beat; the grace period allows several
                if self.on_error is not None:
                    self.on_error(exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
