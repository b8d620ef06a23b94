"""Compaction while training: a :class:`~dpap.training.loop.TrainingRun` made smaller between
epochs, its results still counted against the dense network.

* :func:`compact_run`: the run's network, optimizer (Adam moments and step counts),
  learning-rate schedule and pruner (masks and the method's per-unit and per-synapse
  state) replaced by compacted ones, in place. ``run.extra["compaction"]`` records the
  compact architecture and, per block, the indices of the dense network's units that
  are kept (across successive compactions), so that the checkpoint written after the
  epoch holds the compact state and a resumed run rebuilds the same shapes
  (:func:`restore_compacted`).
* :func:`dense_report`: the compression report an uncompacted run would give (the
  compact network put back into the dense shapes with zeros, :func:`expand_run`'s
  network), so the history, MLflow and the search see the same numbers either way.
* :func:`expand_run`: the inverse, at the end of training, so that what the run hands on
  (``models/model.pt``, evaluation, export) has the dense shapes and masks as before.
* :class:`CompactWhenShrunk`: the trigger, a training callback: after an epoch in which
  some hidden layer has lost at least ``share`` of the units it had at the last
  compaction (or at the start), compact.

Only methods whose pruning is permanent (no unit comes back) are compacted here, between
epochs for good; DPAP's regrowth swaps synapses between living units and stays one of them.
A method that may bring units back (SD-SNN) trains each epoch compact instead
(:mod:`.compact_epoch`).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from dpap.pruning.compression import CompressionReport, compression_of, count_parameters
from dpap.snn.networks import SpikingNetwork, build_network
from dpap.training.compact_epoch import lost_share, mode
from dpap.compaction.network import CompactionError, compact_pruned, expand
from dpap.training.setup import continue_scheduler, make_network, make_optimizer, make_run_pruner, make_scheduler
from dpap.compaction.state import Frame, map_optimizer_state, map_pruner_state

# A run is a :class:`~dpap.training.loop.TrainingRun` (written "TrainingRun" below); the loop
# imports this module, so this one names it without importing it.

KEY = "compaction"
"""``run.extra[KEY]``: ``{"arch", "kept", "compactions", "epoch"}`` of a compacted run."""


def is_compacted(run: "TrainingRun") -> bool:
    return bool(run.extra.get(KEY))


def _kept(run: "TrainingRun") -> list[Tensor]:
    return [torch.tensor(k, dtype=torch.long) for k in run.extra[KEY]["kept"]]


def _dense_template(run: "TrainingRun", device) -> SpikingNetwork:
    """A network with the dense shapes of ``run.cfg`` (its values are not used), built
    without touching the random number generators."""

    with torch.device("meta"):
        net = make_network(run.cfg, run.input_shape, run.num_classes)
    net = net.to_empty(device=device)
    net.time_steps = run.net.time_steps
    return net


def _swap(run: "TrainingRun", net: SpikingNetwork, frame: Frame, direction: str) -> None:
    """Replace run's network, optimizer, scheduler and pruner by ones on ``net``, their
    states mapped through ``frame`` (``cut``: ``net`` is smaller; ``expand``: larger)."""

    source = run.net
    optimizer = make_optimizer(run.cfg, net.parameters())
    optimizer.load_state_dict(map_optimizer_state(run.optimizer.state_dict(), source, net, frame, optimizer.state_dict(), direction))
    scheduler = continue_scheduler(run.cfg, optimizer, run.scheduler.state_dict() if run.scheduler is not None else None)
    pruner = None
    if run.pruner is not None:
        pruner = make_run_pruner(net, run.cfg)
        pruner.load_state_dict(map_pruner_state(run.pruner.state_dict(), frame, pruner.state_dict(), direction))
        pruner.last_reports = list(run.pruner.last_reports)
        pruner.reduce = run.pruner.reduce  # data-parallel: its statistics still sum over the ranks
        run.pruner.detach()
    run.net, run.optimizer, run.scheduler, run.pruner = net, optimizer, scheduler, pruner


def compact_run(run: "TrainingRun") -> bool:
    """Compact ``run`` in place (module docstring); False when no hidden unit is dead
    (nothing changes then)."""
    pruner = run.pruner
    if pruner is None:
        return False
    how = mode(pruner.method)
    if how != "between":
        name = pruner.method.name
        if not pruner.method.permanent:
            why = f"method {name!r} can bring pruned units back"
        elif how == "epoch":
            why = f"method {name!r} keeps state for every unit in the dense shapes (it trains each epoch compact instead)"
        else:
            why = f"method {name!r} lets pruned units compute during the epoch (masks applied only at its end, or bias and BN left live)"
        raise CompactionError(f"compaction while training: {why}; only a method whose pruning is permanent (dpap) can be compacted before training ends")
    if pruner.method.mid_epoch():
        raise CompactionError(f"compaction while training: method {pruner.method.name!r} holds this epoch's regrowth gradients in the dense shapes; compact between epochs, after the pruner's end_epoch")
    c = compact_pruned(pruner)
    if all(len(k) == b.units for k, b in zip(c.kept, run.net.blocks)):
        return False
    frame = Frame.of(run.net, c.kept)
    previous = _kept(run) if is_compacted(run) else None
    _swap(run, c.net, frame, "cut")
    dense_kept = [p[k] for p, k in zip(previous, c.kept)] if previous is not None else c.kept
    count = run.extra.get(KEY, {}).get("compactions", 0)
    run.extra[KEY] = {"arch": c.net.arch, "kept": [k.tolist() for k in dense_kept], "compactions": count + 1, "epoch": run.epoch}
    return True


def restore_compacted(run: "TrainingRun", record: dict) -> None:
    """Give ``run`` (just built with the dense shapes) the compact shapes of ``record``
    (a checkpoint's ``extra["compaction"]``), with fresh optimizer, scheduler and
    pruner; the checkpoint's states are loaded into them next."""

    cfg, n = run.cfg, cfg_neuron(run)
    try:
        with torch.random.fork_rng(devices=[]):
            net = build_network(record["arch"], run.input_shape, run.num_classes, cfg.model.kind, cfg.model.time_steps, *n)
    except Exception as exc:  # noqa: BLE001 - a checkpoint from elsewhere
        raise CompactionError(f"checkpoint: compact architecture {record.get('arch')!r} cannot be built ({exc})") from None
    net.time_steps = run.net.time_steps
    net = net.to(run.device)
    reduce = None
    if run.pruner is not None:
        reduce = run.pruner.reduce
        run.pruner.detach()
    run.net = net
    run.pruner = make_run_pruner(net, cfg)
    if run.pruner is not None:
        run.pruner.reduce = reduce
    run.optimizer = make_optimizer(cfg, net.parameters())
    run.scheduler = make_scheduler(cfg, run.optimizer)


def cfg_neuron(run: "TrainingRun") -> tuple:
    n = run.cfg.neuron
    return (n.decay, n.threshold, n.surrogate_width, n.detach_reset)


def dense_view(run: "TrainingRun") -> tuple[SpikingNetwork, Optional[list[Tensor]], Optional[list[Tensor]]]:
    """The run's network with the dense shapes (a copy; the run's own network when it was
    never compacted) and its unit and synapse masks in those shapes."""
    pruner = run.pruner
    n = len(run.net.blocks)
    units = [pruner.unit_mask(i) for i in range(n)] if pruner is not None else None
    synapses = [pruner.synapse_mask(i) for i in range(n)] if pruner is not None else None
    if not is_compacted(run):
        return run.net, units, synapses
    kept = _kept(run)
    device = run.net.blocks[0].synapse.weight.device
    template = _dense_template(run, device)
    frame = Frame.of(template, kept)
    net = expand(run.net, kept, template)
    if pruner is None:
        return net, None, None
    dense_units = [frame.expand(i, u.cpu(), torch.zeros(b.units, dtype=torch.bool)) for i, (u, b) in enumerate(zip(units, template.blocks))]
    dense_synapses = [
        frame.expand(i, s.cpu(), torch.zeros(b.synapse.weight.shape[:2], dtype=torch.bool)) for i, (s, b) in enumerate(zip(synapses, template.blocks))
    ]
    return net, dense_units, dense_synapses


def dense_report(run: "TrainingRun") -> CompressionReport:
    """:func:`~dpap.pruning.compression.compression_of` of the run as if it had never been
    compacted: the same dense and retained counts, the same share of zero weights."""
    if not is_compacted(run):
        return compression_of(run.net, run.pruner)
    net, units, synapses = dense_view(run)
    return count_parameters(net, units, synapses)


def expand_run(run: "TrainingRun") -> bool:
    """Put a compacted run back into the dense shapes (network, optimizer, scheduler,
    pruner), as an uncompacted run would end; False when it was never compacted."""
    if not is_compacted(run):
        return False
    kept = _kept(run)
    device = run.net.blocks[0].synapse.weight.device
    template = _dense_template(run, device)
    net = expand(run.net, kept, template)
    _swap(run, net, Frame.of(template, kept), "expand")
    del run.extra[KEY]
    return True


class CompactWhenShrunk:
    """Training callback: compact the run after an epoch in which a hidden layer has lost
    at least ``share`` of its units since the last compaction (or the start), as long
    as epochs are left to train.

    >>> TrainingRun(cfg, train, test, shape, classes, callbacks=[CompactWhenShrunk(0.25)])

    Methods that can bring units back (SD-SNN) are left alone. Pass it again when
    resuming (a callback is not part of the checkpoint; the compacted state is)."""

    def __init__(self, share: float = 0.25):
        if not 0.0 < share <= 1.0:
            raise ValueError(f"compaction share: got {share}, expected a share in (0, 1]")
        self.share = share

    def shrunk(self, run: "TrainingRun") -> bool:
        """Whether some hidden layer has lost ``share`` of its units since the last compaction."""
        return lost_share(run, self.share)

    def __call__(self, run: "TrainingRun", metrics: "EpochMetrics") -> None:
        pruner = run.pruner
        if pruner is None or mode(pruner.method) != "between" or run.epoch >= run.cfg.train.epochs:
            return
        if self.shrunk(run):
            compact_run(run)
