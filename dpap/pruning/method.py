"""What a pruning method is: which units and synapses to prune (or restore), and when.

A method never touches masks or weights directly for pruning; it tells the
:class:`~dpap.pruning.mechanics.Pruner` (``kill_units``, ``kill_synapses``,
``restore_synapses``), which owns the masks and applies them. (The one exception: a method
whose synapses switch off and on at every training step, Grad R and Deep R, keeps the weights
of its switched-off synapses at 0 itself in :meth:`PruningMethod.after_step` and tells the
pruner at the end of each epoch.) Methods:
:class:`~dpap.pruning.dpap.method.DPAPMethod` (the paper, with its ``gradual``, ``paper`` and
``reference`` protocols), SD-SNN and the baselines (``gmp``, ``random``, ``gradr``, ``deepr``):
:mod:`dpap.pruning.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from dpap.snn.networks import Block

# A method's hooks take the :class:`~dpap.pruning.mechanics.Pruner` that runs it (written
# "Pruner" below); mechanics imports this module, so this one names it without importing it.


class PruningMethod:
    """Base class of the pruning methods. ``name`` identifies the method's state."""

    name = "none"
    masks_every_step = True
    """The pruner applies the masks after every optimizer step and masks gradients (False:
    only at the end of an epoch, so pruned weights train as shadow weights in between:
    SD-SNN's ``reference`` protocol; or a method that masks the weights itself, step by step,
    in :meth:`after_backward` and :meth:`after_step`: Grad R, Deep R)."""
    silence_units = True
    """A pruned unit's bias and BatchNorm affine terms are zeroed too, so it never fires."""
    permanent = True
    """No pruned unit comes back and compression never falls: a run may be compacted for
    good between epochs, and a search may stop a trial as soon as it overshoots its target.
    (Synapses swapped at a fixed count between living units, DPAP's regrowth, keep both.)"""
    still_between_decisions = False
    """Nothing of the method's state changes between two :meth:`end_epoch` calls (it
    observes nothing). With masks every step and ``silence_units`` (a pruned unit exactly
    silent), an epoch may then be trained without the pruned units, which are put back as
    the masked network would hold them before the method decides; the method keeps its
    state in the dense shapes (:func:`dpap.training.compact_epoch.mode`)."""
    needs_dead_gradients = False
    """The method reads the gradients of pruned weights in :meth:`after_backward` (DPAP's
    regrowth): ``dpap.attach``'s gradient hooks then leave a weight's gradient whole and
    :meth:`Pruner.mask_gradients <dpap.pruning.mechanics.Pruner.mask_gradients>` zeroes the
    pruned entries after the method has read them, before the optimizer step."""
    value_name = "survival"
    """What :meth:`values` holds (the MLflow image key prefix and histogram axis)."""

    def mid_epoch(self) -> bool:
        """The method holds state summed since its last :meth:`end_epoch` that is not in its
        :meth:`state_dict` (DPAP's regrowth gradients), so the run may not be compacted now."""
        return False

    def attach(self, pruner: "Pruner") -> None:
        """Called once by the pruner, with the network's geometry in ``pruner.layers``."""

    def observe(self, pruner: "Pruner", index: int, block: "Block", pre: Tensor, post: Tensor) -> None:
        """Activity of block ``index`` in one training batch (``pre``: its input, static
        ``[N, ...]`` or ``[T, N, ...]``; ``post``: its neurons' output ``[T, N, ...]``)."""

    def end_epoch(self, pruner: "Pruner", epoch: int) -> None:
        """Decide after epoch ``epoch`` (from 0) and tell the pruner."""

    def after_backward(self, pruner: "Pruner") -> None:
        """Once per training step, after the backward pass and before the optimizer step
        (:meth:`Pruner.mask_gradients <dpap.pruning.mechanics.Pruner.mask_gradients>` calls it
        first, whatever :attr:`masks_every_step`). For a method whose hidden per-synapse
        parameters train while their synapse is off (Grad R, Deep R): it may read and change
        the gradients and put hidden values into the weights for the optimizer to update.
        Nothing by default."""

    def after_step(self, pruner: "Pruner") -> None:
        """Once per training step, right after the optimizer step (:meth:`Pruner.apply_masks
        <dpap.pruning.mechanics.Pruner.apply_masks>` calls it first, whatever
        :attr:`masks_every_step`): such a method reads its hidden values back from the
        weights, switches synapses off and on, and leaves every weight of a synapse that is
        off at exactly 0. Such a method sets ``masks_every_step = False`` (its own masks change
        within an epoch) and tells the pruner its synapses at the end of the epoch. Nothing
        by default."""

    def values(self, pruner: "Pruner") -> dict[str, Tensor]:
        """Per-entry values worth a histogram (e.g. survival functions), living entries only."""
        return {}

    def reduce_statistics(self, pruner: "Pruner", reduce) -> None:
        """Data-parallel training: sum the epoch's per-rank statistics over the ranks
        (``reduce``: an in-place sum) before :meth:`end_epoch` uses them."""

    def layer_stats(self, pruner: "Pruner") -> dict[int, dict[str, float]]:
        """Per-block scalars worth a chart each epoch (e.g. SD-SNN's rate ``p``)."""
        return {}

    def can_still_prune(self, pruner: "Pruner", epochs_left: range) -> bool:
        """Whether anything could still die in ``epochs_left`` (an early stop of a search
        trial below its target relies on a False here). True when unsure."""
        return True

    def to(self, device) -> None:
        """Move the method's tensors to ``device``."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@dataclass(frozen=True)
class MethodSpec:
    """A registered pruning method (``params.yaml``: ``pruning.method: <name>``)."""

    name: str
    """Its name in ``pruning.method``, and the group ``pruning.<name>`` of its settings."""
    config: type
    """Its settings model (a :class:`~dpap.schema.Settings`), with the defaults a run uses."""
    build: Callable[[Any, int], PruningMethod]
    """``build(settings, epochs)``: a fresh method for a run of ``epochs`` epochs (None: a run
    of open length, e.g. a user's own loop)."""
    search_knobs: tuple[str, ...] = ()
    """Knobs of ``pruning.<name>`` a search may tune (``search.ranges``)."""
    summary: str = ""
    """One line for ``docs/methods.md`` and ``dpap methods``."""
