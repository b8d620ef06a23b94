"""``dpap.attach``: any registered pruning method on any spiking model, with the user's loop.

>>> pruner = dpap.attach(model, method="dpap", epsilon=1.2)
>>> for epoch in range(epochs):
...     for x, y in loader:
...         ...; loss.backward(); optimizer.step()     # the user's loop, unchanged
...     pruner.end_epoch()
>>> pruner.compression

How it works, with no call in the loop:

* the prunable layers come from the model's graph (:mod:`dpap.adapters.trace`,
  :mod:`dpap.adapters.graph`): ``torch.fx``'s, or one forward pass on ``example_input``,
  or, where fx cannot trace the model and no example is given, its first call; a
  :class:`~dpap.pruning.mechanics.Pruner` runs the method on a
  :class:`~dpap.adapters.view.ModelView` of them (dpap's own :class:`SpikingNetwork`
  is used as it is); spikes reach the method through forward hooks
  (:class:`~dpap.adapters.view.Observer`);
* the masks live in buffers of each prunable layer, so ``model.state_dict()`` carries
  them, and hooks keep pruned weights exactly 0 through any optimizer
  (:class:`~dpap.adapters.masks.MaskKeeper`).
"""

from __future__ import annotations

import weakref
from typing import Any, Optional, Sequence

from torch import Tensor, nn

from dpap.adapters.errors import AttachError
from dpap.adapters.graph import find_blocks
from dpap.adapters.masks import MaskKeeper, weak_hook
from dpap.adapters.neurons import reset_states
from dpap.adapters.trace import trace_fx, trace_run
from dpap.adapters.view import ModelView, Observer
from dpap.errors import ConfigError
from dpap.pruning.compression import CompressionReport, count_parameters
from dpap.pruning.mechanics import LayerReport, Pruner
from dpap.pruning.registry import METHODS, make_method, method_spec
from dpap.schema import validate
from dpap.snn.networks import SpikingNetwork

_ATTACHED: dict[int, weakref.ref] = {}


def pruner_of(model: nn.Module) -> Optional["AttachedPruner"]:
    """The pruner attached to ``model`` (None when there is none)."""
    ref = _ATTACHED.get(id(model))
    pruner = ref() if ref is not None else None
    return pruner if pruner is not None and pruner.model is model else None


def _settings(method: str, settings: Any, knobs: dict) -> Any:
    if not isinstance(method, str) or method not in METHODS:
        raise AttachError(f"attach: method: got {method!r}, expected one of {', '.join(repr(n) for n in METHODS)}")
    spec = method_spec(method)
    if isinstance(settings, dict):  # the same as keywords
        settings, knobs = None, _merged(settings, knobs)
    if settings is not None and not isinstance(settings, spec.config):
        raise AttachError(f"attach: settings is a {type(settings).__name__}, method {method!r} takes a {spec.config.__name__} "
                          f"or a dict of its fields (or pass the fields as keywords)")
    if not knobs:
        return settings
    base = settings.model_dump(exclude_unset=True) if settings is not None else {}
    return validate(spec.config, _merged(base, knobs), prefix=f"attach: {method}")


