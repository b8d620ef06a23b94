"""DPAP's state of one layer: θ, the epoch's importance accumulators and the survival
values of its units and synapses (Eq. 8-17), with the knobs each of them uses."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
from torch import Tensor

from dpap.pruning.dpap.config import DPAPConfig
from dpap.pruning.dpap.importance import SlidingThreshold
from dpap.pruning.dpap.survival import SurvivalFunction

if TYPE_CHECKING:  # pragma: no cover
    from dpap.pruning.mechanics import LayerInfo


FLUSH_EVERY = 16
"""Batches whose synaptic importance (BCM, Eq. 7, or the Hebbian ablation) is summed in
the network's float (float32) before it is added to the epoch's float64 sum, which spares
a float64 add of a ``[units, inputs]`` product at every batch; 16 float32 sums stay within
about 1e-6 of the float64 sum
(``tests/pruning/test_pruner.py``). Reading ``importance`` flushes, so a read in the middle
of an epoch regroups the later batches (the sum then differs in its last bits, ~1e-7);
nothing reads it before the epoch's decision, and checkpoints are written after it."""


class LayerState:
    """DPAP state of one block: θ, the epoch's accumulators and the survival values.

    ``importance`` (float64) is the epoch's synaptic importance; the last batches' share
    waits in the network's float until :data:`FLUSH_EVERY` batches or until anything reads
    ``importance``."""

    def __init__(self, layer: "LayerInfo", cfg: DPAPConfig, device, conv_mode: str = "channels"):
        self.index = layer.index
        self.layer_type = layer.layer_type
        self.units = layer.units
        self.pre_units = layer.pre_units
        kernels = layer.layer_type == "conv" and conv_mode == "kernels"
        self.knobs = cfg.resolved(layer.layer_type, conv_mode, reads_input=layer.reads_input)
        """Survival knobs of the units (neurons, channels) ..."""
        self.synapse_knobs = cfg.resolved("fc") if kernels else self.knobs
        """... and of the synapses (a conv layer's kernels: the FC synapses' knobs)."""
        self.theta = SlidingThreshold(layer.units, device)
        self._importance = torch.zeros(layer.units, layer.pre_units, device=device, dtype=torch.float64)
        self.post_sum = torch.zeros(layer.units, device=device, dtype=torch.float64)
        self._recent: Optional[Tensor] = None
        self._recent_batches = 0
        # conv layers are pruned a channel at a time (and by kernels under conv_mode
        # kernels); FC layers lose synapses and neurons; the output layer never loses
        # neurons and loses synapses only if asked; with pruning.dpap.prune_units false no
        # layer loses units, with "channels" only conv layers do.
        self.prune_units = not layer.is_output and cfg.prune_units is not False and not (cfg.prune_units == "channels" and layer.layer_type == "fc")
        self.prune_synapses = (layer.layer_type == "fc" or kernels) and (not layer.is_output or cfg.prune_output)
        self.unit_survival = SurvivalFunction((layer.units,), self.knobs.beta, device, track_alive=False)
        self.synapse_survival = (
            SurvivalFunction((layer.units, layer.pre_units), self.synapse_knobs.beta, device, track_alive=False) if self.prune_synapses else None
        )

    @property
    def importance(self) -> Tensor:
        """The epoch's synaptic importance ``[units, inputs]`` (float64), every batch in."""
        self.flush()
        return self._importance

    @importance.setter
    def importance(self, value: Tensor) -> None:
        self.flush()
        self._importance = value

    def accumulate(self, post: Tensor, pre: Tensor) -> None:
        """``importance += postᵀ @ pre`` for one batch (``post`` ``[N, units]``, ``pre``
        ``[N, inputs]``), in the network's float into ``_recent``, flushed every
        :data:`FLUSH_EVERY` batches."""
        if self._recent is None or self._recent.dtype != post.dtype or self._recent.device != post.device:
            self.flush()
            self._recent = torch.zeros(self._importance.shape, dtype=post.dtype, device=post.device)
        self._recent.addmm_(post.t(), pre)
        self._recent_batches += 1
        if self._recent_batches >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Add the batches waiting in ``_recent`` to ``importance``."""
        if self._recent is not None and self._recent_batches:
            self._importance += self._recent
            self._recent.zero_()
        self._recent_batches = 0

    def reset_epoch(self) -> None:
        self._importance.zero_()
        self.post_sum.zero_()
        if self._recent is not None:
            self._recent.zero_()
        self._recent_batches = 0

    def to(self, device) -> None:
        self.flush()
        self._recent = None
        self.theta.to(device)
        self._importance = self._importance.to(device)
        self.post_sum = self.post_sum.to(device)
        self.unit_survival.to(device)
        if self.synapse_survival is not None:
            self.synapse_survival.to(device)

    def state_dict(self) -> dict:
        return {
            "theta": self.theta.state_dict(),
            "importance": self.importance.clone(),
            "post_sum": self.post_sum.clone(),
            "unit_survival": self.unit_survival.state_dict(),
            "synapse_survival": self.synapse_survival.state_dict() if self.synapse_survival else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.theta.load_state_dict(state["theta"])
        self.importance.copy_(state["importance"])  # what waited is dropped (flushed, then overwritten)
        self.post_sum.copy_(state["post_sum"])
        self.unit_survival.load_state_dict(state["unit_survival"])
        if self.synapse_survival is not None:
            self.synapse_survival.load_state_dict(state["synapse_survival"])
