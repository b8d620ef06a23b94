"""Evaluating a trained (pruned) network: the model file, metrics and plot data.

- :func:`save_model` / :func:`load_model`: ``models/model.pt`` holds the final network
  state, the pruning masks, the configuration and the training history, written
  atomically (:mod:`dpap.runtime.outputs`: a failed write leaves the old file and one line). No MLflow or DVC involved; usable from a notebook.
- :func:`synaptic_operations`: operations per sample on a data split, counted with
  :meth:`SpikingNetwork.observe` as the hardware would do them. **Rule: a layer stepped in
  time does one operation per non-zero input and retained synapse, an accumulate (AC,
  0.9 pJ) when its input is binary spikes and a multiply-accumulate (MAC, 4.6 pJ) when it
  is not (average-pooled spikes 0, 1/k², …; event counts above 1); a layer run once per
  sample on a static input (the direct-encoded first layer) and every DNN layer does one
  MAC per retained weight use, zeros included.** 45 nm figures (Horowitz 2014), as SNN
  papers usually quote. ``effective_macs`` counts only the MACs whose input is non-zero,
  so ``acs`` and ``effective_macs`` are NeuroBench's ``effective_acs`` and
  ``effective_macs`` (which decides binary or not the same way, per layer and batch), and
  ``macs`` exceeds ``effective_macs`` by the zero inputs of the dense layers. A weight
  that reads a dead unit (a pruned channel or neuron of the previous layer) never
  counts, whatever the unit outputs.
- :func:`evaluate`: ``metrics.json`` content, including NeuroBench's own metrics
  (:mod:`dpap.evaluation.neurobench`) under ``neurobench``; :func:`history_rows` and
  :func:`write_plots`: the DVC plot files.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dpap.pruning.compression import count_parameters, live_synapses
from dpap.evaluation.dynamics import kind_shares, pruning_dynamics
from dpap.evaluation.neurobench import neurobench_metrics
from dpap.evaluation.plots import layer_pruning_figure
from dpap.snn.encoding import encode
from dpap.runtime.outputs import atomic_write_text
from dpap.training.history import EpochMetrics, convergence_epoch
from dpap.training.model_file import LoadedModel
from dpap.training.setup import epoch_seed
from dpap.training.user_model import UserNetwork

AC_PJ = 0.9
MAC_PJ = 4.6


# ---------------------------------------------------------------------- evaluation


def _batches(x: Tensor, y: Tensor, batch_size: int):
    for start in range(0, len(y), batch_size):
        yield x[start : start + batch_size], y[start : start + batch_size]


@torch.no_grad()
def accuracy(model: LoadedModel, x: Tensor, y: Tensor, batch_size: Optional[int] = None) -> float:
    """Accuracy as the training loop measures it (same encoding and seed)."""
    cfg = model.cfg
    bs = batch_size or cfg.train.batch_size
    g = torch.Generator().manual_seed(epoch_seed(cfg.train.seed, 10**6))
    correct = 0
    model.net.eval()
    for xb, yb in _batches(x, y, bs):
        out = model.net(encode(xb, cfg.model.encoding, model.net.time_steps, g), fuse_pooling=True)
        correct += int((out.sum(0).argmax(1) == yb).sum())
    return correct / max(len(y), 1)


def _weight_mask(block, live: Tensor) -> Tensor:
    """Float mask of the retained weights of ``block`` (``live``: its living synapses,
    :func:`~dpap.pruning.compression.live_synapses`), shaped like its weight."""
    w = block.synapse.weight
    m = live.to(w.dtype).to(w.device)
    return m.view(*m.shape, *([1] * (w.dim() - 2))).expand_as(w)


@dataclass
class SynOps:
    """Per sample: ``acs`` (accumulates of binary spikes), ``macs`` (multiply-accumulates:
    of non-binary inputs in time-stepped layers, of every weight use in dense layers) and
    ``effective_macs`` (the MACs with a non-zero input); ``per_layer`` the same per block.
    The rule: the module docstring."""

    acs: float
    macs: float
    per_layer: list[dict]
    effective_macs: float = 0.0

    @property
    def energy_pj(self) -> float:
        return self.acs * AC_PJ + self.macs * MAC_PJ


@torch.no_grad()
def synaptic_operations(model: LoadedModel, x: Tensor, batch_size: Optional[int] = None) -> SynOps:
    """Accumulates and multiply-accumulates per sample on ``x`` (see the module docstring),
    in batches of ``batch_size`` (default ``train.batch_size``, as :func:`accuracy`: a rate
    code then draws the same spikes, and a layer too small for the compiled LIF kernels in
    training does not compile them here)."""
    net, cfg = model.net, model.cfg
    if isinstance(net, UserNetwork):
        return _hooked_operations(model, x, batch_size)
    n = len(net.blocks)
    live = live_synapses(net, model.unit_masks, model.synapse_masks)  # dead inputs too: no MAC reads them
    masks = [_weight_mask(b, live[i]) for i, b in enumerate(net.blocks)]
    acs = [0.0] * n
    macs = [0.0] * n
    effective = [0.0] * n

    def op(block, inp: Tensor, mask: Tensor) -> Tensor:
        if isinstance(block.synapse, nn.Conv2d):
            c = block.synapse
            return F.conv2d(inp, mask, None, c.stride, c.padding, c.dilation, c.groups)
        return inp @ mask.t()

    def observe(index, block, pre, post):
        mask = masks[index]
        stepped = _time_major(pre, block)
        inp = pre.flatten(0, 1) if stepped else pre
        events = float(op(block, (inp != 0).to(mask.dtype), mask).sum())  # non-zero input × retained synapse
        if stepped and net.kind == "snn":  # event-driven: only non-zero inputs cost anything
            if _binary(inp):  # spikes: the weight is added
                acs[index] += events
            else:  # pooled spikes, event counts: the weight is multiplied by the value
                macs[index] += events
                effective[index] += events
            return
        # dense: the direct-encoded first layer (once per sample), every DNN layer
        macs[index] += float(op(block, torch.ones_like(inp), mask).sum())
        effective[index] += events

    g = torch.Generator().manual_seed(epoch_seed(cfg.train.seed, 10**6))
    remove = net.observe(observe)
    try:
        net.eval()
        for xb, _ in _batches(x, torch.zeros(len(x)), batch_size or cfg.train.batch_size):
            net(encode(xb, cfg.model.encoding, net.time_steps, g))
    finally:
        remove()
    count = max(len(x), 1)
    per_layer = [
        {"index": i, "layer_type": b.layer_type, "acs": acs[i] / count, "macs": macs[i] / count, "effective_macs": effective[i] / count}
        for i, b in enumerate(net.blocks)
    ]
    return SynOps(sum(acs) / count, sum(macs) / count, per_layer, sum(effective) / count)


@torch.no_grad()
def _hooked_operations(model: LoadedModel, x: Tensor, batch_size: Optional[int] = None) -> SynOps:
    """:func:`synaptic_operations` of the user's own network (``model.factory``, ``model.nir``),
    whose time steps dpap does not run: forward hooks count every call of a prunable layer.
    A call whose input is spikes only (:func:`_binary`) costs one AC per non-zero input and
    living synapse, any other call one MAC per non-zero input and living synapse (NeuroBench's
    effective counts, so ``macs == effective_macs``); an image the model feeds at every
    time step counts at every step, as the model computes it."""
    net, cfg = model.net, model.cfg
    n = len(net.blocks)
    live = live_synapses(net, model.unit_masks, model.synapse_masks)
    masks = [_weight_mask(b, live[i]) for i, b in enumerate(net.blocks)]
    acs, macs = [0.0] * n, [0.0] * n

    def counter(i: int):
        block, mask = net.blocks[i], masks[i]

        def hook(module, args, output) -> None:
            inp = args[0]
            if isinstance(block.synapse, nn.Conv2d):
                c = block.synapse
                nonzero = (inp.reshape(-1, *inp.shape[-3:]) != 0).to(mask.dtype)
                events = float(F.conv2d(nonzero, mask.to(inp.device), None, c.stride, c.padding, c.dilation, c.groups).sum())
            else:
                events = float(((inp != 0).to(mask.dtype) @ mask.to(inp.device).t()).sum())
            if _binary(inp):
                acs[i] += events
            else:
                macs[i] += events

        return hook

    handles = [b.synapse.register_forward_hook(counter(i)) for i, b in enumerate(net.blocks)]
    g = torch.Generator().manual_seed(epoch_seed(cfg.train.seed, 10**6))
    try:
        net.eval()
        for xb, _ in _batches(x, torch.zeros(len(x)), batch_size or cfg.train.batch_size):
            net(encode(xb, cfg.model.encoding, net.time_steps, g))
    finally:
        for h in handles:
            h.remove()
    count = max(len(x), 1)
    per_layer = [{"index": i, "layer_type": b.layer_type, "acs": acs[i] / count, "macs": macs[i] / count, "effective_macs": macs[i] / count}
                 for i, b in enumerate(net.blocks)]
    return SynOps(sum(acs) / count, sum(macs) / count, per_layer, sum(macs) / count)


def _binary(x: Tensor) -> bool:
    """Whether ``x`` holds spikes only: every value 0 or 1 (or -1, a signed spike), the
    test NeuroBench uses to tell ACs from MACs."""
    return bool(((x == 0) | (x == 1) | (x == -1)).all())


def _time_major(pre: Tensor, block) -> bool:
    """Whether a block's input carries a time axis: conv input ``[T, N, C, H, W]``, FC
    input ``[T, N, F]``."""
    return pre.dim() == (5 if isinstance(block.synapse, nn.Conv2d) else 3)


def evaluate(model: LoadedModel, test: tuple[Tensor, Tensor], val: Optional[tuple[Tensor, Tensor]] = None, baseline_accuracy: Optional[float] = None, neurobench: bool = True) -> dict[str, Any]:
    """The content of ``metrics.json`` for a trained model on the test split; with
    ``neurobench``, NeuroBench's metrics on the same split under ``"neurobench"``."""
    net = model.net
    report = count_parameters(net, model.unit_masks, model.synapse_masks)
    ops = synaptic_operations(model, test[0])
    history = model.history
    out: dict[str, Any] = {
        "test_accuracy": accuracy(model, *test),
        "compression": report.compression,
        "zero_weight_share": report.zero_weight_share,
        "params_retained": report.retained,
        "params_dense": report.dense,
        "epochs": len(history),
        "best_test_accuracy": max((m.test_accuracy for m in history), default=None),
        "convergence_epoch": convergence_epoch(history, baseline_accuracy),
        "synaptic_ops_per_sample": ops.acs + ops.macs,
        "acs_per_sample": ops.acs,
        "macs_per_sample": ops.macs,
        "effective_macs_per_sample": ops.effective_macs,
        "energy_nj_per_sample": ops.energy_pj / 1000.0,
    }
    if neurobench:  # the field's benchmark harness on the same split, beside our own counter
        out["neurobench"] = neurobench_metrics(model, *test)
    if history:  # how it pruned: the largest one-epoch jump, the first epoch, per layer kind
        out.update({k: v for k, v in pruning_dynamics(history).as_dict().items() if k != "max_jump_epoch"})
    if val is not None:
        out["val_accuracy"] = accuracy(model, *val)
    regrown = regenerated_per_layer(history)
    if regrown is not None:  # synapses (FC) or kernels (conv) that grew back over the run (SD-SNN)
        out["regenerated"] = sum(regrown.values())
    out["layers"] = {
        f"layer{c.index}": {
            "type": c.layer_type,
            "compression": c.compression,
            "params_retained": c.retained,
            "synapses_pruned": 1.0 - c.synapses_alive / c.synapses if c.synapses else 0.0,
            "units_alive": c.units_alive,
            "units": c.units,
            "synaptic_ops_per_sample": ops.per_layer[c.index]["acs"] + ops.per_layer[c.index]["macs"],
            **({"regenerated": regrown[c.index]} if regrown is not None else {}),
        }
        for c in report.layers
    }
    return out


