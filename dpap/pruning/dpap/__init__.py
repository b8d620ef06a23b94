"""DPAP, developmental plasticity-inspired adaptive pruning (Eq. 5-17): spiking traces,
trace-based BCM and dendritic spines (:mod:`~dpap.pruning.dpap.importance`) feed survival
functions (:mod:`~dpap.pruning.dpap.survival`) that decide which units and synapses die
(:mod:`~dpap.pruning.dpap.method`); settings in :mod:`~dpap.pruning.dpap.config`."""

from dpap.pruning.dpap.config import PROTOCOL_DEFAULTS, SEARCH_KNOBS, DPAPConfig, LayerTypeConfig
from dpap.pruning.dpap.method import DPAPMethod
from dpap.pruning.method import MethodSpec

METHOD = MethodSpec(
    name="dpap",
    config=DPAPConfig,
    build=lambda cfg, epochs: DPAPMethod(cfg, epochs),
    search_knobs=SEARCH_KNOBS,
    summary="DPAP (Eq. 5-17): survival functions fed by spike traces, BCM and dendritic spines; nothing regrows",
)

__all__ = ["DPAPConfig", "DPAPMethod", "LayerTypeConfig", "METHOD", "PROTOCOL_DEFAULTS"]
