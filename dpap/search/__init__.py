"""Optuna search for the pruning knobs that hit a chosen compression (issue 5): DPAP's
survival-function knobs, or SD-SNN's (``sdsnn.fc_rate_gain``, ...) with ``dpap.method: sdsnn``.

The search tunes β, ε, η and C (``dpap.epsilon``, ``dpap.conv.*``, ``dpap.fc.*``; ranges
in ``search.ranges``) to maximise accuracy (validation when there is a split, else test)
subject to ``|compression − target| ≤ tolerance``, written as an Optuna 5 constraint
(:meth:`optuna.trial.Trial.set_constraint`), so ``study.best_trial`` is the best
*feasible* trial. The knob ``search.control`` (ε) is not sampled but solved for, trial by
trial, from the compressions seen so far (:mod:`dpap.target_sampler`). Every trial is one call of :func:`dpap.training.fit`, the project's only
training loop; a per-epoch callback reports to the pruner and stops trials that can no
longer be feasible (compression already above ``target + tolerance``: pruning is
permanent, so compression only grows; or compression below the band while no survival
function can reach 0 in the epochs left).

Library use (a notebook)::

    study = optuna.create_study(direction="maximize", pruner=FeasiblePercentilePruner())
    study.optimize(make_objective(cfg, data), n_trials=20, catch=(DivergedError,))
    best_overrides(study.best_trial)   # {"dpap.conv.beta": ..., ...}

The command line (``dpap search``) runs :func:`run_search`: a resumable study in a
journal file (or any RDB URL), N worker processes sharing one trial budget (and any other
``dpap search`` started on the same storage: each worker seeds its sampler apart), one
MLflow parent run per study with a nested run per trial, ``best_params.yaml``, a scatter
plot and a summary table, written whole from the finished study.
"""

from .best import apply_best, best_params_overlay, dvc_exp_command, write_best_params
from .errors import SearchError
from .feasibility import (
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
from .figures import plot_trials, study_figures
from .files import atomic_write
from .objective import make_objective
from .reports import SearchResult, format_summary, search_params, study_state_key, summarize, write_outputs
from .sampling import make_pruner, make_sampler
from .space import (
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
from .storage import is_rdb_url, make_storage, shown_storage, storage_error, storage_errors, storage_key, study_lock
from .study import open_study, run_search, wait_for_other_workers
from .workers import (
    WORKERS_ATTR,
    WorkerJob,
    budget_used,
    is_heartbeat_storage,
    join_study,
    leave_study,
    recover_stale_trials,
    run_worker,
    worker_salt,
)

EXPERIMENT = "dpap-search"  # = tracking.SEARCH_EXPERIMENT (tracking imports MLflow; this package must not)