def _merged(base: dict, over: dict) -> dict:
    """``base`` with ``over``'s keys set, nested dicts merged key by key (``conv={"epsilon":
    1.0}`` over ``{"conv": {"beta": 3.0}}`` keeps β 3)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _example(example_input: Any) -> Optional[tuple]:
    if example_input is None:
        return None
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    return args, {}


class AttachedPruner:
    """A pruning method attached to a model (made by :func:`attach`).

    ``end_epoch()`` once per epoch; ``compression`` (share of the prunable layers'
    parameters pruned, 0..1), ``report()``, ``masks()``, ``layers`` (names of the pruned
    layers, in order), ``dense`` (conv/linear layers left dense), ``epoch`` (epochs ended),
    ``state_dict()``/``load_state_dict()`` (the method's state, to resume), ``detach()``.
    The mechanics' :class:`~dpap.pruning.mechanics.Pruner` is ``.pruner``."""

    def __init__(self, model: nn.Module, method: str, settings: Any, epochs: Optional[int], example: Optional[tuple],
                 neurons: tuple, ignore: tuple):
        if pruner_of(model) is not None:
            raise AttachError(f"attach: a pruner is already attached to this {type(model).__name__}; call its detach() first")
        self.model = model
        self.neurons, self.ignore, self.example = neurons, ignore, example
        self.epoch = 0
        self.pruner: Optional[Pruner] = None
        self.observer: Optional[Observer] = None
        self.layers: list[str] = []
        self.dense: list[str] = []
        self.blocks: list = []
        try:
            self._method = make_method(method, settings, epochs)
        except ConfigError as e:  # a setting the run's length decides (end_fraction): name it as attach's
            raise AttachError(f"attach: {method}.{e}") from None
        self.keeper: Optional[MaskKeeper] = None
        self._handles: list = []
        self._tracing = False
        if isinstance(model, SpikingNetwork):
            self._setup(model, [f"blocks.{i}.synapse" for i in range(len(model.blocks))])
        elif example is not None:
            self._from_graph(trace_run(model, example, neurons))
        else:
            try:
                graph = trace_fx(model, neurons)
            except Exception:  # fx raises TraceError, TypeError, ... for a forward it cannot follow symbolically
                graph = None  # then the first forward pass shows the graph (_first_forward)
            if graph is not None:
                self._from_graph(graph)
            else:
                self._handles.append(model.register_forward_pre_hook(weak_hook(self, "_first_forward"), with_kwargs=True))
        _ATTACHED[id(model)] = weakref.ref(self)

    @property
    def ready(self) -> bool:
        """The prunable layers are known: at attach when ``torch.fx`` traces the model or an
        example input was given, else from the model's first forward pass."""
        return self.pruner is not None

    def _from_graph(self, graph) -> None:
        reset_states(self.model, self.neurons)
        found, self.dense = find_blocks(self.model, graph, self.neurons, self.ignore)
        self._setup(ModelView(self.model, found), [f.name for f in found])

    def _setup(self, net: Any, layers: list[str]) -> None:
        self.net, self.layers = net, layers
        self.blocks = list(net.blocks)
        self.pruner = Pruner(net, self._method)
        if isinstance(net, ModelView):
            self.observer = Observer(net, self.neurons)
        self.keeper = MaskKeeper(self.pruner, self.blocks, self.observer.saw_backward if self.observer else None)
        if self.example is None:
            self._handles.append(self.model.register_forward_pre_hook(weak_hook(self, "_keep_example"), with_kwargs=True))

    def _first_forward(self, module, args, kwargs) -> None:
        """torch.fx could not trace the model: its first call shows the graph."""
        if self.ready or self._tracing:
            return
        self._tracing = True
        try:
            graph = trace_run(self.model, (args, kwargs), self.neurons)
        finally:
            self._tracing = False
        self._keep_example(module, args, kwargs)
        self._from_graph(graph)

    def _keep_example(self, module, args, kwargs) -> None:
        """The first batch the model sees: what ``dpap.compact`` traces by default."""
        if self.example is None:
            detach = lambda v: v.detach() if isinstance(v, Tensor) else v  # noqa: E731
            self.example = (tuple(detach(a) for a in args), {k: detach(v) for k, v in kwargs.items()})

    def _sync(self) -> None:
        if self.keeper is not None:
            self.keeper.sync()

    # ------------------------------------------------------------------ the API

    def flush(self) -> None:
        """Hand the batch being recorded to the method now (end_epoch does)."""
        if self.observer is not None:
            self.observer.flush()

    def end_epoch(self, epoch: Optional[int] = None) -> list[LayerReport]:
        """The method decides for the epoch just trained (epochs counted here, from 0);
        masks are applied at once. Returns one report per pruned layer. ``epoch``, if
        given, must be that count (a check that no call was missed or doubled)."""
        if epoch is not None and epoch != self.epoch:
            raise AttachError(f"attach: end_epoch({epoch}), but this pruner has ended {self.epoch} epochs, so this is epoch {self.epoch}; "
                              "call end_epoch() exactly once per epoch (the epoch argument can be left out)")
        if not self.ready:  # the model never ran
            self.epoch += 1
            return []
        self._sync()
        self.flush()
        reports = self.pruner.end_epoch(self.epoch)
        self.epoch += 1
        self._sync()
        return reports

    def report(self) -> CompressionReport:
        """Parameters of the pruned layers (their BatchNorm included): dense, retained, per layer."""
        if not self.ready:
            raise AttachError("attach: the model has not run yet, so its layers are not known (torch.fx could not trace it); "
                              "run a batch first, or pass example_input= to attach")
        self._sync()
        n = len(self.blocks)
        p = self.pruner
        return count_parameters(self.net, [p.unit_mask(i) for i in range(n)], [p.synapse_mask(i) for i in range(n)])

    @property
    def compression(self) -> float:
        """Share of the prunable layers' parameters pruned, 0..1."""
        return self.report().compression if self.ready else 0.0

    def masks(self) -> dict[str, dict[str, Tensor]]:
        """Per pruned layer: ``units`` (bool ``[units]``) and ``synapses`` (bool
        ``[units, inputs]``, dead units and dead inputs folded in), copies taken now: they
        do not change at later deaths, and changing them changes nothing."""
        if not self.ready:
            return {}
        self._sync()
        # copies: the pruner's own unit masks change in place at the next death
        return {name: {"units": self.pruner.unit_mask(i).to("cpu", copy=True), "synapses": self.pruner.synapse_mask(i).to("cpu", copy=True)}
                for i, name in enumerate(self.layers)}

    def state_dict(self) -> dict:
        """The method's state and the epoch count (the masks are in ``model.state_dict()`` too)."""
        self.flush()
        return {"epoch": self.epoch, "layers": list(self.layers), "pruner": self.pruner.state_dict() if self.ready else None}

    def load_state_dict(self, state: dict) -> None:
        if not self.ready and state.get("pruner") is not None:
            raise AttachError("attach: the model has not run yet, so its layers are not known; run a batch (or pass "
                              "example_input= to attach) before loading a pruner state")
        if state.get("pruner") is None:
            self.epoch = int(state["epoch"])
            return
        if state.get("layers", self.layers) != self.layers:
            raise AttachError(f"attach: this pruner state is for layers {state.get('layers')}, the model has {self.layers}")
        self._sync()
        self.pruner.load_state_dict(state["pruner"])
        self.keeper.load()
        self.epoch = int(state["epoch"])

    def detach(self) -> None:
        """Stop pruning: hooks and mask buffers removed (weights pruned so far stay 0)."""
        if self.observer is not None:
            self.observer.remove()
        if self.pruner is not None:
            self.pruner.detach()
        if self.keeper is not None:
            self.keeper.remove()
        for h in self._handles:
            h.remove()
        self._handles = []
        if pruner_of(self.model) is self:
            _ATTACHED.pop(id(self.model), None)

    def __del__(self) -> None:  # the user let go of the pruner: nothing may keep pruning behind their back
        try:
            self.detach()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def __repr__(self) -> str:
        mode = getattr(self._method, "conv_mode", None)  # DPAP: how its conv layers are pruned
        has_conv = self.ready and any(getattr(b, "layer_type", None) == "conv" for b in self.blocks)
        extra = f", conv_mode={mode}" if mode is not None and has_conv else ""
        return f"AttachedPruner({self._method.name}, layers={self.layers}{extra}, epoch={self.epoch})"


def attach(model: nn.Module, method: str = "dpap", *, settings: Any = None, epochs: Optional[int] = None,
           example_input: Any = None, neurons: Sequence[type] = (), ignore: Sequence[str] = (), **knobs: Any) -> AttachedPruner:
    """Attach pruning method ``method`` (any registered name) to ``model`` and return the
    :class:`AttachedPruner`; the user's training loop stays as it is, plus
    ``pruner.end_epoch()`` after each epoch.

    ``settings``: the method's config model (``DPAPConfig(...)``) or a dict of its fields; keywords override its
    fields (``epsilon=1.2``). ``epochs``: the run's length, for methods that schedule by it
    (None: a run of unknown length, which DPAP's ``end_fraction`` below 1 and GMP's ``end_epoch``
    null need to know: an :class:`AttachError` says so). ``example_input``: one batch as the model takes it (a tuple for
    several arguments): the layers are then found from one forward pass on it; without it
    ``torch.fx`` finds them, and where fx cannot trace the forward (a loop over
    ``x.shape[0]``, ...) the model's first call does (``pruner.ready`` tells; errors about
    the model then come from that call). ``neurons``: further neuron classes (their output,
    or its first item, is the spikes). ``ignore``: names of conv/linear layers to leave dense."""
    settings = _settings(method, settings, knobs)
    return AttachedPruner(model, method, settings, epochs, _example(example_input), tuple(neurons), tuple(ignore))
