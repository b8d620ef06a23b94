"""The study's sampler (TPE, feasibility-aware, with the control knob solved for the
target) and pruner (:class:`~dpap.search.feasibility.FeasiblePercentilePruner`)."""

from __future__ import annotations

import warnings

import optuna

from dpap.config import Config
from dpap.search.target_sampler import TargetSampler
from dpap.search.feasibility import FeasiblePercentilePruner, dashboard_constraints
from dpap.search.space import search_epochs


def make_sampler(cfg: Config, salt: int = 0) -> optuna.samplers.BaseSampler:
    """TPE (feasibility-aware through the trials' constraints), with ``search.control``
    steered toward the target by :class:`~dpap.search.target_sampler.TargetSampler`. ``salt``
    varies the seed between worker processes and between resumed sessions, so they do not
    repeat draws."""
    n = cfg.search.trials
    seed = (cfg.search.seed * 1_000_003 + salt) % (2**31)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", FutureWarning)  # constraints_func: still what optuna-dashboard reads
        tpe = optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=min(10, max(3, n // 4)),
            multivariate=True,
            constant_liar=True,
            constraints_func=dashboard_constraints,
        )
    if cfg.search.control is None:
        return tpe
    return TargetSampler(tpe, cfg.search.control, cfg.search.target, seed=seed, epochs=search_epochs(cfg))


def make_trial_pruner(cfg: Config) -> FeasiblePercentilePruner:
    return FeasiblePercentilePruner(25.0, n_min_trials=3, n_warmup_steps=max(1, search_epochs(cfg) // 3))
