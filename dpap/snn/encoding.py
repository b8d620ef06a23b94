"""Input encodings: what the network sees at each of its T steps.

- ``direct``: the static image at every step. Returned as is, ``[N, ...]``: the network
  runs its first layer once and feeds that current to the neurons at all T steps.
- ``poisson``: Bernoulli spikes with probability equal to the pixel value (in [0, 1]),
  drawn independently per step, ``[T, N, ...]``.
- ``events``: event frames stored ``[N, T, C, H, W]`` are passed through as they are,
  only made time-major, ``[T, N, C, H, W]``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

ENCODINGS = ("direct", "poisson", "events")


def encode(x: Tensor, encoding: str, time_steps: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """Turn a batch from the data set into network input (see module docstring)."""
    if encoding == "direct":
        return x
    if encoding == "poisson":
        p = x.clamp(0.0, 1.0)
        noise = torch.rand((time_steps, *p.shape), generator=generator, device="cpu" if generator is not None else p.device)
        return (noise.to(p.device) < p.unsqueeze(0)).to(p.dtype)
    if encoding == "events":
        if x.dim() < 3:
            raise ValueError(f"event encoding expects frames [N, T, ...], got {tuple(x.shape)}")
        return x.transpose(0, 1)
    raise ValueError(f"model.encoding: got {encoding!r}, expected one of {', '.join(ENCODINGS)}")
