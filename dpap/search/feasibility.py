"""Feasibility of a trial (``|compression − target| ≤ tolerance``, an Optuna 5 constraint)
and the early stopping of trials that can no longer be feasible: the per-epoch
:class:`TrialMonitor` and the :class:`FeasiblePercentilePruner`."""

from __future__ import annotations

import math
from typing import Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from dpap.config import Config
from dpap.training.history import EpochMetrics
from dpap.training.loop import TrainingRun
from dpap.search.space import search_epochs


CONSTRAINT = "compression"
"""Name of the constraint ``|compression − target| − tolerance`` (feasible when ≤ 0)."""


def constraint_value(compression: float, target: float, tolerance: float) -> float:
    """``|compression − target| − tolerance``: feasible when ≤ 0."""
    return abs(compression - target) - tolerance


def is_feasible(trial: FrozenTrial) -> bool:
    c = trial.constraints
    return trial.state == TrialState.COMPLETE and bool(c) and all(v <= 0.0 for v in c.values())


def can_still_prune(run: TrainingRun, epochs: int) -> bool:
    """Whether any living synapse or unit can still die in the epochs left (the pruning
    method's bound, e.g. Eq. 12-17 for DPAP). True whenever the method cannot tell."""
    if run.pruner is None:
        return False
    return run.pruner.method.can_still_prune(run.pruner, range(run.epoch, epochs))


class TrialMonitor:
    """Per-epoch callback of :func:`dpap.training.loop.fit` for one Optuna trial.

    Reports the accuracy to the pruner (``trial.report(acc, epoch)``) and raises
    :class:`optuna.TrialPruned` when the trial is hopeless: compression above ``target +
    tolerance`` (it only grows), compression below the band while nothing can die any more,
    or the pruner says so. Keeps the training run in :attr:`run`. A run resumed from a
    checkpoint sets the user attribute ``resumed_epochs`` (the epochs it brought)."""

    def __init__(self, trial: optuna.Trial, cfg: Config):
        self.trial = trial
        self.target = cfg.search.target
        self.tolerance = cfg.search.tolerance
        self.epochs = search_epochs(cfg)
        self.reported: set[int] = set()
        self.run: Optional[TrainingRun] = None

    def __call__(self, run: TrainingRun, m: EpochMetrics) -> None:
        if self.run is None and m.epoch > 0:  # the first epoch run here follows a checkpoint's
            self.trial.set_user_attr("resumed_epochs", m.epoch)
        self.run = run
        # A run resumed from a checkpoint brings earlier epochs: report those too.
        for past in run.history:
            if past.epoch in self.reported:
                continue
            self.reported.add(past.epoch)
            self.trial.report(accuracy_of(past), past.epoch)
        c = m.compression
        t = self.trial
        high = self.target + self.tolerance
        if c > high and (run.pruner is None or run.pruner.method.permanent):  # SD-SNN regrows: it may come back
            self._prune(c, f"compression {c:.3f} > target + tolerance {high:.3f} after epoch {m.epoch + 1}; pruning is permanent, so compression cannot fall")
        low = self.target - self.tolerance
        if c < low and run.epoch < self.epochs and not can_still_prune(run, self.epochs):
            self._prune(c, f"compression {c:.3f} < {low:.3f} after epoch {m.epoch + 1} and no survival function can reach 0 in the {self.epochs - run.epoch} epochs left")
        if t.should_prune():
            t.set_user_attr("prune_reason", f"accuracy {accuracy_of(m):.4f} after epoch {m.epoch + 1} is below the feasible trials' (pruner)")
            raise optuna.TrialPruned()

    def _prune(self, compression: float, reason: str) -> None:
        self.trial.set_user_attr("prune_reason", reason)
        self.trial.set_user_attr("compression", compression)
        self.trial.set_constraint(CONSTRAINT, constraint_value(compression, self.target, self.tolerance))
        raise optuna.TrialPruned(reason)


def accuracy_of(m: EpochMetrics) -> float:
    """The search's accuracy: validation when a split exists, else test."""
    return m.val_accuracy if m.val_accuracy is not None else m.test_accuracy


class FeasiblePercentilePruner(optuna.pruners.BasePruner):
    """Prune a trial whose accuracy at an epoch is below the ``percentile`` of the
    *feasible* complete trials' accuracies at that epoch.

    Comparing with every trial (Optuna's Median/PercentilePruner) would stop the trials we
    want: the least compressed (infeasible) trials are the most accurate, so a trial on
    course for the target would look bad next to them."""

    def __init__(self, percentile: float = 25.0, n_min_trials: int = 3, n_warmup_steps: int = 0):
        if not 0 <= percentile <= 100:
            raise ValueError(f"percentile: got {percentile}, expected a number in [0, 100]")
        self.percentile = percentile
        self.n_min_trials = n_min_trials
        self.n_warmup_steps = n_warmup_steps

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step < self.n_warmup_steps:
            return False
        value = trial.intermediate_values[step]
        others = [
            t.intermediate_values[step]
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if is_feasible(t) and step in t.intermediate_values
        ]
        if len(others) < self.n_min_trials:
            return False
        others.sort()
        rank = (len(others) - 1) * self.percentile / 100.0
        lo, hi = math.floor(rank), math.ceil(rank)
        threshold = others[lo] + (others[hi] - others[lo]) * (rank - lo)
        return value < threshold


def dashboard_constraints(trial: FrozenTrial) -> tuple[float]:
    """The trial's constraint as a sampler's ``constraints_func`` returns it: the sampler
    then records it under the system attribute ``constraints``, the form optuna-dashboard
    reads (it ignores ``trial.set_constraint``'s named key), so the dashboard's best trial
    is a feasible one. A trial stopped before its compression was measured is infeasible,
    by :data:`UNMEASURED_VIOLATION` (finite: the dashboard parses the trials as JSON, which
    has no ``Infinity``, and a single infinite value blanks its whole study page)."""
    value = trial.constraints.get(CONSTRAINT)
    return (float(value) if value is not None else UNMEASURED_VIOLATION,)


# |compression − target| − tolerance is at most 1 for compressions in [0, 1]: 1 is worse
# than every measured trial and still a plain JSON number.
UNMEASURED_VIOLATION = 1.0
