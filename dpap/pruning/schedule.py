"""Pruning to a scheduled sparsity: the cubic schedule of Zhu & Gupta (2017, "To prune, or
not to prune"), shared by the methods that follow it (``gmp``: the smallest magnitudes go
first; ``random``: random choices, the floor). Each method is its own subpackage and says
only how it ranks the candidates (:meth:`ScheduledPruning.scores`); when and how many is
decided here, so the two prune exactly the same counts.

The schedule, per prunable layer, in epochs (from 0) whose end prunes::

    s_e = s_f + (s_i − s_f)·(1 − (e − start + 1)/(end − start + 1))³   for start ≤ e ≤ end

Zhu & Gupta's s_t = s_f + (s_i − s_f)(1 − (t − t0)/(nΔt))³ with t − t0 = e − start + 1 epochs
trained since pruning began and nΔt = end − start + 1: the first step (end of epoch
``start``) already prunes, the last (end of epoch ``end``) reaches s_f exactly, and nothing
changes after it, so the last epochs only train the pruned network. Before ``start``
nothing is pruned.

At each of those epoch ends every prunable layer is pruned to ``s_e``:

* ``structure: unstructured``: its living synapses (an FC weight, or a conv kernel: one
  input channel of one output channel, the mechanics' synapse), lowest score first, until
  ``round(s_e·S)`` of its S dense synapses are gone;
* ``structure: channel``: its units (FC neurons, conv channels), lowest score first, until
  ``round(s_e·U)`` of its U dense units are gone (GMP's score: the L1 norm of the unit's
  living weights). The output layer's neurons are never pruned: with ``prune_output`` its
  synapses are pruned unstructured.

Nothing comes back (``permanent``). Counts are kept against the dense network, so a run
compacted while training (:mod:`dpap.training.compact_run`) keeps the same schedule.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal, Optional

import torch
from pydantic import model_validator
from torch import Tensor

from dpap.errors import ConfigError
from dpap.pruning.method import PruningMethod
from dpap.schema import Flag, Integer, Number, Settings

if TYPE_CHECKING:  # pragma: no cover
    from dpap.pruning.mechanics import Pruner


class ScheduleConfig(Settings):
    """The settings of a method that prunes on the cubic schedule (``gmp``, ``random``)."""

    target: Number("a sparsity in [0, 1)", ge=0, lt=1) = 0.5
    """s_f, the final sparsity of every prunable layer (the share of its synapses, or of
    its units with ``structure: channel``): THE knob for how much is pruned."""
    initial: Number("a sparsity in [0, 1)", ge=0, lt=1) = 0.0
    """s_i, where the cubic starts (Zhu & Gupta: 0)."""
    start_epoch: Integer("an integer >= 0", ge=0) = 0
    """The first epoch (from 0) whose end prunes."""
    end_epoch: Optional[Integer("an integer >= 0 or null", ge=0)] = None
    """The epoch (from 0) whose end reaches ``target``; null = from ``end_fraction``."""
    end_fraction: Number("a number in (0, 1]", gt=0, le=1) = 0.5
    """With ``end_epoch: null``: pruning ends after this share of the run's epochs
    (end epoch = round(fraction·epochs) − 1, at least ``start_epoch``)."""
    structure: Literal["unstructured", "channel"] = "unstructured"
    """``unstructured``: synapses (FC weights, conv kernels); ``channel``: whole units (FC
    neurons, conv channels)."""
    prune_output: Flag = False
    """Also prune the output layer's synapses (its neurons never)."""

    @model_validator(mode="after")
    def _ordered(self) -> "ScheduleConfig":
        if self.end_epoch is not None and self.end_epoch < self.start_epoch:
            raise ConfigError(f"end_epoch: got {self.end_epoch}, expected an epoch >= start_epoch ({self.start_epoch})")
        return self

    def end(self, epochs: Optional[int]) -> int:
        """The epoch (from 0) whose end reaches the target in a run of ``epochs`` epochs."""
        if self.end_epoch is not None:
            return self.end_epoch
        if epochs is None:
            raise ConfigError("end_epoch: null needs the run's number of epochs (end_fraction of it); set end_epoch, or pass "
                              "epochs=<the run's length> (to dpap.attach or make_pruner)")
        return max(self.start_epoch, round(self.end_fraction * epochs) - 1)

    def knob(self, name: str) -> float:
        """The value of a search knob."""
        return getattr(self, name)


