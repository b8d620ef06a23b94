"""Training with DPAP: the one training loop the pipeline, the search and notebooks share.

Per epoch (the paper's algorithm): for every batch, forward, traces, backward and step,
accumulate importance and θ; after the epoch update the survival functions and prune.
The loop checkpoints after every epoch and resumes exactly from the last checkpoint.
Tracking (MLflow) and search (Optuna) hook in through callbacks; this module imports
neither.
"""

from __future__ import annotations

import dataclasses
import io
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from dpap.config import Config
from dpap.runtime.outputs import atomic_write_bytes
from dpap.snn.encoding import encode
from dpap.snn.neurons import firing_rate_mse
from dpap.training.compact_epoch import compacted_epoch, mode as compaction_mode
from dpap.training.compact_run import KEY as COMPACTION_KEY, CompactWhenShrunk, dense_report, expand_run, restore_compacted
from dpap.training.distributed import Distributed
from dpap.training.history import DivergedError, EpochMetrics, NotLearningError, Split, at_chance
from dpap.training.setup import (
    DETERMINISTIC_KEY,
    deterministic_algorithms,
    epoch_seed,
    fingerprint,
    make_network,
    make_optimizer,
    make_run_pruner,
    make_scheduler,
    resolve_device,
)
from dpap.training.user_model import is_user_network, release


