"""Typed configuration, loaded from ``params.yaml`` and validated once, at the edge.

- :mod:`dpap.config.stages`: the stage groups (``data``, ``model``, ``neuron``, ``train``,
  ``search``); the ``pruning`` group comes from the method registry
  (:mod:`dpap.pruning.config`);
- :mod:`dpap.config.params`: :class:`Config`, :func:`load_params`, cross-group checks;
- :mod:`dpap.config.params_file`: editing ``params.yaml`` in place (presets, best trials);
- :mod:`dpap.config.presets`: the paper's presets.
"""

from dpap.config.params import Config, config_from_dict, get_dotted, load_params, migrate_legacy, set_dotted
from dpap.config.stages import DataConfig, ModelConfig, NeuronConfig, SearchConfig, SearchRange, TrainConfig
from dpap.errors import ConfigError
from dpap.pruning.config import PruningConfig
from dpap.pruning.dpap.config import DPAPConfig, LayerTypeConfig
from dpap.pruning.sdsnn.config import SDSNNConfig

__all__ = ["Config", "ConfigError", "DPAPConfig", "DataConfig", "LayerTypeConfig", "ModelConfig", "NeuronConfig", "PruningConfig",
           "SDSNNConfig", "SearchConfig", "SearchRange", "TrainConfig", "config_from_dict", "get_dotted", "load_params",
           "migrate_legacy", "set_dotted"]
