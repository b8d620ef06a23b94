"""Which layers of a traced model can be pruned, which neuron each feeds, which unit each reads.

A conv (``nn.Conv2d``) or linear layer is *prunable* when its output reaches exactly one
spiking neuron module through operations that keep channels apart (BatchNorm, pooling,
dropout, flatten, reshapes of the time and batch dimensions): the neuron's spikes are
then the layer's units' spikes. Its *source* is the block whose neuron's spikes reach its
input the same way, with matching sizes (a conv reading C channels of a block with C
units; a linear layer reading ``C·H·W`` flattened positions of a conv block with C units:
``in_spatial = H·W``); a layer whose input comes from a residual addition, a
concatenation or the model's input has none, and its inputs are never pruned for it.

The last prunable layer in the order of the forward pass is the output layer (its units
are never pruned); it may feed no neuron at all (a readout).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

from torch import nn

from dpap.adapters.errors import AttachError
from dpap.adapters.trace import INPUT, LAYER, NEURON, OP, PASS, UNKNOWN, Graph, keeps_channels

KNOWN = "snnTorch (Leaky, Synaptic, ...), SpikingJelly (LIFNode, IFNode, ParametricLIFNode, ...) or dpap's LIF"


@dataclass
class Found:
    """A prunable layer of the model."""

    name: str
    layer: nn.Module
    neuron: Optional[nn.Module]
    neuron_name: str
    norm: Optional[nn.Module]
    source: Optional[int] = None
    in_spatial: int = 1
    is_output: bool = False
    reads_input: bool = False
    """Every call reads the model's input (through channel-keeping operations only)."""

    @property
    def units(self) -> int:
        return self.layer.weight.shape[0]


def _passes(node) -> bool:
    if node.kind == PASS:
        return True
    return node.kind == OP and keeps_channels(node.name, node.shape_in, node.shape_out)


def _forward(graph: Graph, consumers: dict, start: int):
    """From node ``start``, through channel-keeping nodes: the first other nodes reached,
    and the BatchNorm modules passed."""
    reached, norms, seen, todo = [], [], {start}, list(consumers[start])
    while todo:
        i = todo.pop()
        if i in seen:
            continue
        seen.add(i)
        node = graph.nodes[i]
        if _passes(node):
            if node.module is not None and isinstance(node.module, nn.modules.batchnorm._BatchNorm):
                norms.append(node.module)
            todo.extend(consumers[i])
        else:
            reached.append(node)
    return reached, norms


def _backward(graph: Graph, start: int) -> list:
    """From node ``start``'s inputs back through channel-keeping nodes: the first others."""
    found, seen, todo = [], set(), list(graph.nodes[start].inputs)
    while todo:
        i = todo.pop()
        if i < 0:
            found.append(None)
            continue
        if i in seen:
            continue
        seen.add(i)
        node = graph.nodes[i]
        if _passes(node):
            todo.extend(node.inputs)
        else:
            found.append(node)
    return found


def _leaf_like(model: nn.Module, path: Optional[str], neurons: tuple) -> bool:
    """A module with no layer or neuron inside: what an unknown neuron class looks like."""
    if not path:
        return False
    sub = model.get_submodule(path)
    return not any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in sub.modules())


