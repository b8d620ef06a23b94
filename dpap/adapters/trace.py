"""The data flow of any model, as a graph of module calls and tensor operations.

Two ways to get it, both into the same :class:`Graph`:

* :func:`trace_run` runs one forward pass on an example input and records every call of
  a *unit* module (a conv/linear layer, a neuron, BatchNorm, pooling, dropout, flatten, or
  any module without children) and every torch operation between them (a
  ``TorchFunctionMode``), with the tensors that connect them. It follows whatever the
  forward does: loops over time steps, data-dependent shapes, SpikingJelly's containers.
* :func:`trace_fx` asks ``torch.fx`` for the graph without running the model (no example
  input needed), where the forward can be traced symbolically.

A model that loops over T time steps inside ``forward`` shows each unit module T times:
one node per call.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from dpap.adapters.neurons import family

LAYER, NEURON, PASS, UNKNOWN, OP, INPUT, CONTAINER = "layer", "neuron", "pass", "unknown", "op", "input", "container"

PASS_MODULES = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.dropout._DropoutNd,
    nn.Flatten,
    nn.Identity,
)
"""Modules that keep each channel (or neuron) apart: a unit's spikes go through them to
the next layer, and a dead unit stays silent through them."""

POOL_OPS = ("pool", "dropout", "batch_norm")
"""Names of functions that keep channels apart (``F.max_pool2d``, ``F.dropout``, ...)."""
ALIAS_OPS = {"contiguous", "clone", "detach", "float", "double", "half", "to", "type", "type_as", "getitem"}
RESHAPE_OPS = {"view", "reshape", "flatten", "unflatten", "view_as", "reshape_as", "__getitem__", "squeeze", "unsqueeze"}
"""Reshapes that keep channels apart when they only merge or split the leading (time and
batch) dimensions or flatten the trailing ones (``x.view(N, -1)``): decided by shapes."""

CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def role(module: nn.Module, neurons: tuple = ()) -> str:
    """What a module is in the graph."""
    if family(module, neurons) is not None:
        return NEURON
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        return LAYER
    if isinstance(module, PASS_MODULES) or "Dropout" in type(module).__name__:
        return PASS
    if next(module.children(), None) is None:
        return UNKNOWN
    return CONTAINER


@dataclass
class Node:
    index: int
    kind: str  # a role, or OP / INPUT
    name: str  # the module's path, or the operation's name
    module: Optional[nn.Module] = None
    inputs: list[int] = field(default_factory=list)
    owner: Optional[str] = None
    """Ops: the path of the innermost module (not a plain container) whose forward ran it."""
    shape_in: Optional[tuple] = None
    shape_out: Optional[tuple] = None


@dataclass
class Graph:
    nodes: list[Node]
    how: str  # "run" or "fx"

    def consumers(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {n.index: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                if i >= 0 and n.index not in out[i]:
                    out[i].append(n.index)
        return out


def keeps_channels(name: str, a: Optional[tuple], b: Optional[tuple]) -> bool:
    """Whether an operation keeps each channel apart (see :data:`RESHAPE_OPS`)."""
    short = name.lower()
    if short in ALIAS_OPS or any(p in short for p in POOL_OPS):
        return True
    if short not in RESHAPE_OPS:
        return False
    if a is None or b is None:  # fx: no shapes; a reshape between layers is taken as a flatten
        return short != "__getitem__"
    if a == b:
        return True
    k = 0
    while k < min(len(a), len(b)) and a[len(a) - 1 - k] == b[len(b) - 1 - k]:
        k += 1
    if k >= 1 and (short == "__getitem__" or math.prod(a[: len(a) - k]) == math.prod(b[: len(b) - k])):
        return True  # leading dimensions merged, split or indexed (a time step picked)
    p = 0
    while p < min(len(a), len(b)) and a[p] == b[p]:
        p += 1
    return short != "__getitem__" and p >= 1 and len(b) == p + 1 and b[p] == math.prod(a[p:])  # trailing ones flattened


def _tensors(obj: Any, out: Optional[list] = None) -> list[Tensor]:
    out = [] if out is None else out
    if isinstance(obj, Tensor):
        out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            _tensors(o, out)
    elif isinstance(obj, dict):
        for o in obj.values():
            _tensors(o, out)
    return out


class _Recorder(TorchFunctionMode):
    """Records unit-module calls and the torch operations between them."""

    def __init__(self, model: nn.Module, neurons: tuple):
        super().__init__()
        self.names = {m: n for n, m in model.named_modules()}
        self.roles = {m: role(m, neurons) for m in self.names}
        self.nodes: list[Node] = [Node(0, INPUT, "input")]
        self.producer: dict[int, int] = {}
        self.alive: list[Tensor] = []  # keeps recorded tensors alive, so their ids stay theirs
        self.stack: list[Optional[tuple]] = []
        self.depth = 0

    def source(self, t: Tensor) -> int:
        return self.producer.get(id(t), -1)

    def add(self, kind: str, name: str, module, inputs: list[int], outputs: list[Tensor], owner=None, shape_in=None) -> None:
        node = Node(len(self.nodes), kind, name, module, inputs, owner, shape_in, tuple(outputs[0].shape) if outputs else None)
        self.nodes.append(node)
        for t in outputs:
            self.producer[id(t)] = node.index
            self.alive.append(t)

    def owner(self) -> Optional[str]:
        for frame in reversed(self.stack):
            if frame is not None and frame[0] == "c" and not isinstance(frame[1], CONTAINERS) and self.names.get(frame[1]):
                return self.names[frame[1]]
        return None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.depth == 0:
            outs = _tensors(out)
            if outs:
                ins = _tensors(args) + _tensors(kwargs)
                name = getattr(func, "__name__", str(func))
                self.add(OP, name, None, [self.source(t) for t in ins], outs, self.owner(), tuple(ins[0].shape) if ins else None)
        return out

    def pre(self, module, args, kwargs):
        r = self.roles.get(module, CONTAINER)
        if self.depth > 0:
            self.stack.append(None)
        elif r == CONTAINER:
            self.stack.append(("c", module))
        else:
            ins = _tensors(args) + _tensors(kwargs)
            self.stack.append(("a", module, [self.source(t) for t in ins], tuple(ins[0].shape) if ins else None))
            self.depth += 1

    def post(self, module, args, kwargs, output):
        frame = self.stack.pop() if self.stack else None
        if frame is None or frame[0] == "c":
            return
        self.depth -= 1
        self.add(self.roles[module], self.names[module], module, frame[2], _tensors(output), shape_in=frame[3])


def trace_run(model: nn.Module, example: tuple, neurons: tuple = ()) -> Graph:
    """The graph of one forward pass of ``model`` on ``example`` (``(args, kwargs)``), in
    eval mode and without gradients (the model's mode is restored)."""
    args, kwargs = example
    rec = _Recorder(model, neurons)
    for t in _tensors(args) + _tensors(kwargs):
        rec.producer[id(t)] = 0
    handles = []
    for m in rec.names:
        handles.append(m.register_forward_pre_hook(rec.pre, with_kwargs=True))
        handles.append(m.register_forward_hook(rec.post, with_kwargs=True))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), rec:
            model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return Graph(rec.nodes, "run")


