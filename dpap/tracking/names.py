"""What the project's runs are called in MLflow: the experiment, the run names, the
metric names, and the key under which a training checkpoint keeps its MLflow run id.

Metric names are grouped so the UI puts their charts into sections: ``train/``,
``test/``, ``val/``, ``pruning/``, ``layers/<i>_<type>/`` (every epoch) and ``eval/``
(the evaluate stage)."""

from __future__ import annotations

from typing import Any, Mapping

from dpap.evaluation.dynamics import kind_shares

EXPERIMENT = "dpap"
"""The experiment of the train and evaluate stages."""

RUN_ID_KEY = "mlflow_run_id"
"""The key of the MLflow run id in ``TrainingRun.extra`` (carried by the checkpoint, so a
resumed training run continues the same MLflow run)."""


def default_run_name(cfg) -> str:
    """``<data>-<model>-dpap`` for a pruned run, ``<data>-<model>-baseline`` otherwise."""
    what = "dpap" if cfg.pruning.enabled else "baseline"
    return f"{cfg.data.name}-{cfg.model.kind}-{what}"


def epoch_metrics(m) -> dict[str, float]:
    """One epoch (:class:`~dpap.training.history.EpochMetrics`) as MLflow metrics, named so
    the UI groups its charts into sections: ``train/``, ``test/``, ``val/``, ``pruning/``
    and ``layers/<i>_<type>/``. Values that are None are left out."""
    out = {
        "train/loss": m.train_loss,
        "train/accuracy": m.train_accuracy,
        "train/lr": m.lr,
        "train/seconds": m.seconds,
        "test/accuracy": m.test_accuracy,
        "pruning/compression": m.compression,
        "pruning/params_retained": m.params_retained,
        "pruning/zero_weight_share": m.zero_weight_share,
    }
    if m.val_accuracy is not None:
        out["val/accuracy"] = m.val_accuracy
    if m.layers:
        shares = kind_shares(m.layers)
        out.update({f"pruning/{k}": v for k, v in vars(shares).items()})
    for layer in m.layers:
        name = f"layers/{layer['index']}_{layer['layer_type']}"
        out[f"{name}/synapses_pruned"] = 1.0 - layer["synapses_alive"] / layer["synapses"] if layer["synapses"] else 0.0
        out[f"{name}/units_alive"] = layer["units_alive"]
        out[f"{name}/units_alive_share"] = layer["units_alive"] / layer["units"] if layer["units"] else 0.0
        out[f"{name}/compression"] = layer["compression"]
        for key in ("units_died", "regenerated", "rate", "width"):  # what the method did; the compacted width
            if key in layer:
                out[f"{name}/{key}"] = layer[key]
    if any("regenerated" in layer for layer in m.layers):
        out["pruning/regenerated"] = sum(layer.get("regenerated", 0) for layer in m.layers)
    return {k: float(v) for k, v in out.items() if v is not None}


def evaluation_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The evaluate stage's scalar results as ``eval/<name>``, and NeuroBench's as
    ``eval/neurobench/<name>`` (per-layer values stay in the ``evaluation/metrics.json``
    artifact; booleans and non-numbers are left out)."""

    def scalars(d: Mapping[str, Any], prefix: str) -> dict[str, float]:
        return {f"{prefix}{k}": float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    out = scalars(metrics, "eval/")
    if isinstance(metrics.get("neurobench"), Mapping):
        out.update(scalars(metrics["neurobench"], "eval/neurobench/"))
    return out