class TrainingRun:
    """A network, its optimizer, its pruner and its history; one :meth:`run` trains it.

    ``checkpoint``: a file written atomically after every epoch; when it exists and was
    written by the same configuration, :meth:`run` resumes from it."""

    def __init__(
        self,
        cfg: Config,
        train: Split,
        test: Split,
        input_shape: Sequence[int],
        num_classes: int,
        val: Optional[Split] = None,
        data_hash: str = "",
        checkpoint: Optional[str | Path] = None,
        callbacks: Sequence[Callable[["TrainingRun", EpochMetrics], None]] = (),
        progress: bool = True,
        distributed: Optional[Distributed] = None,
    ):
        self.cfg = cfg
        self.dist = distributed
        """Data-parallel training (:mod:`dpap.training.distributed`): this rank's share of every
        batch, gradients and pruner statistics summed over ranks; checkpoints from rank 0."""
        progress = progress and (distributed is None or distributed.is_main)
        self.device = resolve_device(cfg.train.device)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.encoding = cfg.model.encoding
        self.T = cfg.model.time_steps
        if self.encoding == "events":
            self.T = train.x.shape[1]
        on_gpu = self.device.type == "cuda"
        self.train_split = Split(train.x.to(self.device) if on_gpu else train.x, train.y.to(self.device))
        self.test_split = Split(test.x.to(self.device) if on_gpu else test.x, test.y.to(self.device))
        self.val_split = Split(val.x.to(self.device) if on_gpu else val.x, val.y.to(self.device)) if val is not None else None
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.fingerprint = fingerprint(cfg, data_hash)
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.callbacks = list(callbacks)  # compaction (below) joins once the pruner exists
        self.progress = progress

        torch.manual_seed(cfg.train.seed)
        self.net = make_network(cfg, input_shape, num_classes).to(self.device)
        if self.encoding == "events":
            self.net.time_steps = self.T
        self.pruner = make_run_pruner(self.net, cfg)
        if self.pruner is not None and distributed is not None:
            self.pruner.reduce = distributed.all_reduce
        self.compact_share = share = 0.0 if is_user_network(self.net) else cfg.train.compact_share  # dpap's networks only
        if share > 0 and self.pruner is not None and compaction_mode(self.pruner.method) == "between":
            self.callbacks.append(CompactWhenShrunk(share))  # after the others: they see the epoch as trained
        self.optimizer = make_optimizer(cfg, self.net.parameters())
        self.scheduler = make_scheduler(cfg, self.optimizer)
        self.epoch = 0  # next epoch to run
        self.history: list[EpochMetrics] = []
        self.extra: dict[str, Any] = {}  # callbacks keep small state here (e.g. an MLflow run id)
        self.resumed = False
        self.trained_widths = [b.units for b in self.net.blocks]
        """Units per block of the network that trained the last epoch (fewer than the
        dense ones when it was compacted)."""
        if self.checkpoint is not None and self.checkpoint.exists():
            self._load_checkpoint()

    # ----------------------------------------------------------------- batches

    def _batches(self, split: Split, shuffle: bool, generator: Optional[torch.Generator]):
        n = len(split)
        bs = self.cfg.train.batch_size
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, bs):
            idx = order[start : start + bs]
            x = split.x[idx.to(split.x.device)]
            y = split.y[idx.to(split.y.device)]
            yield x.to(self.device, non_blocking=True), y

    def _output(self, x: Tensor, generator: Optional[torch.Generator], fuse_pooling: bool = False) -> Tensor:
        return self.net(encode(x, self.encoding, self.T, generator), fuse_pooling=fuse_pooling)

    def _loss(self, out: Tensor, y: Tensor) -> Tensor:
        if self.net.kind == "snn":
            return firing_rate_mse(out, y, self.num_classes)
        return nn.functional.cross_entropy(out.mean(0), y)

    @torch.no_grad()
    def evaluate(self, split: Split) -> float:
        """Accuracy on ``split`` (class = most output spikes, or the largest logit)."""
        self.net.eval()
        correct = 0
        g = torch.Generator().manual_seed(epoch_seed(self.cfg.train.seed, 10**6))
        for x, y in self._batches(split, False, None):
            out = self._output(x, g, fuse_pooling=True)
            correct += int((out.sum(0).argmax(1) == y).sum())
        return correct / max(len(split), 1)

    # ------------------------------------------------------------------- epochs

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        self.net.train()
        seed = epoch_seed(self.cfg.train.seed, epoch)
        torch.manual_seed(seed)  # dropout: the same at every (re)run of this epoch
        g = torch.Generator().manual_seed(seed)
        total_loss = 0.0
        correct = seen = mine = 0
        n_batches = math.ceil(len(self.train_split) / self.cfg.train.batch_size)
        bar = _progress(n_batches, f"epoch {epoch + 1}/{self.cfg.train.epochs}", self.progress)
        for b, (x, y) in enumerate(self._batches(self.train_split, True, g)):
            if self.dist is not None:
                loss, out, y, batch = self._shared_step(x, y, g, epoch, b, bar)
            else:
                out = self._output(x, g)
                loss = self._loss(out, y)
                if not torch.isfinite(loss):
                    bar.close()
                    raise DivergedError(f"loss became {loss.item()} at epoch {epoch + 1}, batch {b + 1}; lower train.lr or check the data")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                batch = len(y)
            if self.pruner is not None:
                self.pruner.mask_gradients()
            self.optimizer.step()
            if self.pruner is not None:
                self.pruner.apply_masks()
            total_loss += float(loss.detach()) * batch
            if out is not None:
                correct += int((out.detach().sum(0).argmax(1) == y).sum())
            seen += batch
            mine += len(y)  # this rank's share (all of it in one process)
            bar.update(1)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / max(mine, 1):.3f}")
        bar.close()
        self.trained_widths = [b.units for b in self.net.blocks]
        if self.dist is not None:  # correct predictions of every rank's shares
            correct = int(self.dist.all_reduce(torch.tensor([float(correct)], dtype=torch.float64, device=self.device)).item())
        return total_loss / seen, correct / seen

    def _shared_step(self, x: Tensor, y: Tensor, g, epoch: int, b: int, bar):
        """Forward and backward of this rank's share of a batch; returns the whole batch's
        mean loss, this share's output and labels, and the batch size. The gradients end up
        those of the whole batch's mean loss on every rank."""
        n = len(y)
        share = self.dist.share(n)
        x, y = x[share], y[share]
        self.optimizer.zero_grad(set_to_none=False)
        if len(y):
            out = self._output(x, g)
            local = self._loss(out, y)
            local_sum = local.detach().double() * len(y)
        else:  # a last batch smaller than the number of ranks
            out, local = None, None
            local_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        loss = self.dist.all_reduce(local_sum.reshape(1).clone())[0] / n
        if not torch.isfinite(loss):
            bar.close()
            raise DivergedError(f"loss became {loss.item()} at epoch {epoch + 1}, batch {b + 1}; lower train.lr or check the data")
        for p in self.net.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if local is not None:
            local.backward()
        self.dist.average_gradients(self.net.parameters(), len(y) / n)
        return loss, out, y, n

    def _layer_rows(self, report) -> list[dict]:
        """Per-layer rows of an epoch: the compression report's counts, what the pruner
        did this epoch (``units_died``, ``regenerated``) and the method's own scalars
        (SD-SNN's rate ``p``)."""
        rows = report.as_dict()["layers"]
        if self.pruner is None:
            return rows
        stats = self.pruner.method.layer_stats(self.pruner)
        for row, rep in zip(rows, self.pruner.last_reports or [None] * len(rows)):
            if rep is not None:
                row.update(units_died=rep.died_units, regenerated=rep.restored_synapses)
            row["width"] = self.trained_widths[row["index"]]  # units the (compacted) network computed
            row.update(stats.get(row["index"], {}))
        return rows

    def run(self) -> list[EpochMetrics]:
        """Train up to ``train.epochs`` epochs (resuming where a checkpoint left off)."""
        # whether every epoch so far was trained with deterministic kernels (a checkpoint keeps it)
        self.extra[DETERMINISTIC_KEY] = self.cfg.train.deterministic and self.extra.get(DETERMINISTIC_KEY, self.epoch == 0)
        with deterministic_algorithms(self.cfg.train.deterministic):
            return self._run()

    def _run(self) -> list[EpochMetrics]:
        while self.epoch < self.cfg.train.epochs:
            epoch = self.epoch
            t0 = time.perf_counter()
            with compacted_epoch(self, self.compact_share):  # a method that regrows (SD-SNN)
                loss, acc = self.train_epoch(epoch)
            if self.pruner is not None:
                self.pruner.end_epoch(epoch)
            lr = self.optimizer.param_groups[0]["lr"]
            if self.scheduler is not None:
                self.scheduler.step()
            report = dense_report(self)  # counted against the dense network, compacted or not
            m = EpochMetrics(
                epoch=epoch,
                train_loss=loss,
                train_accuracy=acc,
                test_accuracy=self.evaluate(self.test_split),
                val_accuracy=self.evaluate(self.val_split) if self.val_split is not None else None,
                compression=report.compression,
                params_retained=report.retained,
                zero_weight_share=report.zero_weight_share,
                lr=lr,
                seconds=time.perf_counter() - t0,
                layers=self._layer_rows(report),
            )
            self.history.append(m)
            self.epoch = epoch + 1
            if self.progress:
                v = f" val {m.val_accuracy:.4f}" if m.val_accuracy is not None else ""
                print(f"epoch {epoch + 1:3d}: loss {loss:.4f} train {acc:.4f} test {m.test_accuracy:.4f}{v} compression {m.compression:.3f} ({m.seconds:.1f}s)", flush=True)
            for cb in self.callbacks:
                cb(self, m)
            if at_chance(self.history, self.num_classes, self.cfg.train.stall_epochs):
                t = self.cfg.train
                raise NotLearningError(
                    f"accuracy has stayed at chance level ({1 / self.num_classes:.3f}) for {t.stall_epochs} epochs "
                    f"(train {m.train_accuracy:.3f}, test {m.test_accuracy:.3f}): the network is not learning; "
                    f"lower train.lr (now {t.lr:g}) or check the data (train.stall_epochs: 0 turns this check off)"
                )
            self.save_checkpoint()
        expand_run(self)  # compacted while training: hand on the dense shapes (models/model.pt, evaluation)
        release(self.pruner)  # the user's own network: the attachment's hooks off, the masks kept
        return self.history

    # -------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict:
        return {
            "fingerprint": self.fingerprint,
            "epoch": self.epoch,
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "pruner": self.pruner.state_dict() if self.pruner is not None else None,
            "history": [dataclasses.asdict(m) for m in self.history],
            "extra": self.extra,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("extra", {}).get(COMPACTION_KEY):  # compacted while training: its shapes first
            restore_compacted(self, state["extra"][COMPACTION_KEY])
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])  # after the schedule was built, which resets lr: the saved lr wins
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.pruner is not None and state["pruner"] is not None:
            self.pruner.load_state_dict(state["pruner"])
        self.epoch = state["epoch"]
        self.history = [EpochMetrics(**m) for m in state["history"]]
        self.extra = dict(state.get("extra", {}))

    def save_checkpoint(self) -> None:
        if self.checkpoint is None or (self.dist is not None and not self.dist.is_main):
            return
        buf = io.BytesIO()
        torch.save(self.state_dict(), buf)
        atomic_write_bytes(self.checkpoint, buf.getvalue())  # OutputError: the old checkpoint stays

    def _load_checkpoint(self) -> None:
        try:
            state = torch.load(self.checkpoint, map_location=self.device, weights_only=False)
        except Exception as exc:  # a torn or foreign file: say so, start over
            print(f"warning: checkpoint {self.checkpoint} unreadable ({exc}); starting from epoch 1", flush=True)
            return
        if state.get("fingerprint") != self.fingerprint:
            print(f"note: checkpoint {self.checkpoint} is from other parameters; starting from epoch 1", flush=True)
            return
        self.load_state_dict(state)
        self.resumed = True
        was = self.extra.get(DETERMINISTIC_KEY, False)
        if self.device.type == "cuda" and was != self.cfg.train.deterministic:  # on the CPU it changes nothing
            print(f"note: train.deterministic is {str(self.cfg.train.deterministic).lower()}, but the checkpoint's {self.epoch} "
                  f"epoch(s) were trained with it {str(was).lower()}: the run as a whole will not repeat exactly", flush=True)
        if self.progress:
            print(f"resuming from checkpoint {self.checkpoint} after epoch {self.epoch}", flush=True)


