"""Evaluation of a trained model: accuracy, synaptic operations and energy
(:mod:`~dpap.evaluation.metrics`), NeuroBench's metrics (:mod:`~dpap.evaluation.neurobench`),
how a run pruned (:mod:`~dpap.evaluation.dynamics`) and its figures
(:mod:`~dpap.evaluation.plots`)."""

from dpap.evaluation.metrics import accuracy, evaluate, synaptic_operations, write_metrics, write_plots

__all__ = ["accuracy", "evaluate", "synaptic_operations", "write_metrics", "write_plots"]