def regenerated_per_layer(history: Sequence[EpochMetrics]) -> Optional[dict[int, int]]:
    """Sites (FC synapses, conv kernels) regrown per layer over the whole run; None for a
    history without pruning records (the unpruned baseline, or a run from before they were kept)."""
    rows = [layer for m in history for layer in m.layers if "regenerated" in layer]
    if not rows:
        return None
    out: dict[int, int] = {}
    for layer in rows:
        out[layer["index"]] = out.get(layer["index"], 0) + int(layer["regenerated"])
    return out


# -------------------------------------------------------------------------- plots


def history_rows(history: Sequence[EpochMetrics]) -> dict[str, list[dict]]:
    """Rows of the three DVC plot files: ``accuracy``, ``params`` and ``layers`` (long
    format: one row per epoch and layer). Epochs count from 1."""
    acc, params, layers = [], [], []
    for m in history:
        e = m.epoch + 1
        row = {"epoch": e, "train_accuracy": m.train_accuracy, "test_accuracy": m.test_accuracy}
        if m.val_accuracy is not None:
            row["val_accuracy"] = m.val_accuracy
        acc.append(row)
        row = {"epoch": e, "params_retained": m.params_retained, "compression": m.compression, "train_loss": m.train_loss}
        if m.layers:
            row.update(vars(kind_shares(m.layers)))
        params.append(row)
        for layer in m.layers:
            layers.append({
                "epoch": e,
                "layer": f"layer{layer['index']}_{layer['layer_type']}",
                "synapses_pruned": 1.0 - layer["synapses_alive"] / layer["synapses"] if layer["synapses"] else 0.0,
                "units_alive_share": layer["units_alive"] / layer["units"] if layer["units"] else 0.0,
                "compression": layer["compression"],
            })
    return {"accuracy": acc, "params": params, "layers": layers}


def _csv(rows: list[dict]) -> str:
    if not rows:
        return ""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def write_plots(history: Sequence[EpochMetrics], folder: str | Path) -> list[Path]:
    """Write ``accuracy.csv``, ``params.csv``, ``layers.csv`` and ``layers.png`` (each
    atomically) into ``folder``."""
    folder = Path(folder)
    rows = history_rows(history)
    written = []
    for name, data in rows.items():
        p = folder / f"{name}.csv"
        atomic_write_text(p, _csv(data))
        written.append(p)
    written.append(layer_pruning_figure(rows["layers"], folder / "layers.png"))
    return written


def write_metrics(metrics: dict, path: str | Path) -> Path:
    atomic_write_text(path, json.dumps(metrics, indent=2) + "\n")
    return Path(path)
