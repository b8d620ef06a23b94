"""The ``pruning`` group of ``params.yaml``: the switch, the method, and each registered
method's settings under its own name (``pruning.dpap.epsilon``, ``pruning.sdsnn.fc_rate_gain``).

:class:`PruningConfig` is generated from the registry (:data:`dpap.pruning.registry.METHODS`),
so a new method's settings appear here without an edit."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, create_model

from dpap.pruning.registry import METHODS
from dpap.schema import Flag, Settings


class _PruningBase(Settings):
    """Pruning: on or off, which registered method decides, and each method's settings."""

    @property
    def settings(self) -> Any:
        """The settings of the method in use (``pruning.<method>``)."""
        return getattr(self, self.method)


PruningConfig = create_model(
    "PruningConfig",
    __base__=_PruningBase,
    __module__=__name__,
    enabled=(Flag, True),
    method=(Literal[tuple(METHODS)], "dpap"),
    **{name: (spec.config, Field(default_factory=spec.config)) for name, spec in METHODS.items()},
)
PruningConfig.__doc__ = """``enabled``: false = the unpruned baseline, whatever the method. ``method``: the
registered method that decides (``dpap``, ``sdsnn``, ...). ``<method>``: its settings."""