def find_blocks(model: nn.Module, graph: Graph, neurons: tuple = (), ignore: tuple = ()) -> tuple[list[Found], list[str]]:
    """The prunable layers in the order of the forward pass, and the conv/linear layers
    left dense (with a warning saying why). Raises :class:`AttachError` for an unknown
    neuron type after a layer, a weight shared by two layers, or no prunable layer."""
    consumers = graph.consumers()
    calls: dict[nn.Module, list] = {}
    for node in graph.nodes:
        if node.kind == LAYER:
            calls.setdefault(node.module, []).append(node)
    _check_shared(calls)
    found: list[Found] = []
    dense: list[str] = []
    neuron_owner: dict[nn.Module, str] = {}
    for layer, nodes in calls.items():
        name = nodes[0].name
        if name in ignore:
            dense.append(name)
            continue
        per_call = []
        norms: set = set()
        for node in nodes:
            reached, bns = _forward(graph, consumers, node.index)
            norms.update(bns)
            for r in reached:
                if r.kind == UNKNOWN or (r.kind == OP and _leaf_like(model, r.owner, neurons)):
                    what = r.name if r.kind == UNKNOWN else r.owner
                    cls = type(model.get_submodule(what)).__name__
                    raise AttachError(
                        f"attach: layer '{name}' feeds '{what}' ({cls}), which is no spiking neuron dpap knows ({KNOWN}); "
                        f"if it is one, pass neurons=({cls},) (its output, or the output's first item, must be the spikes), "
                        f"else ignore=['{name}'] to leave that layer dense"
                    )
            per_call.append({r.module for r in reached if r.kind == NEURON})
        targets = set().union(*per_call) if per_call else set()
        if len(targets) > 1 or any(p != per_call[0] for p in per_call):
            raise AttachError(
                f"attach: layer '{name}' is used at more than one place of the forward pass (it feeds "
                f"{', '.join(sorted(_name(model, t) for t in targets)) or 'different operations'}): a weight shared by two layers "
                f"cannot be pruned for each; give each place its own layer, or ignore=['{name}']"
            )
        neuron = next(iter(targets), None)
        if neuron is not None:
            other = neuron_owner.get(neuron)
            if other is not None:
                raise AttachError(
                    f"attach: the neuron module '{_name(model, neuron)}' follows two layers ('{other}' and '{name}'), so its "
                    f"spikes cannot be told apart; give each layer its own neuron module"
                )
            neuron_owner[neuron] = name
        norm = next(iter(norms)) if len(norms) == 1 and neuron is not None else None
        found.append(Found(name, layer, neuron, _name(model, neuron) if neuron is not None else "", norm))
    if not found:
        raise AttachError(
            f"attach: {type(model).__name__} has no prunable layer: no nn.Conv2d or nn.Linear "
            f"{'feeds a spiking neuron' if calls else 'was called in the forward pass'}; dpap prunes the conv and linear layers "
            f"in front of {KNOWN}"
        )
    found = _outputs_and_dense(found, dense)
    _sources(graph, calls, found)
    return found, dense


def _check_shared(calls: dict) -> None:
    owner: dict[int, str] = {}
    for layer, nodes in calls.items():
        for p in (layer.weight,):
            prev = owner.setdefault(id(p), nodes[0].name)
            if prev != nodes[0].name:
                raise AttachError(
                    f"attach: layers '{prev}' and '{nodes[0].name}' share one weight tensor; DPAP prunes each layer's own "
                    f"synapses: give each layer its own weight, or ignore=['{prev}', '{nodes[0].name}']"
                )


def _outputs_and_dense(found: list[Found], dense: list[str]) -> list[Found]:
    """The last layer is the output layer; any other layer without a neuron stays dense."""
    out = []
    for i, f in enumerate(found):
        last = i == len(found) - 1
        if f.neuron is None and not last:
            warnings.warn(f"dpap.attach: layer '{f.name}' feeds no spiking neuron directly (e.g. a residual addition "
                          f"before the neuron); it stays dense", stacklevel=3)
            dense.append(f.name)
            continue
        out.append(f)
    out[-1].is_output = True
    return out


def _sources(graph: Graph, calls: dict, found: list[Found]) -> None:
    by_neuron = {f.neuron: i for i, f in enumerate(found) if f.neuron is not None}
    for i, f in enumerate(found):
        sources = set()
        behind = [r for node in calls[f.layer] for r in _backward(graph, node.index)]
        f.reads_input = bool(behind) and all(r is None or r.kind == INPUT for r in behind)
        for r in behind:
            sources.add(by_neuron.get(r.module) if r is not None and r.kind == NEURON else None)
        s = sources.pop() if len(sources) == 1 else None
        if s is None or s >= i:
            continue
        units = found[s].units
        layer = f.layer
        if isinstance(layer, nn.Conv2d):
            if layer.groups == 1 and layer.in_channels == units:
                f.source = s
        elif layer.in_features % units == 0:
            f.source, f.in_spatial = s, layer.in_features // units


def _name(model: nn.Module, module: nn.Module) -> str:
    for n, m in model.named_modules():
        if m is module:
            return n
    return type(module).__name__


__all__ = ["Found", "find_blocks"]
