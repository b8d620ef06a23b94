"""Compaction for one epoch, for a method that can bring pruned units back (SD-SNN).

A method that regrows decides, at the end of every epoch, from state it keeps for every
site, pruned or not (SD-SNN: each pruned synapse's shadow value, ranges and regrowth
counters). The network cannot lose those units for good, but while an epoch trains they
compute nothing: their weights, bias and BatchNorm terms are held at 0 after every step,
and the method observes nothing (``PruningMethod.still_between_decisions``). So
:func:`compacted_epoch` trains the epoch on the compact network and, before the method
decides, puts the removed units back as the masked dense network would hold them:

* parameters: 0 (as masked);
* Adam's ``exp_avg`` / ``exp_avg_sq`` and SGD's momentum of the removed entries: their
  values at the start of the epoch times β₁ⁿ, β₂ⁿ, μⁿ after n optimizer steps (a zero
  gradient decays them so; ``max_exp_avg_sq`` stays);
* BatchNorm running mean and variance of a removed channel: × (1 − momentum)ⁿ after n
  training batches (the channel's input is 0);
* the pruner: its state at the start of the epoch (masks and the method's state do not
  change within an epoch; checked).

The run's checkpoint, ``models/model.pt`` and everything read between epochs keep the dense
shapes (they must hold what may grow back), so a resumed run needs nothing special. The
saving is in the training steps, where the time goes.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import torch

from dpap.snn.networks import SpikingNetwork
from dpap.compaction.network import CompactionError, compact_pruned
from dpap.training.setup import continue_scheduler, make_optimizer, make_run_pruner
from dpap.compaction.state import Frame, map_optimizer_state

# A run is a :class:`~dpap.training.loop.TrainingRun` (written "TrainingRun" below); the loop
# imports this module, so this one names it without importing it.


def mode(method) -> Optional[str]:
    """How a run with pruning ``method`` may be compacted while training: ``"between"``
    (for good, between epochs: :mod:`.run`), ``"epoch"`` (each epoch, the dense shapes
    kept between them: :func:`compacted_epoch`) or None (a pruned unit still computes:
    masks applied only at the end of an epoch, or its bias and BatchNorm left live)."""
    if not (method.masks_every_step and method.silence_units):
        return None
    if method.still_between_decisions:
        return "epoch"
    return "between" if method.permanent else None


def applies(run: "TrainingRun", share: float) -> bool:
    """Whether :func:`compacted_epoch` compacts ``run``'s next epoch: a method of
    :func:`mode` ``"epoch"`` and a hidden layer that has lost ``share`` of its units."""
    pruner = run.pruner
    if share <= 0 or pruner is None or mode(pruner.method) != "epoch":
        return False
    return lost_share(run, share)


def lost_share(run: "TrainingRun", share: float) -> bool:
    """Whether some hidden layer of ``run``'s network has lost at least ``share`` of the
    units it computes (and at least one)."""
    for i, block in enumerate(run.net.blocks):
        if block.is_output:
            continue
        dead = block.units - int(run.pruner.unit_mask(i).sum())
        if dead > 0 and dead >= share * block.units:
            return True
    return False


def decay_idle_state_(state: dict, steps: int) -> dict:
    """In place: ``state`` (an optimizer's ``state_dict()``; its tensors are the
    optimizer's own) as after ``steps`` steps in which every gradient is 0 on parameters
    held at 0: Adam/AdamW moments × β₁ⁿ and β₂ⁿ, SGD momentum × μⁿ. Returns ``state``."""
    for group in state["param_groups"]:
        betas, momentum = group.get("betas"), group.get("momentum")
        for k in group["params"]:
            entry = state["state"].get(k)
            if not entry:
                continue
            if betas is not None and "exp_avg" in entry:
                entry["exp_avg"].mul_(betas[0] ** steps)
                entry["exp_avg_sq"].mul_(betas[1] ** steps)
            if momentum and entry.get("momentum_buffer") is not None:
                entry["momentum_buffer"].mul_(momentum**steps)
    return state


def _idle_network_state(net: SpikingNetwork, batches: int) -> dict[str, torch.Tensor]:
    """``net.state_dict()`` after ``batches`` training forward passes in which the removed
    channels' BatchNorm input is 0: running mean and variance × (1 − momentum)ⁿ (copies of
    those two; the rest are ``net``'s own tensors)."""
    state = dict(net.state_dict())
    for i, block in enumerate(net.blocks):
        bn = block.norm
        if bn is None or not bn.track_running_stats or bn.running_mean is None or bn.momentum is None:
            continue
        keep = (1.0 - bn.momentum) ** batches
        for name in ("running_mean", "running_var"):
            key = f"blocks.{i}.norm.{name}"
            state[key] = state[key] * keep
    return state


def _block_of(key: str) -> int:
    parts = key.split(".")
    if parts[0] != "blocks" or not parts[1].isdigit():
        raise CompactionError(f"epoch compaction: network entry {key!r} is outside the blocks")
    return int(parts[1])


@contextmanager
def compacted_epoch(run: "TrainingRun", share: float) -> Iterator[bool]:
    """Train the epoch inside this block on ``run``'s compact network when :func:`applies`
    (yields True), putting the removed units back afterwards (module docstring). The dense
    network, optimizer and pruner wait untouched meanwhile (nothing of them is copied)."""
    if not applies(run, share):
        yield False
        return

    dense, cfg = run.net, run.cfg
    dense_optimizer, dense_scheduler, dense_pruner = run.optimizer, run.scheduler, run.pruner
    c = compact_pruned(dense_pruner)
    frame = Frame.of(dense, c.kept)

    # cut: the compact network, its optimizer (moments cut), schedule and pruner (masks cut)
    small = c.net.to(next(dense.parameters()).device)
    small.train(dense.training)
    optimizer = make_optimizer(cfg, small.parameters())
    optimizer.load_state_dict(map_optimizer_state(dense_optimizer.state_dict(), dense, small, frame, optimizer.state_dict(), "cut"))
    scheduler = continue_scheduler(cfg, optimizer, dense_scheduler.state_dict() if dense_scheduler is not None else None)
    dense_pruner.detach()
    pruner = make_run_pruner(small, cfg)
    state = pruner.state_dict()
    state["units"] = [frame.cut(i, u) for i, u in enumerate(dense_pruner.units)]
    state["synapses"] = [frame.cut(i, s) for i, s in enumerate(dense_pruner.synapses)]
    pruner.load_state_dict(state)
    pruner.reduce, pruner.last_reports = dense_pruner.reduce, list(dense_pruner.last_reports)
    # what the removed units sat out: optimizer steps and training forward passes taken
    counts = {"steps": 0, "forwards": 0}
    step_hook = optimizer.register_step_post_hook(lambda *_: counts.__setitem__("steps", counts["steps"] + 1))
    forward_hook = small.register_forward_pre_hook(lambda m, _: counts.__setitem__("forwards", counts["forwards"] + int(m.training)))
    run.net, run.optimizer, run.scheduler, run.pruner = small, optimizer, scheduler, pruner
    try:
        yield True
    finally:
        step_hook.remove()
        forward_hook.remove()
        # the network: kept units from the compact one, the rest as the masked run holds them
        idle = _idle_network_state(dense, counts["forwards"])
        compact_state = small.state_dict()
        dense.load_state_dict({k: frame.expand(_block_of(k), compact_state[k], v, v) for k, v in idle.items()})
        dense.train(small.training)
        # the optimizer: kept entries' state from the compact one, the rest decayed
        waiting = decay_idle_state_(dense_optimizer.state_dict(), counts["steps"])
        dense_optimizer.load_state_dict(map_optimizer_state(optimizer.state_dict(), small, dense, frame, waiting, "expand", waiting))
        if scheduler is not None and dense_scheduler is not None:
            dense_scheduler.load_state_dict(scheduler.state_dict())
        # the pruner: as it was (checked: nothing decided within the epoch)
        moved = [not torch.equal(frame.cut(i, u).to(p.device), p) for i, (u, p) in enumerate(zip(dense_pruner.units, pruner.units))]
        pruner.detach()
        dense_pruner.reattach()
        run.net, run.optimizer, run.scheduler, run.pruner = dense, dense_optimizer, dense_scheduler, dense_pruner
        if any(moved):
            raise CompactionError(
                f"epoch compaction: method {dense_pruner.method.name!r} changed masks within an epoch; "
                "it must not declare still_between_decisions (set train.compact_share: 0 to train it dense)"
            )
