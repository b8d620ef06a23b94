"""What the rewiring methods share (``gradr``: Grad R; ``deepr``: Deep R): each prunable
layer holds hidden parameters per synapse beside its weight, and a connection is on or off
by their sign. Each method is its own subpackage and says how θ moves and when a connection
switches; this base keeps the per-layer state and walks it."""

from __future__ import annotations

from typing import Iterator

from torch import Tensor

from dpap.pruning.method import PruningMethod


class HiddenParameterMethod(PruningMethod):
    """A method with per-layer hidden state ``layers[i]`` (a dict of tensors, empty for a
    layer it leaves alone)."""

    layers: list[dict[str, Tensor]]

    def _rewired(self, pruner: "Pruner") -> Iterator[tuple[int, Tensor, dict[str, Tensor]]]:  # noqa: F821 - the Pruner that runs it
        """(block index, its weight, its state) of every layer the method rewires."""
        for i, layer in enumerate(self.layers):
            if layer:
                yield i, pruner.net.blocks[i].synapse.weight, layer

    def to(self, device) -> None:
        self.layers = [{k: v.to(device) for k, v in layer.items()} for layer in self.layers]
