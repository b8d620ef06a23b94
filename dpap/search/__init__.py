"""Optuna search for the pruning knobs that hit a chosen compression (issue 5): DPAP's
survival-function knobs, or SD-SNN's (``sdsnn.fc_rate_gain``, ...) with ``pruning.method: sdsnn``.

The search tunes β, ε, η and C (``pruning.dpap.epsilon``, ``pruning.dpap.conv.*``, ``pruning.dpap.fc.*``; ranges
in ``search.ranges``) to maximise accuracy (validation when there is a split, else test)
subject to ``|compression − target| ≤ tolerance``, written as an Optuna 5 constraint
(:meth:`optuna.trial.Trial.set_constraint`), so ``study.best_trial`` is the best
*feasible* trial. The knob ``search.control`` (ε) is not sampled but solved for, trial by
trial, from the compressions seen so far (:mod:`dpap.search.target_sampler`). Every trial is one
call of :func:`dpap.training.loop.fit`, the project's only training loop; a per-epoch callback
reports to the pruner and stops trials that can no longer be feasible (compression
already above ``target + tolerance``: pruning is permanent, so compression never falls; or
compression below the band while no survival function can reach 0 in the epochs left).

Library use (a notebook)::

    study = optuna.create_study(direction="maximize", pruner=FeasiblePercentilePruner())
    study.optimize(make_objective(cfg, data), n_trials=20, catch=(Exception,))
    best_overrides(study.best_trial)   # {"pruning.dpap.conv.beta": ..., ...}

The command line (``dpap search``) runs :func:`run_search`: a resumable study in a
journal file (one machine) or a PostgreSQL database (workers on several machines), worker
processes sharing one trial budget (and any other ``dpap search`` started on the same
storage: each worker seeds its sampler apart), one MLflow parent run per study with a
nested run per trial (:class:`dpap.search.tracker.SearchTracker`; each trial logged by
the project's one MLflow writer, :class:`dpap.tracking.MlflowCallback`),
``best_params.yaml``, a scatter plot and a summary table, written whole from the finished
study.

One module per job:

=============== =====================================================================
``space``       the knobs (``search.ranges``), their params.yaml keys, the settings a
                study is made for, their checks
``sampling``    the sampler (TPE + the control knob solved for the target) and pruner
``feasibility`` the constraint, the per-epoch monitor, the feasible-percentile pruner
``objective``   one trial: sample, ``fit``, record
``storage``     journal file or RDB URL, opened with one-line errors
``storage_url`` the storage string: RDB URL or file, shown with a password masked, its
                one-line error
``locks``       the study's lock (PostgreSQL advisory lock, or Optuna's journal lock file)
``recovery``    trials lost with their worker: heartbeat / process check, failed, retried
``workers``     the ask-train-tell loop of one worker process
``study``       a whole search: open, run workers, wait for the others, write outputs
``reports``     summary.json, the summary table, the MLflow parent run's summary
``tracker``     MLflow: the study's parent run and a nested run per trial
``figures``     accuracy-vs-compression plot and Optuna's figures
``best``        best_params.yaml and ``dpap apply-best``
``files``       files written whole
=============== =====================================================================
"""

from dpap.search.best import apply_best, best_params_overlay, dvc_exp_command, write_best_params
from dpap.search.errors import SearchError
from dpap.search.feasibility import (
    CONSTRAINT,
    UNMEASURED_VIOLATION,
    FeasiblePercentilePruner,
    TrialMonitor,
    accuracy_of,
    can_still_prune,
    constraint_value,
    dashboard_constraints,
    is_feasible,
)
from dpap.search.figures import plot_trials, study_figures
from dpap.search.files import atomic_write
from dpap.search.objective import make_objective
from dpap.search.reports import SearchResult, format_summary, search_params, study_state_key, summarize, write_outputs
from dpap.search.sampling import make_trial_pruner, make_sampler
from dpap.search.space import (
    best_overrides,
    check_search,
    current_knobs,
    knob_value,
    params_to_overrides,
    search_epochs,
    search_fingerprint,
    suggest_overrides,
    trial_config,
)
from dpap.search.locks import FileStudyLock, PostgresStudyLock, is_postgres_url, study_lock
from dpap.search.recovery import MAX_RETRY, Heartbeat, TrialRecovery, budget_used, is_retried, recover_lost_trials, retry_history, trial_id
from dpap.search.storage import make_storage, storage_errors, storage_key
from dpap.search.storage_url import is_rdb_url, shown_storage, storage_error
from dpap.search.study import open_study, run_search, run_workers, wait_for_other_workers
from dpap.search.tracker import SEARCH_EXPERIMENT, SUMMARY_TAG, SearchTracker, find_parent_run
from dpap.search.workers import WORKERS_ATTR, WorkerJob, join_study, leave_study, open_storage, run_worker, worker_salt

EXPERIMENT = SEARCH_EXPERIMENT
"""The MLflow experiment of the search (:data:`dpap.search.tracker.SEARCH_EXPERIMENT`)."""
