"""What a search reports: the summary (``summary.json``, the table ``dpap search``
prints) and the MLflow parent run's summary, written from the study's state."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import optuna
from optuna.trial import TrialState

from dpap.config import Config
from dpap.search.best import write_best_params
from dpap.search.feasibility import is_feasible
from dpap.search.figures import plot_trials, study_figures
from dpap.search.files import atomic_write
from dpap.search.recovery import budget_used, is_retried, retry_history
from dpap.search.space import best_overrides, search_epochs
from dpap.search.storage_url import shown_storage
from dpap.search.tracker import SUMMARY_TAG, SearchTracker


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


def search_params(cfg: Config, storage: str, study_name: str) -> dict[str, Any]:
    """The settings of a search, as the MLflow parent run's parameters (a storage URL's
    password masked)."""
    s = cfg.search
    params = {"target": s.target, "tolerance": s.tolerance, "epochs": search_epochs(cfg), "storage": shown_storage(storage), "study_name": study_name,
              "control": s.control, "model.arch": cfg.model.arch, "model.kind": cfg.model.kind, "data.name": cfg.data.name}
    params.update({f"range.{k}": f"[{r.low}, {r.high}]{' log' if r.log else ''}" for k, r in s.ranges.items()})
    return params


def study_state_key(study: optuna.Study) -> str:
    """A short digest of every trial's number and state: equal keys, equal summaries."""
    text = ",".join(f"{t.number}:{t.state.name}" for t in study.get_trials(deepcopy=False))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_outputs(study: optuna.Study, cfg: Config, out: Path, tracker: Optional["SearchTracker"], overrides: dict[str, Any]) -> SearchResult:
    """``best_params.yaml``, ``accuracy_vs_compression.png`` and ``summary.json`` from the
    study's state, each file written whole (temporary file, then ``os.replace``), and the
    MLflow parent run's summary, figures and end, once per state of the study and only
    when no trial is running. Call under the study's lock (:func:`~dpap.search.locks.study_lock`)."""
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
    atomic_write(summary_file, lambda tmp: tmp.write_text(json.dumps(dataclasses.asdict(result), indent=1) + "\n"))
    artifacts.append(summary_file)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    key = study_state_key(study)
    if tracker is not None and not running and not tracker.summarised(key):
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


def summarize(study: optuna.Study, cfg: Config) -> SearchResult:
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in retry_history(t)}  # lost with their worker, run again
    by = lambda st: sum(1 for t in trials if t.state == st)  # noqa: E731
    res = SearchResult(
        study_name=study.study_name,
        storage=shown_storage(cfg.search.storage),  # a URL's password masked: the file may be shared
        target=cfg.search.target,
        tolerance=cfg.search.tolerance,
        trials=budget_used(trials),
        complete=by(TrialState.COMPLETE),
        pruned=by(TrialState.PRUNED),
        failed=sum(1 for t in trials if t.state == TrialState.FAIL and not is_retried(t, retried)),
        feasible=sum(1 for t in trials if is_feasible(t)),
    )
    finished = sorted((t for t in trials if t.state.is_finished() and not is_retried(t, retried)), key=lambda t: t.datetime_complete or t.datetime_start)
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


def format_summary(res: SearchResult, epochs: Optional[int] = None) -> str:
    rows = [
        ("study", f"{res.study_name} ({shown_storage(res.storage)})"),
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
