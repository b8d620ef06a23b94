"""Random pruning as a method: the cubic schedule of :mod:`dpap.pruning.schedule` with
uniformly random scores, so at each epoch end the same number of synapses (or units) as
GMP's dies, drawn at random among the living ones. The draws come from the method's own
generator (seeded by ``seed``, its state in the checkpoint), so a run repeats and resumes
exactly and the training's random numbers are the same as under any other method."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from dpap.pruning.random.config import RandomConfig
from dpap.pruning.schedule import ScheduledPruning

if TYPE_CHECKING:  # pragma: no cover
    from dpap.pruning.mechanics import Pruner


class RandomMethod(ScheduledPruning):
    """Random pruning on GMP's schedule (``cfg``: ``params.yaml``'s ``pruning.random``)."""

    name = "random"

    def __init__(self, cfg: RandomConfig, epochs):
        super().__init__(cfg, epochs)
        self.generator = torch.Generator().manual_seed(cfg.seed)

    def scores(self, pruner: "Pruner", index: int, what: str) -> Tensor:
        layer = pruner.layers[index]
        shape = (layer.units,) if what == "units" else (layer.units, layer.pre_units)
        return torch.rand(shape, generator=self.generator, dtype=torch.float64).to(pruner.device)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.generator.set_state(state["generator"])
