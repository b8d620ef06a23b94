"""Pruned weights kept exactly 0 in a model trained by any loop and any optimizer.

:class:`MaskKeeper` holds a :class:`~dpap.pruning.mechanics.Pruner`'s masks in buffers of
each prunable layer (``dpap_units`` ``[units]`` and ``dpap_synapses`` ``[units, inputs]``,
bool), so ``model.state_dict()`` carries them and ``model.load_state_dict`` restores them
(a state dict without them, e.g. saved before ``attach``, keeps the current masks), and
keeps the weights to them with hooks, so the training loop calls nothing:

* gradient hooks on the weights, biases and BatchNorm terms zero the gradients of pruned
  entries during backward (what gradient clipping and the optimizer then see), but a
  weight's for a method that reads them (``needs_dead_gradients``: DPAP's regrowth), which
  ``mask_gradients`` zeroes before the step;
* every ``step()`` of an optimizer that holds the model's parameters runs the mechanics'
  ``mask_gradients`` before it and ``apply_masks`` after it (PyTorch's global optimizer
  hooks), and the first step after the masks changed zeroes the optimizer's state of
  pruned entries (Adam's moments), which then stays at rest;
* a forward pre-hook on each layer masks weights changed outside an optimizer (their
  tensor version moved: ``load_state_dict``, a hand-written update) and follows the model
  to another device, so no forward pass sees a pruned weight.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from dpap.pruning.mechanics import Pruner

UNITS, SYNAPSES = "dpap_units", "dpap_synapses"


def unit_params(block) -> list[Tensor]:
    """A block's parameters that belong to its units: weight, bias, BatchNorm affine terms."""
    out = [block.synapse.weight]
    if block.synapse.bias is not None:
        out.append(block.synapse.bias)
    if block.norm is not None and getattr(block.norm, "affine", False):
        out += [block.norm.weight, block.norm.bias]
    return out


def weak_hook(obj: Any, name: str) -> Callable:
    """A hook calling ``obj.<name>`` that does not keep ``obj`` alive (None once it is gone)."""
    ref = weakref.ref(obj)

    def hook(*args):
        target = ref()
        return getattr(target, name)(*args) if target is not None else None

    return hook


