"""Spiking neurons of other libraries, recognised without importing them.

A module is a neuron when it is dpap's :class:`~dpap.snn.neurons.LIF`, one of the classes
a user names (``attach(..., neurons=(MyLIF,))``), or when its class derives from snnTorch's
``SpikingNeuron`` (``Leaky``, ``Synaptic``, ``Alpha``, ...) or SpikingJelly's ``BaseNode``
(``LIFNode``, ``IFNode``, ``ParametricLIFNode``, ...). Classes are matched by the name and
package of a base class, so neither library is imported here.

What :mod:`dpap.adapters.observe` needs from a neuron:

* :func:`multi_step`: whether one call runs every time step (input ``[T, N, ...]``:
  SpikingJelly's ``step_mode="m"``, dpap's LIF) or one step (input ``[N, ...]``);
* :func:`spikes`: the spikes in what a call returns (snnTorch returns ``(spk, mem)``
  when ``init_hidden`` is off or ``output=True``: the first item);
* :func:`state_token` and :func:`fresh_state`: whether the neuron's state was reset (or
  replaced) since its last call: a new sequence begins.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

import torch
from torch import Tensor, nn

from dpap.snn.neurons import LIF

SNNTORCH = "snntorch"
SPIKINGJELLY = "spikingjelly"
DPAP = "dpap"
CUSTOM = "custom"

_BASES = {("snntorch", "SpikingNeuron"): SNNTORCH, ("spikingjelly", "BaseNode"): SPIKINGJELLY}


def family(module: nn.Module, extra: tuple = ()) -> Optional[str]:
    """Which kind of spiking neuron ``module`` is (None: none dpap knows)."""
    if isinstance(module, LIF):
        return DPAP
    if extra and isinstance(module, extra):
        return CUSTOM
    for cls in type(module).__mro__:
        kind = _BASES.get((cls.__module__.split(".")[0], cls.__name__))
        if kind is not None:
            return kind
    return None


def multi_step(module: nn.Module, kind: str) -> bool:
    """One call runs all time steps (input ``[T, N, ...]``)."""
    if kind == DPAP:
        return True
    if kind == SNNTORCH:
        return False
    return getattr(module, "step_mode", "s") == "m"


def spikes(output: Any) -> Optional[Tensor]:
    """The spike tensor in a neuron's output (the first item of a tuple)."""
    while isinstance(output, (tuple, list)) and output:
        output = output[0]
    return output if isinstance(output, Tensor) else None


def _state(module: nn.Module, kind: str) -> Iterable[Any]:
    if kind == SPIKINGJELLY or hasattr(module, "_memories"):
        yield from getattr(module, "_memories", {}).values()
    if kind in (SNNTORCH, CUSTOM):
        yield from module._buffers.values()


def state_token(module: nn.Module, kind: str) -> tuple:
    """What the neuron's state is now: the identity and version of each state tensor, the
    value of each scalar state (SpikingJelly holds ``v = 0.`` right after a reset)."""
    if kind == DPAP:
        return ()
    out = []
    for s in _state(module, kind):
        out.append((id(s), s._version) if isinstance(s, Tensor) else ("value", repr(s)))
    return tuple(out)


def fresh_state(module: nn.Module, kind: str, args: tuple, kwargs: dict, last: Optional[tuple]) -> bool:
    """Whether this call starts a new sequence: the state differs from what the last call
    left (a reset, ``init_leaky()``, ``reset_net``), or the caller passes a state tensor that
    is not the neuron's own (snnTorch with ``init_hidden=False`` and a fresh ``mem``)."""
    if last is None or state_token(module, kind) != last:
        return True
    if kind == SNNTORCH:
        own = [b for b in module._buffers.values() if isinstance(b, Tensor)]
        passed = [a for a in list(args[1:]) + list(kwargs.values()) if isinstance(a, Tensor)]
        return any(not any(p is b for b in own) for p in passed)
    return False


def reset_states(model: nn.Module, extra: tuple = ()) -> None:
    """Reset every known neuron's state (after a trace, in a compacted copy): snnTorch's
    ``reset_mem()``, SpikingJelly's ``reset()``; a deep copy's snnTorch neurons join their
    class's ``instances`` so that ``snntorch.utils.reset`` reaches them too."""
    for m in model.modules():
        kind = family(m, extra)
        if kind == SNNTORCH:
            instances = getattr(type(m), "instances", None)
            if isinstance(instances, list) and not any(i is m for i in instances):
                instances.append(m)
            if hasattr(m, "reset_mem"):
                with torch.no_grad():
                    m.reset_mem()
        elif kind in (SPIKINGJELLY, CUSTOM) and hasattr(m, "reset"):
            m.reset()
