"""Training state that follows a network through compaction: optimizer moments, pruner
masks and the pruning method's per-unit and per-synapse values.

A :class:`Frame` says, for every block of a larger network, which of its units and input
columns a smaller one keeps (:func:`~dpap.compaction.compact`'s ``kept``). A tensor of
the larger network's block i is cut (larger → smaller) or expanded (smaller → larger,
zeros elsewhere) by its shape in the larger network:

* ``[units, pre_units, ...]`` (a weight, an Adam moment of a weight, a method's
  per-synapse importance or survival value): rows and columns;
* ``[units, ...]`` (a bias, a BN term, a per-unit value): rows;
* anything else (Adam's step count, a protocol name, a counter): as it is, and it must
  have the same shape on both sides.

Every mapped state is checked against a *template* of the target side (the state of a
fresh optimizer or pruner built on the target network), so a tensor cut the wrong way
is an error, not a silent mistake. A pruning method keeps its per-block state in
``state["layers"][i]`` (as :class:`~dpap.pruning.DPAPMethod` does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from dpap.snn.networks import SpikingNetwork
from dpap.compaction.network import CompactionError, input_columns


@dataclass(frozen=True)
class Frame:
    """Per block of the larger network: the kept units (``rows``), the kept input columns
    (``cols``), its ``units`` and ``pre_units``."""

    rows: list[Tensor]
    cols: list[Tensor]
    units: list[int]
    pre_units: list[int]

    @classmethod
    def of(cls, larger: SpikingNetwork, kept: Sequence[Tensor]) -> "Frame":
        blocks = list(larger.blocks)
        rows = [k.cpu().long() for k in kept]
        cols = [input_columns(b, rows[i - 1] if i > 0 else None) for i, b in enumerate(blocks)]
        units = [b.synapse.weight.shape[0] for b in blocks]
        pre = [b.synapse.weight.shape[1] for b in blocks]
        return cls(rows, cols, units, pre)

    def _kind(self, index: int, large_shape: Sequence[int]) -> str:
        if len(large_shape) >= 2 and tuple(large_shape[:2]) == (self.units[index], self.pre_units[index]):
            return "synapse"
        if len(large_shape) >= 1 and large_shape[0] == self.units[index]:
            return "unit"
        return "other"

    def cut(self, index: int, t: Tensor) -> Tensor:
        """Block ``index``'s tensor ``t`` of the larger network, cut to the smaller one."""
        kind = self._kind(index, t.shape)
        if kind == "other":
            return t.clone()
        out = t.index_select(0, self.rows[index].to(t.device))
        if kind == "synapse":
            out = out.index_select(1, self.cols[index].to(t.device))
        return out

    def expand(self, index: int, t: Tensor, like: Tensor, base: Optional[Tensor] = None) -> Tensor:
        """Block ``index``'s tensor ``t`` of the smaller network, put back into zeros
        shaped like ``like`` (the larger network's tensor), or into a copy of ``base``
        (shaped like ``like``: what the removed entries hold)."""
        kind = self._kind(index, like.shape)
        if kind == "other":
            return t.clone()
        if base is not None:
            out = base.to(device=t.device, dtype=t.dtype, copy=True)
        else:
            out = torch.zeros(like.shape, dtype=t.dtype, device=t.device)
        rows = self.rows[index].to(t.device)
        if kind == "synapse":
            out[rows[:, None], self.cols[index].to(t.device)[None, :]] = t
        else:
            out[rows] = t
        return out


def parameter_blocks(net: SpikingNetwork) -> list[int]:
    """The block of each of ``net.parameters()``, in their order (an optimizer's)."""
    owner = {}
    for i, block in enumerate(net.blocks):
        for p in block.parameters():
            owner[id(p)] = i
    out = []
    for p in net.parameters():
        if id(p) not in owner:
            raise CompactionError("a parameter outside the blocks; compaction knows the blocks' parameters only")
        out.append(owner[id(p)])
    return out


