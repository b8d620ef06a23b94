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

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import multiprocessing
import os
import socket
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from .config import Config, ConfigError, SearchConfig, config_from_dict, set_dotted
from .file_lock import file_lock
from .params_file import flatten_dotted, merge_into_params
from .target_sampler import TargetSampler
from .training import DivergedError, EpochMetrics, TrainingRun, fingerprint, fit

if TYPE_CHECKING:  # pragma: no cover
    from .tracking import SearchTracker

EXPERIMENT = "dpap-search"  # = tracking.SEARCH_EXPERIMENT (tracking imports MLflow; this module must not)
CONSTRAINT = "compression"
"""Name of the constraint ``|compression − target| − tolerance`` (feasible when ≤ 0)."""


class SearchError(ValueError):
    """Bad search input or a study that cannot be resumed; the CLI prints it as one line."""


# ------------------------------------------------------------------------ settings


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
        raise SearchError("search.ranges: empty; give at least one knob, e.g. fc.epsilon: {low: 0.3, high: 1.2}")
    for name, r in s.ranges.items():
        if not r.low < r.high:
            raise SearchError(f"search.ranges.{name}: empty range [{r.low}, {r.high}]; low must be < high")
    if workers < 1:
        raise SearchError(f"--workers: got {workers}, expected an integer >= 1")
    if not cfg.dpap.enabled:
        raise SearchError("dpap.enabled is false: nothing is pruned, so no compression can be searched for")


def search_epochs(cfg: Config) -> int:
    return cfg.search.epochs if cfg.search.epochs is not None else cfg.train.epochs


def suggest_overrides(trial: optuna.Trial, cfg: Config) -> dict[str, float]:
    """Sample every knob of ``search.ranges``; returns dotted overrides (``dpap.conv.beta``).
    The control knob comes last: :class:`~dpap.target_sampler.TargetSampler` solves for it
    given the others."""
    control = cfg.search.control
    names = sorted(cfg.search.ranges, key=lambda n: (n == control, n))
    out = {}
    for name in names:
        r = cfg.search.ranges[name]
        out[f"dpap.{name}"] = trial.suggest_float(name, r.low, r.high, log=r.log)
    return out


def knob_value(cfg: Config, name: str) -> float:
    """The value params.yaml resolves a search knob to (``epsilon``, ``fc.beta``, ...)."""
    if "." not in name:  # a global knob: its own value, else the FC layers' resolved one
        own = getattr(cfg.dpap, name)
        return own if own is not None else getattr(cfg.dpap.resolved("fc"), name)
    group, knob = name.split(".")
    if group == "sdsnn":  # SD-SNN's knobs (dpap.sdsnn.*) have no protocol defaults
        return getattr(cfg.dpap.sdsnn, knob)
    return getattr(cfg.dpap.resolved(group), knob)


def current_knobs(cfg: Config) -> Optional[dict[str, float]]:
    """The knobs params.yaml resolves to (protocol defaults filled in), as Optuna params,
    when every one lies in its search range; else None."""
    out = {}
    for name, r in cfg.search.ranges.items():
        value = knob_value(cfg, name)
        if not r.low <= value <= r.high:
            return None
        out[name] = value
    return out


def params_to_overrides(params: dict[str, Any]) -> dict[str, float]:
    """Optuna parameter names (``conv.beta``) to dotted config keys (``dpap.conv.beta``)."""
    return {f"dpap.{k}": v for k, v in params.items()}


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
    for name in cfg.search.ranges:  # DPAP knobs blank to None, SD-SNN's to their defaults
        set_dotted(raw, f"dpap.{name}", blank["dpap"]["sdsnn"][name.split(".")[1]] if name.startswith("sdsnn.") else None)
    raw["train"]["epochs"] = search_epochs(cfg)
    base = config_from_dict(raw)
    return {
        "target": cfg.search.target,
        "tolerance": cfg.search.tolerance,
        "epochs": search_epochs(cfg),
        "ranges": {k: [r.low, r.high, r.log] for k, r in sorted(cfg.search.ranges.items())},
        "training": fingerprint(base, data_hash),
    }


