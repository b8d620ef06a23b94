"""The pruning methods by name (``params.yaml``: ``pruning.method``).

Adding a method is one subpackage (``dpap/pruning/<name>/``: its config, its method class,
a ``METHOD`` :class:`~dpap.pruning.method.MethodSpec`) and one entry in :data:`METHODS`
(``docs/methods.md``). The ``pruning`` group of ``params.yaml`` is generated from this
table (:mod:`dpap.pruning.config`), so the new method's settings are validated and
searchable at once.
"""

from __future__ import annotations

from typing import Any, Optional

from dpap.errors import ConfigError
from dpap.pruning import deepr as _deepr
from dpap.pruning import dpap as _dpap
from dpap.pruning import gmp as _gmp
from dpap.pruning import gradr as _gradr
from dpap.pruning import random as _random
from dpap.pruning import sdsnn as _sdsnn
from dpap.pruning.mechanics import Pruner
from dpap.pruning.method import MethodSpec, PruningMethod
from dpap.snn.networks import SpikingNetwork

METHODS: dict[str, MethodSpec] = {
    spec.name: spec for spec in (_dpap.METHOD, _sdsnn.METHOD, _gmp.METHOD, _random.METHOD, _gradr.METHOD, _deepr.METHOD)
}
"""DPAP, SD-SNN and the baselines they are compared with (``docs/methods.md``)."""


def method_spec(name: str) -> MethodSpec:
    """The registered method ``name``; a :class:`~dpap.errors.ConfigError` naming the
    known ones otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"pruning.method: got {name!r}, expected one of {', '.join(repr(n) for n in METHODS)}") from None


def make_method(name: str, settings: Optional[Any] = None, epochs: Optional[int] = None) -> PruningMethod:
    """A fresh :class:`PruningMethod` ``name`` with ``settings`` (its config model; None =
    its defaults) for a run of ``epochs`` epochs (None: the method's own schedule)."""
    spec = method_spec(name)
    if settings is None:
        settings = spec.config()
    elif not isinstance(settings, spec.config):
        raise ConfigError(f"pruning.{name}: got a {type(settings).__name__}, expected a {spec.config.__name__}")
    return spec.build(settings, epochs)


def make_pruner(net: SpikingNetwork, method: str = "dpap", settings: Optional[Any] = None, *, epochs: Optional[int] = None) -> Pruner:
    """A :class:`Pruner` running method ``method`` on ``net``::

        pruner = make_pruner(net, "dpap", DPAPConfig(epsilon=0.6))
    """
    return Pruner(net, make_method(method, settings, epochs))
