"""``dpap.compact``: a physically smaller copy of a pruned model that computes the same.

dpap's own :class:`~dpap.snn.networks.SpikingNetwork` goes through
:func:`dpap.compaction.compact` (measured and tested there). Any other model goes through
Torch-Pruning's ``DependencyGraph``: it follows the model's autograd graph on an example
input and groups every tensor dimension that must shrink together when a channel or neuron
goes (the next layer's input channels, BatchNorm, both sides of a residual addition, the
slices of a concatenation, the flattened positions before a linear layer). A dead unit's
channel is removed when it is dead in every layer of its group whose output it is part of
(a channel added to a living residual stream stays); the output layer keeps its units.

Spiking models run time steps, which Torch-Pruning's graph does not know: a multi-step
model folds ``[T, N, C, ...]`` into ``[T·N, C, ...]`` and back, and unbinds the time
dimension, and the graph would read those as channel reshapes and splits.
:func:`_time_aware` marks such nodes as element-wise (channels pass through unchanged)
and gives a flatten of ``[..., C, H, W]`` into ``[..., C·H·W]`` its exact index mapping.

The copy's outputs are checked against the masked model's on the example input; a copy
that differs (an operation the graph cannot follow) is a :class:`CompactError`, never a
silent change.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch_pruning import ops
from torch_pruning.dependency.index_mapping import _FlattenIndexMapping

from dpap.adapters.attachment import AttachedPruner, _example, pruner_of
from dpap.adapters.masks import SYNAPSES, UNITS
from dpap.adapters.errors import CompactError
from dpap.adapters.neurons import reset_states
from dpap.compaction import compact_pruned
from dpap.compaction import compact as compact_network
from dpap.snn.networks import SpikingNetwork


FLIPS = 1e-3
"""The share of output elements the check lets differ (spikes flipped by float rounding)."""


def compact(model: nn.Module, example_input: Any = None, *, check: bool = True, atol: float = 1e-5) -> nn.Module:
    """A smaller copy of ``model`` without its pruned units (``model`` is not changed).

    ``example_input``: a batch for Torch-Pruning's trace (default: the one given to
    ``attach`` or the first batch the model saw since). ``check``: compare the copy's
    outputs with the model's on that batch, raising :class:`CompactError` when more than
    :data:`FLIPS` of them differ by more than ``atol``."""
    pruner = pruner_of(model)
    if isinstance(model, SpikingNetwork):
        return compact_pruned(pruner.pruner).net if pruner is not None else compact_network(model).net
    if pruner is None:
        raise CompactError(f"compact: no pruner is attached to this {type(model).__name__}; prune it with dpap.attach(model) first")
    pruner._sync()
    example = _example(example_input) or pruner.example
    if example is None:
        raise CompactError("compact: the model has not run since attach; pass example_input=<one batch, as the model takes it>")
    small = _copy_without_hooks(model, pruner)
    _shrink(small, model, pruner, example)
    if check:
        _check(model, small, example, pruner.neurons, atol)
    return small


def _copy_without_hooks(model: nn.Module, pruner: AttachedPruner) -> nn.Module:
    """A deep copy of ``model`` without the pruner's hooks and mask buffers."""
    names = {id(b.synapse): n for n, b in zip(pruner.layers, pruner.blocks)}
    owned = pruner._handles + (pruner.observer.handles if pruner.observer else []) + (pruner.keeper.handles if pruner.keeper else [])
    handles = {h.id for h in owned if hasattr(h, "id")}
    memo: dict = {}  # neuron states left by the last forward are not graph leaves: copied detached
    for m in model.modules():
        for t in list(m.__dict__.values()) + list(m._buffers.values()):
            if isinstance(t, Tensor) and t.grad_fn is not None:
                memo[id(t)] = t.detach().clone()
    small = copy.deepcopy(model, memo)  # (parameters are copied without their gradient hooks)
    for (name, orig), (_, mod) in zip(model.named_modules(), small.named_modules()):
        for registry in ("_forward_pre_hooks", "_forward_hooks", "_load_state_dict_pre_hooks", "_forward_hooks_with_kwargs",
                         "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called"):
            ours = set(getattr(orig, registry, {})) & handles
            for key in ours:
                getattr(mod, registry, {}).pop(key, None)
        if id(orig) in names:
            for key in (UNITS, SYNAPSES):
                mod._buffers.pop(key, None)
    reset_states(small, pruner.neurons)
    return small