class _Tracer(torch.fx.Tracer):
    def __init__(self, neurons: tuple):
        super().__init__()
        self.neurons = neurons

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return role(m, self.neurons) != CONTAINER


def _op_name(target: Any) -> str:
    if target is operator.getitem:
        return "getitem"
    if isinstance(target, str):
        return target
    return getattr(target, "__name__", str(target))


def trace_fx(model: nn.Module, neurons: tuple = ()) -> Graph:
    """The graph ``torch.fx`` finds symbolically; raises whatever fx raises when the
    forward cannot be traced (a loop over ``x.shape[0]``, a container that reads shapes)."""
    tracer = _Tracer(neurons)
    fx_graph = tracer.trace(model)
    index: dict[Any, int] = {}
    nodes: list[Node] = []
    names = dict(model.named_modules())

    def add(node: Node, fx_node) -> None:
        index[fx_node] = node.index
        nodes.append(node)

    for n in fx_graph.nodes:
        inputs = [index.get(a, -1) for a in n.all_input_nodes]
        i = len(nodes)
        if n.op == "placeholder":
            add(Node(i, INPUT, "input"), n)
        elif n.op == "call_module":
            m = names[n.target]
            add(Node(i, role(m, neurons), n.target, m, inputs), n)
        elif n.op in ("call_function", "call_method"):
            stack = n.meta.get("nn_module_stack") or {}
            owner = None
            for path, _ in reversed(list(stack.values())):
                sub = names.get(path)
                if sub is not None and path and not isinstance(sub, CONTAINERS):
                    owner = path
                    break
            add(Node(i, OP, _op_name(n.target), None, inputs, owner), n)
        elif n.op == "output":
            add(Node(i, OP, "output", None, inputs), n)
        else:  # get_attr: a constant
            add(Node(i, OP, "constant", None, inputs), n)
    return Graph(nodes, "fx")
