"""Training: the one loop the pipeline, the search and notebooks share.

- :mod:`dpap.training.setup`: device, network, optimizer, schedule, pruner and seeds from a
  :class:`~dpap.config.Config`;
- :mod:`dpap.training.history`: per-epoch metrics, splits, callbacks, divergence checks;
- :mod:`dpap.training.loop`: :class:`TrainingRun` and :func:`fit` (checkpoints, resume);
- :mod:`dpap.training.compact_run`, :mod:`dpap.training.compact_epoch`: compaction while
  training;
- :mod:`dpap.training.distributed`: data-parallel training;
- :mod:`dpap.training.model_file`: the model file (``models/model.pt``).
"""

from dpap.training.history import DivergedError, EpochMetrics, NotLearningError, Split, convergence_epoch
from dpap.training.loop import TrainingRun, fit
from dpap.training.model_file import LoadedModel, ModelFileError, compact_model, load_model, save_model
from dpap.training.setup import make_network, make_run_pruner

__all__ = ["DivergedError", "EpochMetrics", "LoadedModel", "ModelFileError", "NotLearningError", "Split", "TrainingRun",
           "compact_model", "convergence_epoch", "fit", "load_model", "make_network", "make_run_pruner", "save_model"]
