"""What a training run records and the errors that stop it: per-epoch metrics, the data
splits as tensors, the callback protocol, and the checks on a history (divergence, a
network at chance level, the convergence epoch)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional, Protocol, Sequence

from torch import Tensor

from dpap.errors import RunError

class DivergedError(RunError, RuntimeError):
    """The loss became NaN or infinite."""


class NotLearningError(DivergedError):
    """Accuracy stayed at chance level for ``train.stall_epochs`` epochs."""


def at_chance(history: Sequence["EpochMetrics"], num_classes: int, window: int) -> bool:
    """Whether the last ``window`` epochs all had train and test accuracy at most 1.5× the
    chance level 1 / ``num_classes`` (False for ``window`` 0 or a shorter history)."""
    if window <= 0 or len(history) < window:
        return False
    limit = 1.5 / max(num_classes, 1)
    return all(m.train_accuracy <= limit and m.test_accuracy <= limit for m in history[-window:])


@dataclass
class Split:
    """Samples and labels of one split, as tensors (``x`` float32, ``y`` int64)."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class EpochMetrics:
    epoch: int
    train_loss: float
    train_accuracy: float
    test_accuracy: float
    val_accuracy: Optional[float]
    compression: float
    params_retained: int
    zero_weight_share: float
    lr: float
    seconds: float
    layers: list[dict] = field(default_factory=list)

    def flat(self) -> dict[str, float]:
        """Scalar metrics, per-layer ones named ``layer{i}_<what>``."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("layers", "epoch") and v is not None}
        for layer in self.layers:
            i = layer["index"]
            out[f"layer{i}_compression"] = layer["compression"]
            out[f"layer{i}_synapses_pruned"] = 1.0 - layer["synapses_alive"] / layer["synapses"]
            out[f"layer{i}_units_alive"] = layer["units_alive"]
        return out


class Callback(Protocol):
    def __call__(self, run: "TrainingRun", metrics: EpochMetrics) -> None: ...


def convergence_epoch(history: Sequence[EpochMetrics], baseline_accuracy: Optional[float]) -> Optional[int]:
    """First epoch (1-based) whose test accuracy reaches ``baseline_accuracy``."""
    if baseline_accuracy is None:
        return None
    for m in history:
        if m.test_accuracy >= baseline_accuracy:
            return m.epoch + 1
    return None