def _progress(total: int, desc: str, enabled: bool):
    """One epoch's batch bar on stderr, drawn only where stderr is a terminal (or in a
    notebook). Elsewhere (CI, ``nohup``, ``dvc exp run --queue``, ``2>&1 | tee``) its
    carriage-return frames would fill the log: there the progress is the one line per
    epoch that :meth:`TrainingRun.run` prints on stdout."""
    from tqdm.auto import tqdm

    try:
        interactive = sys.stderr.isatty() or "ipykernel" in sys.modules
    except (AttributeError, ValueError):  # no stderr, or a closed one
        interactive = False
    return tqdm(total=total, desc=desc, leave=False, disable=not (enabled and interactive), dynamic_ncols=True)


def fit(
    cfg: Config,
    data,
    *,
    checkpoint: Optional[str | Path] = None,
    callbacks: Sequence[Callable[[TrainingRun, EpochMetrics], None]] = (),
    progress: bool = True,
    distributed: Optional[Distributed] = None,
) -> TrainingRun:
    """Train on a :class:`dpap.data.ProcessedData` (``train``/``test``/``val`` as
    ``(x, y)`` tuples and ``meta`` with ``input_shape``, ``num_classes``, ``hash``).

    The one training function of the project: the train stage and the search call it.
    Returns the finished :class:`TrainingRun` (``.net``, ``.pruner``, ``.history``)."""
    meta = data.meta
    run = TrainingRun(
        cfg,
        Split(*data.train),
        Split(*data.test),
        meta["input_shape"],
        meta["num_classes"],
        val=Split(*data.val) if data.val is not None else None,
        data_hash=meta.get("hash", ""),
        checkpoint=checkpoint,
        callbacks=callbacks,
        progress=progress,
        distributed=distributed,
    )
    run.run()
    return run
