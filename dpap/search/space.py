"""The search space: which knobs a trial samples (``search.ranges``) and how they map to
params.yaml keys, the settings a study is made for, and the checks of those settings
before anything runs."""

from __future__ import annotations

from typing import Any, Optional

import optuna
from optuna.trial import FrozenTrial

from dpap.config import Config, config_from_dict, get_dotted, set_dotted
from dpap.training.setup import fingerprint
from dpap.search.errors import SearchError


def check_search(cfg: Config, workers: int = 1) -> None:
    """Validate the search settings once, before anything is loaded or trained.

    ``load_params`` already checks target ∈ (0, 1), tolerance > 0, trials ≥ 1 and each
    range; this adds what only the search needs."""
    s = cfg.search
    if not 0 < s.target < 1:
        raise SearchError(f"search.target: got {s.target!r}, expected a number in (0, 1)")
    if not s.tolerance > 0:
        raise SearchError(f"search.tolerance: got {s.tolerance!r}, expected a number > 0")
    if s.trials < 1:
        raise SearchError(f"search.trials: got {s.trials!r}, expected an integer >= 1")
    if not s.ranges:
        raise SearchError("search.ranges: empty; give at least one knob, e.g. pruning.dpap.fc.epsilon: {low: 0.3, high: 1.2}")
    for name, r in s.ranges.items():
        if not r.low < r.high:
            raise SearchError(f"search.ranges.{name}: empty range [{r.low}, {r.high}]; low must be < high")
    if s.grace_period <= s.heartbeat_interval:
        raise SearchError(f"search.grace_period: {s.grace_period} s is not above search.heartbeat_interval ({s.heartbeat_interval} s), so live workers' trials "
                          f"would be failed as lost; give it at least twice the interval, e.g. search.grace_period={3 * s.heartbeat_interval}")
    if workers < 1:
        raise SearchError(f"--workers: got {workers}, expected an integer >= 1")
    if not cfg.pruning.enabled:
        raise SearchError("pruning.enabled is false: nothing is pruned, so no compression can be searched for")


def search_epochs(cfg: Config) -> int:
    return cfg.search.epochs if cfg.search.epochs is not None else cfg.train.epochs


def suggest_overrides(trial: optuna.Trial, cfg: Config) -> dict[str, float]:
    """Sample every knob of ``search.ranges``; returns dotted overrides (``pruning.dpap.conv.beta``).
    The control knob comes last: :class:`~dpap.search.target_sampler.TargetSampler` solves for it
    given the others."""
    control = cfg.search.control
    names = sorted(cfg.search.ranges, key=lambda n: (n == control, n))
    out = {}
    for name in names:
        r = cfg.search.ranges[name]
        out[name] = trial.suggest_float(name, r.low, r.high, log=r.log)
    return out


def knob_value(cfg: Config, name: str, conv_mode: str = "channels") -> float:
    """The value params.yaml resolves a search knob to (``pruning.dpap.epsilon``,
    ``pruning.dpap.fc.beta``: with the protocol's default filled in; DPAP's ``conv.*`` for
    a network whose conv layers it prunes by ``conv_mode``)."""
    _, method, knob = name.split(".", 2)
    if method == "dpap":
        return cfg.pruning.dpap.knob(knob, conv_mode)
    return getattr(cfg.pruning, method).knob(knob)


def current_knobs(cfg: Config, conv_mode: str = "channels") -> Optional[dict[str, float]]:
    """The knobs params.yaml resolves to (protocol defaults filled in) for a network whose
    conv layers DPAP prunes by ``conv_mode``, as Optuna params, when every one lies in its
    search range; else None. A searched top-level ``pruning.dpap.epsilon`` takes the FC
    layers' ε and, set, applies to the conv layers too: that first trial then runs conv ε
    at the FC value (1.1, not the channels' 0.9 of an FC-heavy network); likewise a
    searched ``fc.*`` knob or ``epsilon`` sets an FC network's first layer (``fc_input``,
    ε 0.9) to the other FC layers' value."""
    out = {}
    for name, r in cfg.search.ranges.items():
        value = knob_value(cfg, name, conv_mode)
        if not r.low <= value <= r.high:
            return None
        out[name] = value
    return out


def params_to_overrides(params: dict[str, Any]) -> dict[str, float]:
    """Optuna parameter names are the params keys they set (``pruning.dpap.conv.beta``)."""
    return dict(params)


def best_overrides(trial: FrozenTrial) -> dict[str, float]:
    return params_to_overrides(trial.params)


def trial_config(cfg: Config, overrides: dict[str, Any]) -> Config:
    """``cfg`` with ``overrides`` applied and ``train.epochs`` set to the search's epochs."""
    raw = cfg.to_dict()
    raw["train"]["epochs"] = search_epochs(cfg)
    for key, value in overrides.items():
        set_dotted(raw, key, value)
    return config_from_dict(raw)


def search_fingerprint(cfg: Config, data_hash: str = "") -> dict[str, Any]:
    """What a study was created for; resuming with other values would mix incomparable trials.

    The searched knobs are blanked, so applying the best params to params.yaml and re-running
    the same command still resumes the study."""
    raw = cfg.to_dict()
    blank = Config().to_dict()
    for name in cfg.search.ranges:  # each knob blank to its default (DPAP's: None, the protocol's)
        set_dotted(raw, name, get_dotted(blank, name))
    raw["train"]["epochs"] = search_epochs(cfg)
    base = config_from_dict(raw)
    return {
        "target": cfg.search.target,
        "tolerance": cfg.search.tolerance,
        "epochs": search_epochs(cfg),
        "ranges": {k: [r.low, r.high, r.log] for k, r in sorted(cfg.search.ranges.items())},
        "training": fingerprint(base, data_hash),
    }