class MaskKeeper:
    """The masks of ``pruner`` in its blocks' buffers, applied to their weights by hooks."""

    def __init__(self, pruner: Pruner, blocks: Sequence, on_backward: Optional[Callable[[], None]] = None):
        self.pruner = pruner
        self.blocks = list(blocks)
        self.on_backward = on_backward
        self.handles: list = []
        self._versions: dict[Tensor, int] = {}
        self._masked: list[tuple[Tensor, Tensor]] = []
        self._grad_masks: dict[int, Tensor] = {}
        self._generation = 0
        self._seen: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
        self._signature: Optional[tuple] = None
        self._params = {id(p) for b in self.blocks for p in unit_params(b)}
        self._weights = {id(b.synapse.weight) for b in self.blocks}
        for i, b in enumerate(self.blocks):
            mod = b.synapse
            mod.register_buffer(UNITS, pruner.units[i])
            mod.register_buffer(SYNAPSES, pruner.synapses[i])
            self.handles.append(mod.register_load_state_dict_pre_hook(_keep_masks_if_missing))
            self.handles.append(mod.register_forward_pre_hook(weak_hook(self, "_before_forward")))
            for p in unit_params(b):
                if p.requires_grad:
                    self.handles.append(p.register_hook(_grad_hook(self, p)))
        self.handles.append(register_optimizer_step_pre_hook(weak_hook(self, "_step_before")))
        self.handles.append(register_optimizer_step_post_hook(weak_hook(self, "_step_after")))
        self.sync()

    def remove(self) -> None:
        """Hooks and mask buffers off the model (the weights pruned so far stay 0)."""
        for h in self.handles:
            h.remove()
        self.handles = []
        for b in self.blocks:
            for key in (UNITS, SYNAPSES):
                b.synapse._buffers.pop(key, None)

    # ----------------------------------------------------------------- hooks

    def _grad(self, p: Tensor, g: Tensor) -> Optional[Tensor]:
        if self.on_backward is not None:
            self.on_backward()
        if id(p) in self._weights and self.pruner.method.needs_dead_gradients:
            return None  # the method reads pruned weights' gradients; mask_gradients zeroes them before the step
        m = self._grad_masks.get(id(p))
        return None if m is None else g * m

    def _holds_mine(self, optimizer) -> bool:
        n = sum(len(g["params"]) for g in optimizer.param_groups)
        cached = self._seen.get(optimizer)
        if cached is None or cached[0] != n:
            cached = (n, any(id(p) in self._params for g in optimizer.param_groups for p in g["params"]), -1)
            self._seen[optimizer] = cached
        return cached[1]

    def _step_before(self, optimizer, args, kwargs) -> None:
        if self._holds_mine(optimizer):
            self.sync()
            with torch.no_grad():
                self.pruner.mask_gradients()

    @torch.no_grad()
    def _step_after(self, optimizer, args, kwargs) -> None:
        if not self._holds_mine(optimizer):
            return
        self.sync()
        self.pruner.apply_masks()
        self._record_versions()
        n, mine, generation = self._seen[optimizer]
        if generation != self._generation and self.pruner.method.masks_every_step:
            for p, m in self._masked:  # the optimizer's state of pruned entries to rest
                for v in optimizer.state.get(p, {}).values():
                    if isinstance(v, Tensor) and v.shape == p.shape:
                        v.mul_(m)
            self._seen[optimizer] = (n, mine, self._generation)

    def _before_forward(self, module, args) -> None:
        self.sync()
        if self.pruner.method.masks_every_step:
            with torch.no_grad():
                for p, m in self._masked:
                    if self._versions.get(p) != p._version:
                        p.mul_(m)
                        self._versions[p] = p._version

    def _record_versions(self) -> None:
        self._versions = {p: p._version for p, _ in self._masked}

    # ----------------------------------------------------------------- masks

    def sync(self) -> None:
        """Keep the pruner's masks and the layers' mask buffers one and the same tensors
        (after ``model.to(...)``, ``model.load_state_dict(...)``); rebuild and apply what is
        masked when they changed."""
        p = self.pruner
        device = self.blocks[0].synapse.weight.device
        if device != p.device:
            p.to(device)
        for i, b in enumerate(self.blocks):
            bufs = b.synapse._buffers
            for key, masks in ((UNITS, p.units), (SYNAPSES, p.synapses)):
                buf = bufs.get(key)
                if buf is None or buf.shape != masks[i].shape:
                    bufs[key] = masks[i]
                elif buf is not masks[i]:
                    if buf.device != masks[i].device:
                        bufs[key] = buf = buf.to(masks[i].device)
                    masks[i] = buf
        sig = tuple((id(t), t._version) for b in self.blocks for t in (b.synapse._buffers[UNITS], b.synapse._buffers[SYNAPSES]))
        if sig == self._signature:
            return
        p.refresh_masks()
        self._masked = self._collect()
        self._grad_masks = {id(t): m for t, m in self._masked} if p.method.masks_every_step else {}
        if p.method.masks_every_step:
            with torch.no_grad():
                for t, m in self._masked:
                    t.mul_(m)
        self._record_versions()
        self._generation += 1
        self._signature = sig

    def load(self) -> None:
        """After ``pruner.load_state_dict`` (which replaces its mask tensors): into the buffers."""
        for i, b in enumerate(self.blocks):
            for key, masks in ((UNITS, self.pruner.units), (SYNAPSES, self.pruner.synapses)):
                buf = b.synapse._buffers[key]
                buf.copy_(masks[i].to(buf.device))
                masks[i] = buf
        self.sync()

    def _collect(self) -> list[tuple[Tensor, Tensor]]:
        """(parameter, float mask) of every parameter with a pruned entry: the weights of
        dead synapses and, for a method that silences units, a dead unit's bias and
        BatchNorm affine terms (the mechanics' own rule)."""
        p = self.pruner
        out = []
        for i, b in enumerate(self.blocks):
            w = b.synapse.weight
            if bool(p.synapse_mask(i).all()):
                continue
            out.append((w, p.weight_mask(i).to(w.dtype).contiguous()))
            units = p.unit_mask(i)
            if bool(units.all()) or not p.method.silence_units:
                continue
            u = units.to(device=w.device, dtype=w.dtype)
            out += [(t, u) for t in unit_params(b)[1:]]
        return out


def _grad_hook(keeper: MaskKeeper, p: Tensor) -> Callable:
    ref = weakref.ref(keeper)
    return lambda g: ref()._grad(p, g) if ref() is not None else None


def _keep_masks_if_missing(module, state_dict, prefix, *args) -> None:
    """A state dict without mask buffers (saved before attach) loads; the masks stay."""
    for key in (UNITS, SYNAPSES):
        buf = module._buffers.get(key)
        if buf is not None and prefix + key not in state_dict:
            state_dict[prefix + key] = buf.clone()
