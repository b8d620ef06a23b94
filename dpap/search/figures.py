"""Figures of a study: accuracy against compression with the target band (``search/``),
and Optuna's own figures for the MLflow parent run."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna
import optuna.visualization as vis
import optuna.visualization.matplotlib as mvis
from optuna.trial import TrialState

from dpap.config import Config
from dpap.search.feasibility import is_feasible
from dpap.search.files import atomic_write


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


def study_figures(study: optuna.Study, cfg: Config) -> dict[str, Any]:
    """Optuna's own figures of a study, as plotly figures (HTML) and matplotlib figures
    (PNG): optimisation history, parameter importances, and every trial's accuracy against
    its compression with the target band."""
    figs: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        try:
            figs["optimization_history"] = vis.plot_optimization_history(study, target_name="accuracy")
            if len(done) >= 2:
                figs["param_importances"] = vis.plot_param_importances(study)
        except ImportError:  # plotly missing: PNGs only
            pass
        figs["optimization_history_png"] = mvis.plot_optimization_history(study, target_name="accuracy").get_figure()
        if len(done) >= 2:
            figs["param_importances_png"] = mvis.plot_param_importances(study).get_figure()
    return figs
