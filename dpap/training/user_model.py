"""Your own network in the pipeline: ``model.factory`` or ``model.nir`` instead of ``model.arch``.

* :func:`build_user_network` imports the factory (``"package.module:function"``, from the
  repository root or an installed package) and calls it with the keywords it accepts of
  ``input_shape``, ``num_classes`` and ``time_steps``, or reads the NIR graph
  (``dpap.from_nir``), and wraps the model in a :class:`UserNetwork`;
* :class:`UserNetwork` is what the training loop, the model file, the evaluation and the
  export use as they use dpap's :class:`~dpap.snn.networks.SpikingNetwork`: ``blocks``
  (the prunable layers ``dpap.attach`` finds, :class:`~dpap.adapters.view.ViewBlock`),
  ``kind``, ``time_steps``, ``arch`` (the factory string or the NIR path), and a forward
  that takes the encoded batch and returns ``[T, N, classes]``;
* :func:`attach_run_pruner`: the run's pruner, ``dpap.attach``'s attachment (a
  :class:`~dpap.pruning.mechanics.Pruner` on a :class:`~dpap.adapters.view.ModelView`)
  behind the interface the loop, the model file and MLflow read (:class:`RunAttachment`).

The contract (docs/any_network.md, "In the pipeline"): the model takes what
:func:`dpap.snn.encoding.encode` gives (``direct``: the images ``[N, C, H, W]``, the model
runs its own time steps; ``poisson``/``events``: ``[T, N, C, H, W]``) and returns spikes
or logits ``[T, N, classes]``, or ``[N, classes]`` (one step), or a tuple whose first item
is that. Its neurons' states are reset before every batch. What goes wrong is one line
naming the key (:class:`ModelSourceError`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn

import dpap.adapters as adapters
from dpap.adapters.errors import AttachError
from dpap.adapters.graph import find_blocks
from dpap.adapters.neurons import reset_states
from dpap.adapters.trace import trace_run
from dpap.adapters.view import ViewBlock
from dpap.config import Config, ConfigError
from dpap.snn.encoding import encode

MASK_BUFFERS = (".dpap_units", ".dpap_synapses")
"""State-dict keys of the attachment's mask buffers (the model file keeps the masks apart)."""
PROBE_BATCH = 2
"""Samples in the batch of zeros that finds the layers and checks the output's shape."""


class ModelSourceError(ConfigError):
    """``model.factory`` or ``model.nir`` cannot give a network dpap can train and prune."""