def _time_aware(graph) -> None:
    """Torch-Pruning's graph made aware of time steps (module docstring)."""
    flattens = []
    for node in graph.module2node.values():
        gf = node.grad_fn
        if node.type == ops.OPTYPE.UNBIND and getattr(gf, "_saved_dim", 0) == 0:
            _element_wise(node)
        elif node.type == ops.OPTYPE.RESHAPE:
            try:
                a, b = tuple(gf._saved_self_sym_sizes), tuple(gf._input_metadata[0].shape)
            except (AttributeError, IndexError, RuntimeError):
                continue
            k = 0
            while k < min(len(a), len(b)) and a[-1 - k] == b[-1 - k]:
                k += 1
            if k >= 1 and math.prod(a[: len(a) - k]) == math.prod(b[: len(b) - k]):
                _element_wise(node)  # [T·N, C, ...] <-> [T, N, C, ...]
                continue
            p = 0
            while p < min(len(a), len(b)) and a[p] == b[p]:
                p += 1
            if p >= 1 and len(b) == p + 1 and len(a) > p + 1 and b[p] == math.prod(a[p:]):
                _element_wise(node)  # [..., C, H, W] -> [..., C·H·W]: H·W positions per channel
                flattens.append((node, math.prod(a[p + 1 :])))
    for node, stride in flattens:
        for src in node.inputs:
            for dep in node.dependencies:
                if dep.target == src:
                    dep.index_mapping[0] = _FlattenIndexMapping(stride=stride, reverse=True)
            for dep in src.dependencies:
                if dep.target == node:
                    dep.index_mapping[0] = _FlattenIndexMapping(stride=stride, reverse=False)


def _element_wise(node) -> None:
    node.type = ops.OPTYPE.ELEMENTWISE
    for dep in node.dependencies:
        dep.index_mapping = [None, None]
    for other in node.inputs + node.outputs:
        for dep in other.dependencies:
            if dep.target is node:
                dep.index_mapping = [None, None]


def _run(model: nn.Module, example: tuple):
    args, kwargs = example
    return model(*args, **kwargs)


def _shrink(small: nn.Module, model: nn.Module, pruner: AttachedPruner, example: tuple) -> None:
    """Remove the dead units of ``small`` (a copy of ``model``) group by group."""
    to_small = {id(o): s for o, s in zip(model.modules(), small.modules())}
    layers = [to_small[id(b.synapse)] for b in pruner.blocks]
    alive = {id(layer): pruner.pruner.unit_mask(i).detach().cpu().clone() for i, layer in enumerate(layers)}
    output = layers[-1]
    was_training = small.training
    with warnings.catch_warnings(), torch.enable_grad():
        warnings.simplefilter("ignore")
        graph = tp.DependencyGraph().build_dependency(small, example_inputs=example, forward_fn=_run, verbose=False)
    _time_aware(graph)
    try:
        for layer in layers:
            if layer is output:
                continue
            dead = (~alive[id(layer)]).nonzero().flatten().tolist()
            if not dead:
                continue
            if len(dead) == len(alive[id(layer)]):
                dead = dead[1:]  # a layer cannot be empty: one dead unit stays (zero weights)
            fn = tp.prune_conv_out_channels if isinstance(layer, nn.Conv2d) else tp.prune_linear_out_channels
            group = graph.get_pruning_group(layer, fn, dead)
            removable = set(dead)
            for item in group.items:  # a channel goes only where it is dead in every coupled output
                target = item.dep.target.module
                if graph.is_out_channel_pruning_fn(item.dep.handler) and isinstance(target, (nn.Conv2d, nn.Linear)):
                    mask = alive.get(id(target))
                    for idx, root in zip(item.idxs, item.root_idxs):
                        if mask is None or target is output or bool(mask[idx]):
                            removable.discard(root)
            if not removable:
                continue
            group = graph.get_pruning_group(layer, fn, sorted(removable))
            for item in group.items:
                target = item.dep.target.module
                if graph.is_out_channel_pruning_fn(item.dep.handler) and id(target) in alive:
                    keep = torch.ones(len(alive[id(target)]), dtype=torch.bool)
                    keep[list(item.idxs)] = False
                    alive[id(target)] = alive[id(target)][keep]
            group.prune()
    finally:
        small.train(was_training)
    reset_states(small, pruner.neurons)


@torch.no_grad()
def _check(model: nn.Module, small: nn.Module, example: tuple, neurons: tuple, atol: float) -> None:
    was = model.training
    model.eval()
    small.eval()
    try:
        reset_states(model, neurons)
        reset_states(small, neurons)
        ours = _flat(_run(model, example))
        reset_states(model, neurons)
        theirs = _flat(_run(small, example))
    except RuntimeError as exc:
        raise CompactError(f"compact: the smaller copy does not run ({str(exc).splitlines()[0][:160]}); "
                           f"this model has an operation Torch-Pruning cannot follow: use the masked model as it is") from None
    finally:
        model.train(was)
        small.train(was)
        reset_states(model, neurons)
        reset_states(small, neurons)
    for a, b in zip(ours, theirs):
        # the smaller layers sum in another order: a membrane within rounding of the
        # threshold may flip a spike, so a few elements in a thousand may differ
        off = (a.float() - b.float()).abs() > atol if a.shape == b.shape else None
        if off is None or float(off.float().mean()) > FLIPS:
            raise CompactError("compact: the smaller copy's outputs differ from the model's on the example input; this model "
                               "has an operation Torch-Pruning cannot follow: use the masked model as it is")


def _flat(out: Any) -> list[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flat(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _flat(o)]
    return []


__all__ = ["compact"]
