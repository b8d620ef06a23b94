"""A view of any model that a :class:`~dpap.pruning.mechanics.Pruner` can run on.

The mechanics and the methods ask a network for ``blocks`` (each with ``synapse``,
``norm``, ``layer_type``, ``is_output``, ``in_spatial``, ``units``), ``kind``,
``training``, ``parameters()`` and ``observe(fn)``: :class:`SpikingNetwork` has them, and
so does :class:`ModelView`, built over the prunable layers that
:func:`~dpap.adapters.graph.find_blocks` found. A block may name its ``source``, the block
whose units it reads (None: its inputs are never pruned through a unit, e.g. after a
residual addition).

Observation. A method wants, per block and per training batch, the layer's input and its
neuron's spikes as sequences ``[T, N, ...]``. :class:`Observer` collects them with forward
hooks, whatever the model's order of time steps:

* a single-step neuron (snnTorch, SpikingJelly ``step_mode="s"``) is called once per time
  step: its outputs ``[N, ...]`` are stacked; a multi-step one (``step_mode="m"``, dpap's
  LIF) returns ``[T, N, ...]`` at once;
* a layer's inputs likewise (``[N, ...]`` per step, ``[T, N, ...]``, or SpikingJelly's
  folded ``[T·N, ...]``, unfolded with the neuron's T and N; an input computed once before
  the loop is static ``[N, ...]``).

A sequence ends, and the batch goes to the method (:meth:`Observer.flush`), when a neuron
is called and its state was reset since its last call (snnTorch ``init_leaky()``,
``reset_mem()``, ``utils.reset``; SpikingJelly ``reset_net``), or its caller passes it a
fresh state, or a multi-step neuron is called a second time, or the batch size changed, or
a backward pass ran since the last step, and at ``end_epoch``. Only forward passes in
training mode with gradients enabled are observed.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from dpap.adapters import neurons as nrn
from dpap.adapters.graph import Found


class ViewBlock:
    """One prunable layer with its BatchNorm and neuron, as the mechanics see a block."""

    post: tuple = ()
    flatten = False

    def __init__(self, found: Found):
        self.name = found.name
        self.synapse = found.layer
        self.norm = found.norm
        self.neuron = found.neuron
        self.in_spatial = found.in_spatial
        self.is_output = found.is_output
        self.source = found.source
        self.reads_input = found.reads_input
        self.layer_type = "conv" if isinstance(found.layer, nn.Conv2d) else "fc"

    @property
    def units(self) -> int:
        return self.synapse.weight.shape[0]


class ModelView:
    """The prunable layers of ``model`` in the shape of a :class:`SpikingNetwork`."""

    kind = "snn"

    def __init__(self, model: nn.Module, found: Sequence[Found]):
        self.model = model
        self.blocks = [ViewBlock(f) for f in found]
        self._observers: dict[int, Callable] = {}
        self._next = 0
        self.delivering = False

    @property
    def training(self) -> bool:
        return self.delivering or self.model.training

    def parameters(self):
        return self.model.parameters()

    def observe(self, fn: Callable, training_only: bool = False) -> Callable[[], None]:
        """``fn(index, block, pre, post)`` for every block of every observed batch."""
        handle = self._next
        self._next += 1
        self._observers[handle] = fn
        return lambda: self._observers.pop(handle, None)

    def deliver(self, index: int, pre: Tensor, post: Tensor) -> None:
        for fn in list(self._observers.values()):
            fn(index, self.blocks[index], pre, post)


def _as_sequence(parts: list[Tensor], T: int, N: int, sample_dims: int) -> Optional[Tensor]:
    """A layer's recorded inputs as ``[T, N, ...]`` (or static ``[N, ...]``)."""
    if len(parts) == T and T > 1 and all(p.dim() == sample_dims + 1 for p in parts):
        return torch.stack(parts)
    if len(parts) != 1:
        return None
    p = parts[0]
    if p.dim() == sample_dims + 2:
        return p
    if p.dim() == sample_dims + 1:
        if p.shape[0] == N:
            return p
        if p.shape[0] == T * N:
            return p.reshape(T, N, *p.shape[1:])
    return None


