"""Data-parallel training with ``torch.distributed`` (gloo on CPU, NCCL on GPU).

``torchrun --nproc-per-node N pipeline/train.py`` starts N processes; each takes its
share of every global batch (``train.batch_size`` stays the *global* batch: the same
batches, in the same order, as one process), the gradients are averaged over all
samples before every optimizer step, and the pruner's per-batch statistics (DPAP's θ)
and per-epoch sums (importance, post-synaptic traces) are all-reduced before they are
used, so every rank holds the same weights and masks as the others, and the same as a
single process up to the order of float sums. Only rank 0 writes checkpoints, MLflow and
outputs.

Not synchronised: BatchNorm statistics (each rank normalises its own share, as plain DDP
does) and random encodings or dropout (drawn per share); runs with those differ from a
single process by more than float order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Optional

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class Distributed:
    """This process's place in a data-parallel run."""

    rank: int
    world: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Optional["Distributed"]:
        """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1); None for a
        single process. The backend is NCCL when CUDA is there, else gloo."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group(backend)
        return cls(dist.get_rank(), dist.get_world_size())

    def share(self, n: int) -> slice:
        """This rank's contiguous share of a batch of ``n`` samples (sizes differ by at
        most one; a rank may get none of a very small last batch)."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))

    def all_reduce(self, t: Tensor) -> Tensor:
        """Sum ``t`` over all ranks, in place; returns it."""
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def average_gradients(self, params: Iterable[torch.nn.Parameter], weight: float) -> None:
        """Gradients of the whole batch's mean loss: each rank's gradient (of its share's
        mean loss) times ``weight`` = its share of the batch, summed over ranks, in one
        flat all-reduce."""
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads]) * weight
        self.all_reduce(flat)
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset : offset + n].view_as(g))
            offset += n

    def barrier(self) -> None:
        dist.barrier()

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
