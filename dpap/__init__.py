"""dpap: developmental plasticity-inspired adaptive pruning (DPAP) for SNNs and DNNs.

Layers, each importing only from those below it (``docs/architecture.md``): ``snn`` (neurons,
encodings, networks) → ``pruning`` (mechanics, the method registry, one subpackage per
method) → ``config`` → ``data`` → ``compaction`` → ``adapters`` (any model: ``attach``,
``compact``, ``from_nir``) → ``training`` → ``evaluation`` → ``export``
→ ``tracking`` (MLflow) → ``search`` (Optuna) → ``cli``. The core needs only torch and
pydantic.

Names are imported on first use (PEP 562), so ``from dpap.config import load_params``
does not import torch: checking a params.yaml takes a fraction of a second.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Config": "config",
    "ConfigError": "errors",
    "DPAPError": "errors",
    "load_params": "config",
    "SpikingNetwork": "snn",
    "build_network": "snn",
    "parse_arch": "snn",
    "LIF": "snn",
    "firing_rate_mse": "snn",
    "Pruner": "pruning",
    "make_pruner": "pruning",
    "DPAPConfig": "pruning",
    "SDSNNConfig": "pruning",
    "METHODS": "pruning",
    "fit": "training",
    "load_model": "training",
    "attach": "adapters",
    "compact": "adapters",
    "from_nir": "adapters",
    "to_nir": "adapters",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is not None:
        return getattr(importlib.import_module(f".{module}", __name__), name)
    try:  # a submodule: ``import dpap; dpap.training.loop``
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError:
        raise AttributeError(f"module 'dpap' has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