SEARCH_KNOBS = ("target",)
"""Knobs a search may tune (``search.ranges``)."""


def cubic_sparsity(epoch: int, start: int, end: int, initial: float, final: float) -> float:
    """s after the end of epoch ``epoch`` (module docstring): 0 before ``start``, the
    cubic from ``start`` to ``end``, ``final`` after."""
    if epoch < start:
        return 0.0
    progress = min(1.0, (epoch - start + 1) / (end - start + 1))
    return final + (initial - final) * (1.0 - progress) ** 3


def pruned_count(sparsity: float, dense: int) -> int:
    """How many of ``dense`` entries a sparsity removes: round half up, at least one left."""
    return min(dense - 1, math.floor(sparsity * dense + 0.5))


def lowest(scores: Tensor, candidates: Tensor, n: int) -> Tensor:
    """The ``n`` candidates (bool, same shape as ``scores``) with the lowest scores, ties by
    position (a bool mask)."""
    out = torch.zeros_like(candidates)
    if n <= 0:
        return out
    masked = torch.where(candidates, scores.to(torch.float64), torch.full_like(scores, math.inf, dtype=torch.float64))
    order = torch.argsort(masked.reshape(-1), stable=True)[:n]
    out.view(-1)[order] = True
    return out & candidates


class ScheduledPruning(PruningMethod):
    """A method that prunes each layer to the cubic schedule's sparsity at every epoch end;
    subclasses say how candidates rank (:meth:`scores`)."""

    name = "scheduled"

    def __init__(self, cfg: ScheduleConfig, epochs: Optional[int]):
        self.cfg = cfg
        self.start = cfg.start_epoch
        self.end = cfg.end(epochs)
        self.layers: list[dict] = []

    def attach(self, pruner: "Pruner") -> None:
        self.layers = [{"dense_units": l.units, "dense_synapses": l.units * l.pre_units} for l in pruner.layers]

    def sparsity(self, epoch: int) -> float:
        """The scheduled sparsity after the end of epoch ``epoch``."""
        return cubic_sparsity(epoch, self.start, self.end, self.cfg.initial, self.cfg.target)

    def structure(self, pruner: "Pruner", index: int) -> Optional[str]:
        """How block ``index`` is pruned: ``"units"``, ``"synapses"`` or None (not at all)."""
        if pruner.layers[index].is_output:
            return "synapses" if self.cfg.prune_output else None
        return "units" if self.cfg.structure == "channel" else "synapses"

    def scores(self, pruner: "Pruner", index: int, what: str) -> Tensor:
        """Per unit (``what="units"``, ``[units]``) or synapse (``"synapses"``,
        ``[units, pre_units]``) of block ``index``: the lowest are pruned first."""
        raise NotImplementedError

    @torch.no_grad()
    def end_epoch(self, pruner: "Pruner", epoch: int) -> None:
        if epoch < self.start:
            return
        s = self.sparsity(epoch)
        for i in range(len(pruner.layers)):
            what = self.structure(pruner, i)
            if what is None:
                continue
            if what == "units":
                living = pruner.units[i]
                dense = self.layers[i]["dense_units"]
            else:
                living = pruner.synapse_mask(i)
                dense = self.layers[i]["dense_synapses"]
            alive_now = int(living.sum())
            n = alive_now - (dense - pruned_count(s, dense))
            if n <= 0:
                continue
            died = lowest(self.scores(pruner, i, what), living, n)
            if what == "units":
                pruner.kill_units(i, died)
            else:
                pruner.kill_synapses(i, died)

    def can_still_prune(self, pruner: "Pruner", epochs_left: range) -> bool:
        return any(e <= self.end for e in epochs_left)

    def state_dict(self) -> dict:
        return {"layers": [dict(l) for l in self.layers]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["layers"]) != len(self.layers):
            raise ValueError(f"{self.name} state has {len(state['layers'])} layers, the network {len(self.layers)}")
        self.layers = [dict(l) for l in state["layers"]]
