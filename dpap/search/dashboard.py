"""optuna-dashboard over a search's storage, with the best *feasible* trial as the best.

optuna-dashboard reads each trial's constraints (the system attribute ``constraints``, which
our sampler's ``constraints_func`` writes) and greys infeasible trials in its plots, but its
"Best Trial" card asks the storage for ``get_best_trial``, which ranks every complete trial
by value and ignores constraints (optuna-dashboard 0.21; Optuna's own ``Study.best_trial``
does honour them). In a compression search the most accurate trials are the least pruned,
hence infeasible, so plain ``optuna-dashboard <storage>`` names a trial that misses the target.
:class:`FeasibleBestStorage` answers ``get_best_trial`` the way :attr:`optuna.Study.best_trial`
does and passes every other call through unchanged; ``dpap dashboard`` serves it with
:func:`optuna_dashboard.run_server`.
"""

from __future__ import annotations

from typing import Any, Callable

import optuna
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from dpap.search.storage import make_storage

CONSTRAINTS_KEY = "constraints"  # where a sampler's constraints_func stores the values


def is_feasible_trial(trial: FrozenTrial) -> bool:
    """Complete, and every constraint value ≤ 0 (Optuna's definition of feasible)."""
    c = trial.system_attrs.get(CONSTRAINTS_KEY)
    return trial.state == TrialState.COMPLETE and c is not None and all(v <= 0.0 for v in c)


def best_feasible_trial(trials: list[FrozenTrial], direction: StudyDirection) -> FrozenTrial | None:
    """The best complete trial among the feasible ones; ``None`` when none is feasible.
    In a study without constraints every complete trial counts."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    constrained = any(CONSTRAINTS_KEY in t.system_attrs for t in complete)
    pool = [t for t in complete if is_feasible_trial(t)] if constrained else complete
    if not pool:
        return None
    pick = max if direction == StudyDirection.MAXIMIZE else min
    return pick(pool, key=lambda t: t.value)


def _delegate(name: str) -> Callable[..., Any]:
    def method(self, *args, **kwargs):
        return getattr(self.base, name)(*args, **kwargs)

    method.__name__ = name
    return method


def _storage_methods() -> list[str]:
    return [n for n in dir(BaseStorage) if not n.startswith("_") and callable(getattr(BaseStorage, n)) and n != "get_best_trial"]


class _Delegating(BaseStorage):
    """Every public :class:`~optuna.storages.BaseStorage` method passed to ``self.base``."""

    locals().update({_n: _delegate(_n) for _n in _storage_methods()})

    def __init__(self, base: BaseStorage):
        self.base = base


class FeasibleBestStorage(_Delegating):
    """``base`` with :meth:`get_best_trial` restricted to feasible trials (when no trial is
    feasible yet, ``base``'s own answer, which the dashboard then shows greyed as infeasible).
    Every other storage call goes to ``base`` unchanged."""

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        (direction,) = self.base.get_study_directions(study_id)
        trials = self.base.get_all_trials(study_id, deepcopy=False, states=(TrialState.COMPLETE,))
        best = best_feasible_trial(trials, direction)
        return best if best is not None else self.base.get_best_trial(study_id)


def serve(storage: str, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve optuna-dashboard for ``storage`` (a journal file or an RDB URL) until Ctrl-C."""
    import optuna_dashboard

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna_dashboard.run_server(FeasibleBestStorage(make_storage(storage)), host=host, port=port)