def _brief(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _without_attach(message: str) -> str:
    return message.removeprefix("attach: ")


# ---------------------------------------------------------------------- the model


def import_factory(spec: str) -> Callable:
    """The callable that ``model.factory`` names (``"package.module:function"``), imported
    with the current folder (the repository root) on ``sys.path``."""
    module_name, _, attr = spec.strip().partition(":")
    root = os.getcwd()
    if root not in sys.path:
        sys.path.insert(0, root)
    importlib.invalidate_caches()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ModelSourceError(f"model.factory: {spec!r}: no module named {exc.name!r} (looked in {root} and the installed packages); "
                                   f"put {module_name.replace('.', '/')}.py in the repository root or install its package") from None
        raise ModelSourceError(f"model.factory: {spec!r}: importing {module_name} failed: {_brief(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - any error in the user's module
        raise ModelSourceError(f"model.factory: {spec!r}: importing {module_name} failed: {_brief(exc)}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            where = getattr(module, "__file__", None) or module_name
            raise ModelSourceError(f"model.factory: {spec!r}: {module_name} ({where}) has no {attr!r}; name a function that returns the model")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelSourceError(f"model.factory: {spec!r}: {attr} is not callable ({type(obj).__name__} {obj!r:.40}); name a function that returns the model")
    return obj


def call_factory(fn: Callable, spec: str, input_shape: Sequence[int], num_classes: int, time_steps: int) -> nn.Module:
    """``fn`` called with the keywords of ``input_shape``, ``num_classes`` and ``time_steps``
    that it accepts (all of them when it takes ``**kwargs``)."""
    offered = {"input_shape": tuple(int(s) for s in input_shape), "num_classes": int(num_classes), "time_steps": int(time_steps)}
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        params = {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        kwargs = offered
    else:
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        kwargs = {k: v for k, v in offered.items() if k in params and params[k].kind in named}
    try:
        model = fn(**kwargs)
    except Exception as exc:  # noqa: BLE001 - any error of the user's factory
        called = f"({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
        raise ModelSourceError(f"model.factory: {spec!r}: calling it{called} failed: {_brief(exc)}") from None
    if not isinstance(model, nn.Module):
        raise ModelSourceError(f"model.factory: {spec!r}: returned a {type(model).__name__}, expected a torch.nn.Module")
    return model


def read_nir(path: str, time_steps: int, data: Optional[bytes] = None) -> tuple[nn.Module, bytes]:
    """The :class:`~dpap.adapters.nirgraph.NIRNetwork` of the NIR file ``path`` (or of its
    bytes ``data``, as a model file keeps them), and the file's bytes."""
    if data is None:
        p = Path(path)
        if not p.is_file():
            raise ModelSourceError(f"model.nir: {path!r}: no such file (a path relative to the repository root)")
        data = p.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "model.nir"
        copy.write_bytes(data)
        try:
            model = adapters.from_nir(copy, time_steps=time_steps)
        except Exception as exc:  # noqa: BLE001 - h5py, nir and the importer raise many kinds
            raise ModelSourceError(f"model.nir: {path!r}: not a NIR graph snnTorch's importer reads ({_brief(exc)})") from None
    return model, data


class UserNetwork(nn.Module):
    """The user's ``model`` as the training loop, the evaluation and the export see a
    network of dpap's (module docstring). ``source``: ``{"factory": ...}`` or ``{"nir": ...}``."""

    def __init__(self, model: nn.Module, key: str, value: str, input_shape: Sequence[int], num_classes: int, time_steps: int,
                 kind: str, encoding: str, frames: int, reshape: Optional[tuple] = None):
        super().__init__()
        self.model = model
        self.key, self.arch = key, value
        self.source = {key.partition(".")[2]: value}
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = int(num_classes)
        self.time_steps = int(time_steps)
        self.kind = kind
        self.encoding = encoding
        self.frames = int(frames)
        self.reshape = reshape
        """The NIR graph's own input shape where it differs from the data's (same size)."""
        self.nir_data: Optional[bytes] = None
        self.blocks: list[ViewBlock] = []
        self.dense: list[str] = []

    def example_input(self, batch: int = PROBE_BATCH, device: Any = None) -> Tensor:
        """A batch of zeros as the model receives it (encoded)."""
        steps = self.frames if self.encoding == "events" else self.time_steps
        shape = (batch, steps, *self.input_shape) if self.encoding == "events" else (batch, *self.input_shape)
        x = encode(torch.zeros(shape), self.encoding, steps, torch.Generator().manual_seed(0))
        return self.prepare(x.to(device) if device is not None else x)

    def prepare(self, x: Tensor) -> Tensor:
        if self.reshape is None:
            return x
        return x.reshape(*x.shape[: x.dim() - len(self.input_shape)], *self.reshape)

    def raw(self, x: Tensor) -> Any:
        """The model's output for the encoded batch ``x`` (the first item of a tuple),
        from fresh neuron states. A batch of images under ``poisson`` (as MLflow's logged
        model is called) is encoded first."""
        if self.encoding == "poisson" and x.dim() == len(self.input_shape) + 1:
            x = encode(x, "poisson", self.time_steps)
        reset_states(self.model)  # every batch starts from fresh neuron states
        out = self.model(self.prepare(x))
        while isinstance(out, (tuple, list)) and out:
            out = out[0]
        return out

    def forward(self, x: Tensor, fuse_pooling: bool = False) -> Tensor:  # fuse_pooling: dpap's own networks only
        """``[T, N, classes]``: the model's output, one step where it has no time axis."""
        out = self.raw(x)
        return out.unsqueeze(0) if isinstance(out, Tensor) and out.dim() == 2 else out

    def find_layers(self) -> None:
        """The prunable layers (:attr:`blocks`) from one forward pass on :meth:`example_input`,
        and a check of the output's shape."""
        example = self.example_input()
        where = f"{self.key}: {self.arch!r}"
        try:
            reset_states(self.model)
            graph = trace_run(self.model, ((example,), {}))
            found, self.dense = find_blocks(self.model, graph)
        except AttachError as exc:
            raise ModelSourceError(f"{where}: {_without_attach(str(exc))}") from None
        except Exception as exc:  # noqa: BLE001 - the user's forward
            raise ModelSourceError(f"{where}: the model fails on a batch shaped as the data's {list(example.shape)}: {_brief(exc)}") from None
        self.blocks = [ViewBlock(f) for f in found]
        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                out = self.raw(example)
        finally:
            self.train(was)
        n, classes = PROBE_BATCH, self.num_classes
        shaped = isinstance(out, Tensor) and ((out.dim() == 3 and out.shape[1:] == (n, classes)) or (out.dim() == 2 and out.shape == (n, classes)))
        if not shaped:
            got = list(out.shape) if isinstance(out, Tensor) else f"a {type(out).__name__}"
            raise ModelSourceError(f"{where}: the model returns {got} for a batch of {n}; expected [T, {n}, {self.num_classes}] "
                                   f"(spikes or logits per time step) or [{n}, {self.num_classes}]")


def build_user_network(cfg: Config, input_shape: Sequence[int], num_classes: int, nir_data: Optional[bytes] = None) -> UserNetwork:
    """The network that ``cfg.model.factory`` or ``cfg.model.nir`` names, its prunable layers
    found (``nir_data``: the NIR file's bytes, as a model file keeps them)."""
    key, value = cfg.model.own_network
    m = cfg.model
    reshape = None
    if key == "model.factory":
        model = call_factory(import_factory(value), value, input_shape, num_classes, m.time_steps)
    else:
        model, nir_data = read_nir(value, m.time_steps, nir_data)
        own = tuple(getattr(model, "input_shape", ()))
        if own != tuple(input_shape):
            if not own or math.prod(own) != math.prod(input_shape):
                raise ModelSourceError(f"model.nir: {value!r}: the graph takes input {list(own)}, the data set {cfg.data.name} gives {list(input_shape)}")
            reshape = own
    net = UserNetwork(model, key, value, input_shape, num_classes, m.time_steps, m.kind, m.encoding, cfg.data.time_bins, reshape)
    net.nir_data = nir_data
    net.find_layers()
    return net


def source_digest(cfg: Config) -> str:
    """sha256 of the file that defines the user's network: the factory's module file (not
    the modules it imports) or the NIR file; "" when it cannot be found."""
    key, value = cfg.model.own_network
    path: Optional[str] = value
    if key == "model.factory":
        module_name = value.strip().partition(":")[0]
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            spec = importlib.util.find_spec(module_name)
        except (ImportError, ValueError):
            spec = None
        path = spec.origin if spec is not None else None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] if path else ""
    except OSError:
        return ""


def is_user_network(net: Any) -> bool:
    return isinstance(net, UserNetwork)


# ---------------------------------------------------------------------- the pruner


class RunAttachment:
    """``dpap.attach``'s pruner as the training loop, the model file and MLflow use a
    :class:`~dpap.pruning.mechanics.Pruner`: every attribute is the mechanics' pruner's
    (masks, ``method``, ``layers``, ``last_reports``, ``reduce``), but ``end_epoch`` hands
    the batch being observed to the method first, ``state_dict`` holds the attachment's
    state, and ``mask_gradients``/``apply_masks`` do nothing: the attachment's hooks run
    them around every optimizer step (once: a method's ``after_step`` must not run twice)."""

    def __init__(self, attached):
        object.__setattr__(self, "attached", attached)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.attached.pruner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.attached.pruner, name, value)

    def mask_gradients(self) -> None:
        pass

    def apply_masks(self) -> None:
        pass

    def end_epoch(self, epoch: int):
        self.attached.epoch = epoch
        return self.attached.end_epoch()

    def state_dict(self) -> dict:
        return self.attached.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.attached.load_state_dict(state)

    def detach(self) -> None:
        """Hooks and mask buffers off the model (the weights pruned so far stay 0; the masks
        stay readable here)."""
        self.attached.detach()


def attach_run_pruner(net: UserNetwork, cfg: Config) -> RunAttachment:
    """The pruner of ``cfg.pruning`` attached to the user's model (``dpap.attach``, the run's
    epochs for a method's schedule); ``net.blocks`` become the attachment's."""
    device = next(net.parameters()).device
    try:
        attached = adapters.attach(net.model, cfg.pruning.method, settings=cfg.pruning.settings, epochs=cfg.train.epochs,
                                   example_input=net.example_input(device=device))
    except AttachError as exc:
        raise ModelSourceError(f"{net.key}: {net.arch!r}: {_without_attach(str(exc))}") from None
    net.blocks = list(attached.blocks)
    return RunAttachment(attached)


def release(pruner: Any) -> None:
    """At the end of training: an attachment's hooks off the model, so that it pickles (the
    MLflow model) and the model file holds its plain state; the masks stay readable."""
    if isinstance(pruner, RunAttachment):
        pruner.detach()


def plain_state(net: nn.Module) -> dict[str, Tensor]:
    """``net.state_dict()`` on the CPU, without an attachment's mask buffers."""
    return {k: v.detach().cpu() for k, v in net.state_dict().items() if not k.endswith(MASK_BUFFERS)}