# ------------------------------------------------------------------- feasibility


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
    """Per-epoch callback of :func:`dpap.training.fit` for one Optuna trial.

    Reports the accuracy to the pruner (``trial.report(acc, epoch)``) and raises
    :class:`optuna.TrialPruned` when the trial is hopeless: compression above ``target +
    tolerance`` (it only grows), compression below the band while nothing can die any more,
    or the pruner says so. Keeps the training run in :attr:`run`."""

    def __init__(self, trial: optuna.Trial, cfg: Config):
        self.trial = trial
        self.target = cfg.search.target
        self.tolerance = cfg.search.tolerance
        self.epochs = search_epochs(cfg)
        self.reported: set[int] = set()
        self.run: Optional[TrainingRun] = None

    def __call__(self, run: TrainingRun, m: EpochMetrics) -> None:
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
            self._prune(c, f"compression {c:.3f} > target + tolerance {high:.3f} after epoch {m.epoch + 1}; pruning is permanent, so it cannot come back")
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


def make_pruner(cfg: Config) -> FeasiblePercentilePruner:
    return FeasiblePercentilePruner(25.0, n_min_trials=3, n_warmup_steps=max(1, search_epochs(cfg) // 3))


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


def make_sampler(cfg: Config, salt: int = 0) -> optuna.samplers.BaseSampler:
    """TPE (feasibility-aware through the trials' constraints), with ``search.control``
    steered toward the target by :class:`~dpap.target_sampler.TargetSampler`. ``salt``
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


# ---------------------------------------------------------------------- objective


def make_objective(
    cfg: Config,
    data,
    *,
    tracker: Optional["SearchTracker"] = None,
    checkpoint_dir: Optional[str | Path] = None,
) -> Callable[[optuna.Trial], float]:
    """A plain Optuna objective: sample the knobs, ``fit`` once, return the accuracy.

    Sets the constraint ``compression`` and the user attributes ``compression``,
    ``test_accuracy``, ``val_accuracy``, ``params_retained``, ``epochs_run``, ``feasible``
    (and ``mlflow_run_id`` with a ``tracker``). A diverging run sets ``fail_reason`` and
    re-raises :class:`DivergedError` (``study.optimize(..., catch=(DivergedError,))``)."""

    def objective(trial: optuna.Trial) -> float:
        overrides = suggest_overrides(trial, cfg)
        tcfg = trial_config(cfg, overrides)
        monitor = TrialMonitor(trial, cfg)
        callbacks: list = [monitor]
        logger = None
        if tracker is not None:  # logs each epoch before the monitor may stop the trial
            logger = tracker.trial_callback(trial, overrides, data_hash=getattr(data, "meta", {}).get("hash", ""), epochs=search_epochs(cfg))
            if logger is not None:  # None: the store failed (one warning); the trial goes on untracked
                callbacks.insert(0, logger)

        def end(state: str, final: dict[str, float], reason: Optional[str] = None) -> None:
            if logger is not None:
                tracker.end_trial(logger, monitor.run, trial, state, final, reason)

        ckpt = None
        if checkpoint_dir is not None:
            key = trial.user_attrs.get("retry_of", trial.number)
            ckpt = Path(checkpoint_dir) / f"trial-{key}.pt"
        interrupted = False
        try:
            run = fit(tcfg, data, checkpoint=ckpt, callbacks=callbacks, progress=False)
            last = run.history[-1]
            c = last.compression
            value = constraint_value(c, cfg.search.target, cfg.search.tolerance)
            trial.set_constraint(CONSTRAINT, value)
            for k, v in {
                "compression": c,
                "test_accuracy": last.test_accuracy,
                "val_accuracy": last.val_accuracy,
                "params_retained": last.params_retained,
                "epochs_run": len(run.history),
                "feasible": value <= 0,
            }.items():
                trial.set_user_attr(k, v)
            end("COMPLETE", {"search/accuracy": accuracy_of(last), "search/compression": c, "search/feasible": float(value <= 0)})
            return accuracy_of(last)
        except optuna.TrialPruned as exc:
            last = monitor.run.history[-1] if monitor.run is not None and monitor.run.history else None
            final = {"search/feasible": 0.0}
            if last is not None:
                final.update({"search/accuracy": accuracy_of(last), "search/compression": last.compression})
            end("PRUNED", final, trial.user_attrs.get("prune_reason", str(exc)))
            raise
        except KeyboardInterrupt:
            interrupted = True  # keep the checkpoint: the retry resumes from it
            raise
        except Exception as exc:
            reason = f"diverged: {exc}" if isinstance(exc, DivergedError) else f"{type(exc).__name__}: {exc}"
            trial.set_user_attr("fail_reason", reason)
            end("FAIL", {"search/feasible": 0.0}, reason)
            raise
        finally:
            if ckpt is not None and not interrupted:
                with contextlib.suppress(OSError):
                    ckpt.unlink()

    return objective


def best_overrides(trial: FrozenTrial) -> dict[str, float]:
    return params_to_overrides(trial.params)


# ----------------------------------------------------------------------- tracking


def search_params(cfg: Config, storage: str, study_name: str) -> dict[str, Any]:
    """The settings of a search, as the MLflow parent run's parameters."""
    s = cfg.search
    params = {"target": s.target, "tolerance": s.tolerance, "epochs": search_epochs(cfg), "storage": storage, "study_name": study_name,
              "control": s.control, "model.arch": cfg.model.arch, "model.kind": cfg.model.kind, "data.name": cfg.data.name}
    params.update({f"range.{k}": f"[{r.low}, {r.high}]{' log' if r.log else ''}" for k, r in s.ranges.items()})
    return params


def study_figures(study: optuna.Study, cfg: Config) -> dict[str, Any]:
    """Optuna's own figures of a study, as plotly figures (HTML) and matplotlib figures
    (PNG): optimisation history, parameter importances, and every trial's accuracy against
    its compression with the target band."""
    figs: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        try:
            import optuna.visualization as vis

            figs["optimization_history"] = vis.plot_optimization_history(study, target_name="accuracy")
            if len(done) >= 2:
                figs["param_importances"] = vis.plot_param_importances(study)
        except ImportError:  # plotly missing: PNGs only
            pass
        import optuna.visualization.matplotlib as mvis

        figs["optimization_history_png"] = mvis.plot_optimization_history(study, target_name="accuracy").get_figure()
        if len(done) >= 2:
            figs["param_importances_png"] = mvis.plot_param_importances(study).get_figure()
    return figs


# ------------------------------------------------------------------------ storage


def is_rdb_url(storage: str) -> bool:
    return "://" in storage


def make_storage(storage: str) -> optuna.storages.BaseStorage:
    """A journal file (``search/optuna.journal``, safe for several processes on one machine)
    or an RDB URL (``sqlite:///...``, ``postgresql://...``, with a heartbeat so a trial of a
    dead worker on another machine is failed). A storage that cannot be created, written or
    reached is a :class:`SearchError` (:func:`storage_error`)."""
    with storage_errors(storage):
        if is_rdb_url(storage):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    storage,
                    heartbeat_interval=60,
                    grace_period=180,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
                )
        path = Path(storage)
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def shown_storage(storage: str) -> str:
    """``storage`` as messages and MLflow tags show it: a URL's password masked."""
    if not is_rdb_url(storage):
        return storage
    try:
        from sqlalchemy.engine import make_url

        return make_url(storage).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL sqlalchemy can parse: the RDB storage says so
        return storage


def storage_key(storage: str) -> str:
    """One name per storage, whatever the working directory: a journal file's or SQLite
    file's absolute path, any other URL without its password. Tags the study's MLflow
    parent run (``optuna.storage``), so every process of the study finds the same one."""
    if not is_rdb_url(storage):
        return str(Path(storage).resolve())
    if storage.startswith("sqlite:///"):
        return "sqlite:///" + str(Path(storage[len("sqlite:///"):]).resolve())
    return shown_storage(storage)


def _storage_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [OSError, ImportError, optuna.exceptions.StorageInternalError]
    try:
        import sqlalchemy.exc

        types.append(sqlalchemy.exc.SQLAlchemyError)
    except ImportError:  # pragma: no cover - journal storages only
        pass
    return tuple(types)


def storage_error(storage: str, exc: BaseException) -> SearchError:
    """One line for a storage that cannot be used: which, why, and what to do."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename and str(exc.filename) != storage else ""
        reason = f"{exc.strerror}{where}"
    else:
        reason = " ".join(str(exc).strip().split("\n")[0].split())[:200] or type(exc).__name__
    missing = next((e.name for e in (exc, exc.__cause__, exc.__context__) if isinstance(e, ImportError) and e.name), None)
    if missing:
        reason = f"its database driver, Python module {missing!r}, is not installed"
    if isinstance(exc, ImportError):
        hint = "install the driver (e.g. pip install 'psycopg[binary]' for postgresql+psycopg://), or use a journal file: --storage search/optuna.journal"
    elif not is_rdb_url(storage):
        hint = "pass a file in a writable folder with --storage (search.storage), e.g. --storage search/optuna.journal"
    elif storage.startswith("sqlite"):
        hint = "check that its folder exists and is writable, or pass another --storage (search.storage)"
    else:
        hint = "check that the database server is up and the URL's host, port, user and database are right, or use a journal file: --storage search/optuna.journal"
    return SearchError(f"search storage {shown_storage(storage)}: cannot open it ({reason}); {hint}")


@contextlib.contextmanager
def storage_errors(storage: str):
    """Turn the errors of a storage that cannot be created, written or reached (a read-only
    folder, a file where a folder should be, a server nobody listens for, a missing
    database driver) into one :class:`SearchError`."""
    try:
        yield
    except SearchError:
        raise
    except _storage_error_types() as exc:
        raise storage_error(storage, exc) from None


def _lock_path(storage: str, out_dir: Path, study_name: str) -> Path:
    if not is_rdb_url(storage):
        return Path(storage + f".{study_name}.lock")
    if storage.startswith("sqlite:///"):
        return Path(storage[len("sqlite:///"):] + f".{study_name}.lock")
    return out_dir / f".{study_name}.lock"


@contextlib.contextmanager
def study_lock(storage: str, out_dir: Path, study_name: str):
    """The study's lock file (next to a journal or SQLite file, else in ``out_dir``), held
    for the ``with`` block: the processes of this machine ask for trials, open the study
    and its MLflow parent run, and write the outputs one at a time. A lock file that
    cannot be made is a :class:`SearchError` naming the storage."""
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(file_lock(_lock_path(storage, Path(out_dir), study_name)))
    except OSError as exc:
        raise storage_error(storage, exc) from None
    with stack:
        yield


# ------------------------------------------------------------------ worker liveness


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


# ------------------------------------------------------------------------ workers


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
        from .data import load_processed

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
            from .tracking import SearchTracker

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


# ------------------------------------------------------------------------- search


@dataclass
class SearchResult:
    study_name: str
    storage: str
    target: float
    tolerance: float
    trials: int
    complete: int
    pruned: int
    failed: int
    feasible: int
    best_number: Optional[int] = None
    best_value: Optional[float] = None
    best_compression: Optional[float] = None
    best_test_accuracy: Optional[float] = None
    best_params: dict[str, float] = field(default_factory=dict)
    first_feasible: Optional[int] = None
    """1-based count of finished trials up to and including the first feasible one."""
    best_params_file: Optional[str] = None
    plot_file: Optional[str] = None
    mlflow_parent_run_id: Optional[str] = None


def open_study(cfg: Config, storage: str, study_name: str, data_hash: str) -> optuna.Study:
    """Create the study, or load it to resume; refuse one created for other settings."""
    store = make_storage(storage)
    want = search_fingerprint(cfg, data_hash)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(study_name=study_name, storage=store, direction="maximize", load_if_exists=True)
    have = study.user_attrs.get("search")
    if have is None:
        if study.trials:
            raise SearchError(f"study {study_name!r} in {storage} was not made by `dpap search`; pass --study-name NAME for a new one")
        study.set_user_attr("search", want)
        start = current_knobs(cfg)
        if start is not None:  # evaluate the current settings first: a known anchor for TPE
            study.enqueue_trial(start, user_attrs={"current_params": True})
    elif have != want:
        diff = [k for k in want if have.get(k) != want[k]]
        what = ", ".join(f"{k} {have.get(k)!r} -> {want[k]!r}" if k != "training" else "training settings/data" for k in diff)
        raise SearchError(f"study {study_name!r} in {storage} was created for other settings ({what}); pass --study-name NAME to start a new study, or restore the settings to resume it")
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
        from .tracking import open_store

        open_store(tracking_uri)  # locked, corrupt, unreachable: one line, before anything is made
    make_storage(s.storage)  # unwritable, unreachable: one line
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loaded = _load_data(data)
    data_hash = loaded.meta.get("hash", "")
    from .training import make_network

    make_network(trial_config(cfg, {}), loaded.meta["input_shape"], loaded.meta["num_classes"])  # a bad arch fails here, once
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tracker = None
    with study_lock(s.storage, out, s.study_name):  # one process at a time creates the study and its parent run
        with storage_errors(s.storage):
            study = open_study(cfg, s.storage, s.study_name, data_hash)
        if tracking_uri:
            from .tracking import SearchTracker

            tracker = SearchTracker.for_study(tracking_uri, study, search_params(cfg, s.storage, s.study_name), storage_key(s.storage))
        lost = recover_stale_trials(study, tracker)
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
    if workers == 1:
        run_worker(dataclasses.replace(job, data=loaded))
    else:
        threads = cfg.train.threads or max(1, (os.cpu_count() or 1) // workers)
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers) as pool:
            try:
                pool.map(_spawned_worker, [dataclasses.replace(job, index=i + 1, threads=threads) for i in range(workers)])
            except KeyboardInterrupt:
                pool.terminate()
                raise
    wait_for_other_workers(study, tracker, s.storage, out, quiet=quiet)
    with study_lock(s.storage, out, s.study_name):  # one writer at a time; the last one writes the finished study
        study = optuna.load_study(study_name=s.study_name, storage=make_storage(s.storage))
        return write_outputs(study, cfg, out, tracker, overrides or {})


def wait_for_other_workers(study: optuna.Study, tracker: Optional["SearchTracker"], storage: str, out: Path, *, quiet: bool = False, poll: float = 1.0) -> None:
    """Wait until the trials running now (in other processes of the study: this one's
    workers are done) are finished, so the outputs describe the whole budget. A trial
    whose worker died meanwhile is failed and queued again (:func:`recover_stale_trials`),
    so the wait ends; trials those others start afterwards are not waited for."""
    waiting: Optional[set[int]] = None
    while True:
        with study_lock(storage, out, study.study_name):
            recover_stale_trials(study, tracker)
        running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        if waiting is None:
            waiting = running
            if waiting and not quiet:
                print(f"waiting for trial(s) {', '.join(map(str, sorted(waiting)))}, still running in other processes of the study", flush=True)
        waiting &= running
        if not waiting:
            return
        time.sleep(poll)


def study_state_key(study: optuna.Study) -> str:
    """A short digest of every trial's number and state: equal keys, equal summaries."""
    import hashlib

    text = ",".join(f"{t.number}:{t.state.name}" for t in study.get_trials(deepcopy=False))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_outputs(study: optuna.Study, cfg: Config, out: Path, tracker: Optional["SearchTracker"], overrides: dict[str, Any]) -> SearchResult:
    """``best_params.yaml``, ``accuracy_vs_compression.png`` and ``summary.json`` from the
    study's state, each file written whole (temporary file, then ``os.replace``), and the
    MLflow parent run's summary, figures and end, once per state of the study and only
    when no trial is running. Call under :func:`study_lock`."""
    result = summarize(study, cfg)
    result.mlflow_parent_run_id = tracker.parent_run_id if tracker else None
    artifacts = []
    best_file = out / "best_params.yaml"
    if result.best_number is not None:
        write_best_params(best_file, study, cfg, overrides)
        result.best_params_file = str(best_file)
        artifacts.append(best_file)
    plot = out / "accuracy_vs_compression.png"
    with contextlib.suppress(Exception):
        plot_trials(study, cfg, plot)
        result.plot_file = str(plot)
        artifacts.append(plot)
    summary_file = out / "summary.json"
    import json

    atomic_write(summary_file, lambda tmp: tmp.write_text(json.dumps(dataclasses.asdict(result), indent=1) + "\n"))
    artifacts.append(summary_file)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    key = study_state_key(study)
    if tracker is not None and not running and not tracker.summarised(key):
        from .tracking import SUMMARY_TAG

        tags = {SUMMARY_TAG: key}
        if result.best_number is not None:
            best = study.best_trial
            tags.update({"best.trial": str(best.number), "best.mlflow_run_id": best.user_attrs.get("mlflow_run_id", ""),
                         **{f"best.{k}": f"{v:.6g}" for k, v in best.params.items()}})
        figures = {}
        with contextlib.suppress(Exception):
            figures = study_figures(study, cfg)
        tracker.finish(
            {"trials": result.trials, "complete": result.complete, "pruned": result.pruned, "failed": result.failed, "feasible": result.feasible,
             "best_accuracy": result.best_value, "best_compression": result.best_compression, "trials_to_first_feasible": result.first_feasible},
            artifacts, step=result.trials, figures=figures, tags=tags,
        )
        import matplotlib.pyplot as plt

        plt.close("all")
    return result


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Write ``path`` whole: ``write(tmp)`` fills a temporary file in the same folder (same
    suffix, so writers that go by it pick the format), which then replaces ``path`` in one
    step (``os.replace``). Readers, and other processes writing the same file, never see a
    partial one."""
    import secrets

    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{secrets.token_hex(4)}{path.suffix}")  # created by write(), usual mode
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def summarize(study: optuna.Study, cfg: Config) -> SearchResult:
    trials = study.get_trials(deepcopy=False)
    by = lambda st: sum(1 for t in trials if t.state == st)  # noqa: E731
    res = SearchResult(
        study_name=study.study_name,
        storage=cfg.search.storage,
        target=cfg.search.target,
        tolerance=cfg.search.tolerance,
        trials=budget_used(trials),
        complete=by(TrialState.COMPLETE),
        pruned=by(TrialState.PRUNED),
        failed=sum(1 for t in trials if t.state == TrialState.FAIL and not t.user_attrs.get("retried")),
        feasible=sum(1 for t in trials if is_feasible(t)),
    )
    finished = sorted((t for t in trials if t.state.is_finished() and not t.user_attrs.get("retried")), key=lambda t: t.datetime_complete or t.datetime_start)
    for i, t in enumerate(finished, 1):
        if is_feasible(t):
            res.first_feasible = i
            break
    try:
        best = study.best_trial  # Optuna 5: the best *feasible* trial (constraints ≤ 0)
    except ValueError:
        return res
    if not is_feasible(best):  # pragma: no cover - unconstrained study
        return res
    res.best_number = best.number
    res.best_value = best.value
    res.best_compression = best.user_attrs.get("compression")
    res.best_test_accuracy = best.user_attrs.get("test_accuracy")
    res.best_params = best_overrides(best)
    return res


# ------------------------------------------------------------------------- output


def best_params_overlay(study: optuna.Study, cfg: Config, overrides: dict[str, Any]) -> dict[str, Any]:
    """The params.yaml overlay of the best feasible trial: its knobs, ``train.epochs`` when
    the search trained for another number of epochs, and the user's other overrides."""
    best = study.best_trial
    flat: dict[str, Any] = {k: v for k, v in overrides.items() if not k.startswith("search.")}
    if search_epochs(cfg) != cfg.train.epochs:
        flat["train.epochs"] = search_epochs(cfg)
    flat.update(best_overrides(best))
    nested: dict[str, Any] = {}
    for k, v in flat.items():
        set_dotted(nested, k, v)
    return nested


def write_best_params(path: Path, study: optuna.Study, cfg: Config, overrides: dict[str, Any]) -> None:
    best = study.best_trial
    acc_name = "validation" if best.user_attrs.get("val_accuracy") is not None else "test"
    header = (
        f"# Best feasible trial of `dpap search` (study {study.study_name!r}, trial {best.number}).\n"
        f"# target compression {cfg.search.target} ± {cfg.search.tolerance}; achieved {best.user_attrs.get('compression'):.4f}"
        f" at {acc_name} accuracy {best.value:.4f}, seed {cfg.train.seed}, {search_epochs(cfg)} epochs.\n"
        f"# Apply with `dpap apply-best` (merges into params.yaml) or the printed `dvc exp run -S` line.\n"
    )
    text = header + yaml.safe_dump(best_params_overlay(study, cfg, overrides), sort_keys=True)
    atomic_write(path, lambda tmp: tmp.write_text(text))


def dvc_exp_command(overlay: dict[str, Any]) -> str:
    return "dvc exp run " + " ".join(f"-S {k}={v!r}" if isinstance(v, str) else f"-S {k}={v}" for k, v in flatten_dotted(overlay, keep=()).items())


def apply_best(best_file: str | Path, params_file: str | Path, *, dry_run: bool = False) -> list[tuple[str, Any, Any]]:
    """Merge ``best_params.yaml`` into ``params.yaml`` in place, keeping its comments and
    layout (ruamel.yaml round trip). Validates the result before writing. Returns the
    changes as ``(key, old, new)``."""
    best_file, params_file = Path(best_file), Path(params_file)
    if not best_file.is_file():
        raise SearchError(f"{best_file}: not found; run `dpap search` first (it writes the best feasible trial there)")
    overlay = yaml.safe_load(best_file.read_text()) or {}
    if not isinstance(overlay, dict) or not overlay:
        raise SearchError(f"{best_file}: expected a mapping of params (dpap: {{conv: ..., fc: ...}})")
    if not params_file.is_file():
        raise SearchError(f"{params_file}: not found; run from the repository root or pass --params")
    try:
        changes = merge_into_params(params_file, flatten_dotted(overlay, keep=()), dry_run=dry_run)
    except ConfigError as exc:
        raise SearchError(f"{best_file}: applying it would make {params_file} invalid: {exc}") from None
    return changes


def plot_trials(study: optuna.Study, cfg: Config, path: Path) -> None:
    """Accuracy vs compression of every trial that got at least one epoch, the target band
    shaded and the best feasible trial starred (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = {"feasible": [], "infeasible": [], "pruned": []}
    for t in study.get_trials(deepcopy=False):
        c = t.user_attrs.get("compression")
        if t.state == TrialState.COMPLETE and c is not None:
            pts["feasible" if is_feasible(t) else "infeasible"].append((c, t.value))
        elif t.state == TrialState.PRUNED and t.intermediate_values:
            if c is None:
                continue  # pruned on accuracy before its compression was recorded
            pts["pruned"].append((c, t.intermediate_values[max(t.intermediate_values)]))
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    s = cfg.search
    ax.axvspan(s.target - s.tolerance, s.target + s.tolerance, color="tab:green", alpha=0.15, label=f"target {s.target} ± {s.tolerance}")
    style = {"feasible": ("tab:green", "o"), "infeasible": ("tab:gray", "o"), "pruned": ("tab:red", "x")}
    for name, p in pts.items():
        if p:
            ax.scatter([a for a, _ in p], [b for _, b in p], c=style[name][0], marker=style[name][1], label=f"{name} ({len(p)})", s=28)
    try:
        best = study.best_trial
        if is_feasible(best):
            ax.scatter([best.user_attrs["compression"]], [best.value], marker="*", s=260, c="gold", edgecolors="black", zorder=5, label=f"best: trial {best.number}")
    except ValueError:
        pass
    ax.set_xlabel("compression (fraction of parameters removed)")
    ax.set_ylabel("accuracy" + (" (pruned: at stop)" if pts["pruned"] else ""))
    ax.set_title(f"{study.study_name}: {len(study.trials)} trials")
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    try:
        atomic_write(path, fig.savefig)
    finally:
        plt.close(fig)


def format_summary(res: SearchResult, epochs: Optional[int] = None) -> str:
    rows = [
        ("study", f"{res.study_name} ({res.storage})"),
        ("target compression", f"{res.target:.3f} ± {res.tolerance:.3f}"),
        ("achieved compression", f"{res.best_compression:.4f}" if res.best_compression is not None else "no feasible trial"),
        ("accuracy", f"{res.best_value:.4f}" if res.best_value is not None else "-"),
        ("test accuracy", f"{res.best_test_accuracy:.4f}" if res.best_test_accuracy is not None else "-"),
        ("best trial", str(res.best_number) if res.best_number is not None else "-"),
        ("trials", f"{res.trials} ({res.complete} complete, {res.pruned} pruned, {res.failed} failed)"),
        ("feasible trials", str(res.feasible)),
        ("first feasible after", f"{res.first_feasible} trial(s)" if res.first_feasible else "-"),
    ]
    for k, v in res.best_params.items():
        rows.append((k, f"{v:.6g}"))
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{w}}  {v}" for k, v in rows)
