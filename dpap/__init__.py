"""dpap: developmental plasticity-inspired adaptive pruning (DPAP) for SNNs and DNNs.

The core (neurons, networks, importance, survival, pruning, training) needs only torch;
tracking (MLflow) and search (Optuna) live in their own modules.

Names are imported on first use (PEP 562), so ``from dpap.config import load_params``
does not import torch: checking a params.yaml takes a fraction of a second.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Config": "config",
    "ConfigError": "config",
    "load_params": "config",
    "SpikingNetwork": "networks",
    "build_network": "networks",
    "parse_arch": "networks",
    "LIF": "neurons",
    "firing_rate_mse": "neurons",
    "DPAPPruner": "pruning",
    "SurvivalFunction": "survival",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is not None:
        return getattr(importlib.import_module(f".{module}", __name__), name)
    try:  # a submodule: ``import dpap; dpap.training``
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError:
        raise AttributeError(f"module 'dpap' has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
