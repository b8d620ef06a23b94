"""dpap: developmental plasticity-inspired adaptive pruning (DPAP) for SNNs and DNNs.

The core (neurons, networks, importance, survival, pruning, training) needs only torch;
tracking (MLflow) and search (Optuna) live in their own modules.
"""

from .config import Config, ConfigError, load_params
from .networks import SpikingNetwork, build_network, parse_arch
from .neurons import LIF, firing_rate_mse
from .pruning import DPAPPruner
from .survival import SurvivalFunction

__all__ = [
    "Config",
    "ConfigError",
    "DPAPPruner",
    "LIF",
    "SpikingNetwork",
    "SurvivalFunction",
    "build_network",
    "firing_rate_mse",
    "load_params",
    "parse_arch",
]
__version__ = "0.1.0"
