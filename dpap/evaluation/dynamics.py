"""How a run pruned: the shape of its compression curve and what each layer kind lost.

Pure functions over the per-epoch history of :func:`dpap.training.loop.fit` (each epoch's
``layers``: ``units``, ``units_alive``, ``synapses``, ``synapses_alive`` per block, the
last block being the output layer). Used by the evaluate stage (``metrics.json``) and by
``benchmarks/pruning_dynamics.py``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping, Optional, Sequence


@dataclass
class KindShares:
    """Shares pruned per layer kind: conv channels (all conv layers), hidden FC neurons,
    hidden FC synapses (a synapse counts as pruned when it, its neuron or its input is)."""

    conv_channels_pruned: float
    fc_neurons_pruned: float
    fc_synapses_pruned: float


def kind_shares(layers: Sequence[Mapping]) -> KindShares:
    """:class:`KindShares` of one epoch's ``layers`` (the output layer is left out: it loses
    no neurons, and synapses only with ``pruning.dpap.prune_output``)."""
    hidden = list(layers[:-1])
    conv = [l for l in hidden if l["layer_type"] == "conv"]
    fc = [l for l in hidden if l["layer_type"] == "fc"]

    def pruned(rows, alive: str, total: str) -> float:
        n = sum(r[total] for r in rows)
        return 1.0 - sum(r[alive] for r in rows) / n if n else 0.0

    return KindShares(pruned(conv, "units_alive", "units"), pruned(fc, "units_alive", "units"), pruned(fc, "synapses_alive", "synapses"))


@dataclass
class PruningDynamics:
    """The compression curve of a run and its summary."""

    compression: list[float]
    max_epoch_jump: float
    """The largest rise of compression from one epoch to the next (from 0 before epoch 1)."""
    max_jump_epoch: Optional[int]
    first_prune_epoch: Optional[int]
    """The first epoch (1-based) that ends with anything pruned; None if nothing was."""
    final: KindShares

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(d.pop("final"))
        d.pop("compression")
        return d


def pruning_dynamics(history: Sequence) -> PruningDynamics:
    """Summarise a run's history (:class:`~dpap.training.loop.EpochMetrics` or their dicts)."""
    rows = [h if isinstance(h, Mapping) else h.__dict__ for h in history]
    comp = [float(r["compression"]) for r in rows]
    jumps = [b - a for a, b in zip([0.0] + comp[:-1], comp)]
    top = max(range(len(jumps)), key=jumps.__getitem__) if jumps else None
    first = next((i + 1 for i, c in enumerate(comp) if c > 0), None)
    final = kind_shares(rows[-1]["layers"]) if rows else KindShares(0.0, 0.0, 0.0)
    return PruningDynamics(comp, max(jumps, default=0.0), top + 1 if top is not None and jumps[top] > 0 else None, first, final)
