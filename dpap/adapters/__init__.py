"""Pruning any spiking model: snnTorch, SpikingJelly, a NIR graph, your own module.

- :func:`attach` (:mod:`dpap.adapters.attachment`): a registered pruning method on a model,
  with the user's own training loop (``pruner.end_epoch()`` once per epoch);
- :func:`compact` (:mod:`dpap.adapters.shrink`): a physically smaller copy with the same
  outputs (Torch-Pruning's dependency graph; dpap's own networks: :mod:`dpap.compaction`);
- :func:`from_nir` / :func:`to_nir` (:mod:`dpap.adapters.nirgraph`): a trainable model from a NIR
  graph and back (snnTorch's importer and exporter).

How the layers, neurons and time steps of a model are found: :mod:`dpap.adapters.trace`,
:mod:`dpap.adapters.graph`, :mod:`dpap.adapters.view`; what is supported: docs/any_network.md.
Names are imported on first use, so ``dpap.attach`` does not import NIR or Torch-Pruning.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "attach": "attachment",
    "pruner_of": "attachment",
    "AttachedPruner": "attachment",
    "AttachError": "errors",
    "CompactError": "errors",
    "compact": "shrink",
    "from_nir": "nirgraph",
    "to_nir": "nirgraph",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dpap.adapters' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