class Observer:
    """Forward hooks that turn a model's calls into one observation per block per batch."""

    def __init__(self, view: ModelView, extra_neurons: tuple = ()):
        self.view = view
        self.model = view.model
        self.extra = extra_neurons
        n = len(view.blocks)
        self.pre: list[list[Tensor]] = [[] for _ in range(n)]
        self.post: list[list[Tensor]] = [[] for _ in range(n)]
        self.staged: list[Optional[Tensor]] = [None] * n
        """A layer's input waits here until its neuron has run: whether it starts a new
        sequence is known only then."""
        self.neurons = {}
        for i, b in enumerate(view.blocks):
            if b.neuron is not None:
                kind = nrn.family(b.neuron, extra_neurons)
                self.neurons[b.neuron] = (i, kind, nrn.multi_step(b.neuron, kind))
        self.layers = {b.synapse: i for i, b in enumerate(view.blocks)}
        self.tokens: dict[nn.Module, Optional[tuple]] = {}
        self.batch: Optional[int] = None
        self.backward_seen = False
        self.handles = []
        for b in view.blocks:
            self.handles.append(b.synapse.register_forward_hook(self._layer))
            if b.neuron is not None:
                self.handles.append(b.neuron.register_forward_pre_hook(self._neuron_pre, with_kwargs=True))
                self.handles.append(b.neuron.register_forward_hook(self._neuron_post, with_kwargs=True))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def _recording(self) -> bool:
        return self.model.training and torch.is_grad_enabled()

    def _layer(self, module, args, output) -> None:
        i = self.layers.get(module)
        if i is None or not self._recording() or not args or not isinstance(args[0], Tensor):
            return
        if self.view.blocks[i].neuron is None:  # a readout: its output stands for its units' activity
            self.pre[i].append(args[0].detach())
            self.post[i].append(output.detach())
        else:
            self.staged[i] = args[0].detach()

    def _neuron_pre(self, module, args, kwargs) -> None:
        entry = self.neurons.get(module)
        if entry is None:
            return
        i, kind, multi = entry
        if not self._recording():
            self.tokens[module] = None  # the next training call starts a sequence
            return
        x = args[0] if args else next((v for v in kwargs.values() if isinstance(v, Tensor)), None)
        if not isinstance(x, Tensor):
            return
        n = x.shape[1] if multi else x.shape[0]
        pending = bool(self.post[i])
        new = self.backward_seen or (self.batch is not None and n != self.batch)
        new = new or (pending and (multi or nrn.fresh_state(module, kind, args, kwargs, self.tokens.get(module))))
        if new:
            self.flush()
        self.backward_seen = False
        self.batch = n

    def _neuron_post(self, module, args, kwargs, output) -> None:
        entry = self.neurons.get(module)
        if entry is None:
            return
        i, kind, _ = entry
        self.tokens[module] = nrn.state_token(module, kind)
        if not self._recording():
            return
        s = nrn.spikes(output)
        if s is not None:
            self.post[i].append(s.detach())
            if self.staged[i] is not None:
                self.pre[i].append(self.staged[i])
                self.staged[i] = None

    def saw_backward(self) -> None:
        self.backward_seen = True

    @torch.no_grad()
    def flush(self) -> None:
        """Hand the recorded sequence of every block to the observers, in block order."""
        if not any(self.post):
            self._clear()
            return
        T = N = None
        self.view.delivering = True
        try:
            for i, block in enumerate(self.view.blocks):
                posts = self.post[i]
                if not posts:
                    continue
                multi = block.neuron is not None and self.neurons[block.neuron][2]
                if block.neuron is None:  # readout: unfold like the inputs, with the last T and N
                    post = _as_sequence(posts, T or 1, N or posts[0].shape[0], 1 if block.layer_type == "fc" else 3)
                    if post is None or post.dim() == (2 if block.layer_type == "fc" else 4):
                        post = None if post is None else post.unsqueeze(0)
                else:
                    post = posts[0] if multi and len(posts) == 1 else torch.stack(posts)
                if post is None:
                    continue
                T, N = post.shape[0], post.shape[1]
                pre = _as_sequence(self.pre[i], T, N, 3 if block.layer_type == "conv" else 1)
                if pre is None:
                    continue
                self.view.deliver(i, pre, post)
        finally:
            self.view.delivering = False
            self._clear()

    def _clear(self) -> None:
        for lst in self.pre + self.post:
            lst.clear()
        self.backward_seen = False