def map_optimizer_state(
    state: dict, source: SpikingNetwork, target: SpikingNetwork, frame: Frame, template: dict, direction: str, base: Optional[dict] = None
) -> dict:
    """``state`` (an optimizer's ``state_dict()`` over ``source.parameters()``) for the
    same optimizer over ``target.parameters()``: every per-parameter tensor shaped like
    its parameter cut (``direction="cut"``, source larger) or expanded (``"expand"``;
    the removed entries 0, or those of ``base``, a state over ``target``).
    ``template``: the ``state_dict()`` of a fresh optimizer over ``target``."""
    blocks = parameter_blocks(source)
    src_params = list(source.parameters())
    dst_params = list(target.parameters())
    if len(src_params) != len(dst_params):
        raise CompactionError(f"optimizer state: {len(src_params)} parameters before, {len(dst_params)} after")
    order = [k for group in state["param_groups"] for k in group["params"]]
    if len(order) != len(src_params):
        raise CompactionError(f"optimizer state: {len(order)} parameters, the network has {len(src_params)}")
    position = {k: n for n, k in enumerate(order)}
    new_state = {}
    for k, entry in state["state"].items():
        n = position[k]
        src, dst, i = src_params[n], dst_params[n], blocks[n]
        mapped = {}
        for name, value in entry.items():
            if torch.is_tensor(value) and tuple(value.shape) == tuple(src.shape):
                if direction == "cut":
                    value = frame.cut(i, value)
                else:
                    fill = base["state"].get(k, {}).get(name) if base is not None else None
                    value = frame.expand(i, value, dst, fill)
                if tuple(value.shape) != tuple(dst.shape):
                    raise CompactionError(f"optimizer state {name!r} of parameter {n}: {tuple(value.shape)} after mapping, the parameter is {tuple(dst.shape)}")
            elif torch.is_tensor(value):
                value = value.clone()
            mapped[name] = value
        new_state[k] = mapped
    template_groups = template["param_groups"]
    if [g["params"] for g in template_groups] != [g["params"] for g in state["param_groups"]]:
        raise CompactionError("optimizer state: the parameter groups differ from a fresh optimizer's on the new network")
    return {"state": new_state, "param_groups": [dict(g) for g in state["param_groups"]]}


def map_pruner_state(state: dict, frame: Frame, template: dict, direction: str) -> dict:
    """``state`` (a :class:`~dpap.pruning.Pruner`'s ``state_dict()``) for a pruner on the
    other network; ``template``: the state of a fresh pruner (same method) on it."""
    n = len(frame.rows)
    if len(state["units"]) != n:
        raise CompactionError(f"pruner state: {len(state['units'])} layers, the network {n}")

    def one(i: Optional[int], value: Any, like: Any, where: str) -> Any:
        if isinstance(value, dict):
            if not isinstance(like, dict) or set(value) != set(like):
                raise CompactionError(f"pruner state {where}: keys differ from a fresh pruner's ({sorted(value)} vs {sorted(like) if isinstance(like, dict) else like!r})")
            return {k: one(i, value[k], like[k], f"{where}.{k}") for k in value}
        if isinstance(value, (list, tuple)):
            if not isinstance(like, (list, tuple)) or len(value) != len(like):
                raise CompactionError(f"pruner state {where}: a list of {len(value)}, a fresh pruner's has {len(like) if isinstance(like, (list, tuple)) else like!r}")
            return type(value)(one(i, v, l, f"{where}[{j}]") for j, (v, l) in enumerate(zip(value, like)))
        if not torch.is_tensor(value):
            return value
        if not torch.is_tensor(like):
            raise CompactionError(f"pruner state {where}: a tensor where a fresh pruner has {like!r}")
        if i is None:
            if value.shape != like.shape:
                raise CompactionError(f"pruner state {where}: {tuple(value.shape)} is not per unit or synapse of one layer and differs from {tuple(like.shape)}")
            return value.clone()
        out = frame.cut(i, value) if direction == "cut" else frame.expand(i, value, like)
        if out.shape != like.shape:
            raise CompactionError(f"pruner state {where}: {tuple(out.shape)} after mapping, a fresh pruner's is {tuple(like.shape)}")
        return out.to(like.dtype)

    method_state, method_like = state["state"], template["state"]
    if isinstance(method_state, dict) and isinstance(method_state.get("layers"), (list, tuple)):
        layers = method_state["layers"]
        if len(layers) != n or len(method_like.get("layers", ())) != n:
            raise CompactionError(f"pruner state: the method keeps {len(layers)} layer states for {n} blocks; cannot map them to the blocks")
        rest = {k: v for k, v in method_state.items() if k != "layers"}
        rest_like = {k: v for k, v in method_like.items() if k != "layers"}
        mapped_method = one(None, rest, rest_like, "state")
        mapped_method["layers"] = [one(i, layers[i], method_like["layers"][i], f"state.layers[{i}]") for i in range(n)]
    else:
        mapped_method = one(None, method_state, method_like, "state")
    return {
        **{k: v for k, v in state.items() if k not in ("units", "synapses", "state")},
        "units": [one(i, state["units"][i], template["units"][i], f"units[{i}]") for i in range(n)],
        "synapses": [one(i, state["synapses"][i], template["synapses"][i], f"synapses[{i}]") for i in range(n)],
        "state": mapped_method,
    }
