"""Writing an exported network and its manifest (``export.json``) into one folder."""


from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from dpap.adapters.nirgraph import NIRNetwork, from_nir, to_nir as user_to_nir
from dpap.data.processed import input_description
from dpap.export.errors import ExportError
from dpap.export.to_nir import DT, nir_graph, write_nir
from dpap.export.to_onnx import write_onnx
from dpap.pruning.compression import live_synapses
from dpap.runtime.outputs import atomic_write_text
from dpap.errors import one_line
from dpap.training.model_file import compact_model
from dpap.training.user_model import UserNetwork

MANIFEST = "export.json"
FILES = {"nir": "model.nir", "onnx": "model.onnx"}
STEP_INPUT = {  # what an SNN reads at each of its time steps (dpap.snn.encoding)
    "direct": "the sample x itself, the same at every step",
    "poisson": "Bernoulli spikes, 1 with probability x (clipped to [0, 1]), drawn anew per step and pixel",
    "events": "that step's frame",
}


@dataclass
class ExportResult:
    """``path``: the model file written (None when the format cannot express the
    network; then ``reason`` says why); ``manifest``: ``export.json``."""

    format: str
    path: Optional[Path]
    manifest: Path
    reason: Optional[str] = None

    @property
    def files(self) -> list[Path]:
        return [p for p in (self.path, self.manifest) if p is not None]


def export_network(
    net, folder: str | Path, live: Optional[Sequence[Tensor]] = None, encoding: str = "direct", notes: Optional[dict] = None
) -> ExportResult:
    """Write ``net`` (a :class:`~dpap.snn.networks.SpikingNetwork`) into ``folder`` as NIR
    (SNN) or ONNX (DNN), with ``export.json``. ``live[i]``: block i's living synapses
    (:func:`~dpap.pruning.compression.live_synapses`); the rest is written as zero weights.
    A network the format cannot express gives ``path=None`` and the reason in the
    manifest (no exception): evaluating a model does not depend on exporting it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fmt = "nir" if net.kind == "snn" else "onnx"
    target = folder / FILES[fmt]
    manifest = {
        "format": fmt,
        "file": FILES[fmt],
        "kind": net.kind,
        "arch": net.arch,
        "input_shape": list(net.input_shape),
        "num_classes": int(net.num_classes),
        "time_steps": int(net.time_steps),
        "encoding": encoding,
        **(notes or {}),
    }
    reason = None
    try:
        if fmt == "nir":
            write_nir(nir_graph(net, live, metadata={"encoding": encoding}), target)
            manifest["dt"] = DT
            manifest["lif"] = "tau = dt/(1 - decay), r = tau/dt, v_leak = 0, v_threshold = threshold, v_reset = 0 (IF with r = 1/dt when decay = 1)"
            manifest["decoding"] = "argmax of the output layer's spike counts over time_steps; input at every step: " + STEP_INPUT.get(encoding, encoding)
        else:
            write_onnx(net, target, live)
            manifest["inputs"] = {"input": ["batch", *net.input_shape]}
            manifest["outputs"] = {"logits": ["batch", int(net.num_classes)]}
            manifest["decoding"] = (
                f"run the graph once per frame ({int(net.time_steps)} frames) and take the argmax of the logits summed over them"
                if encoding == "events" else "one pass per sample; class = argmax of the logits"
            )
    except ExportError as exc:
        reason = str(exc)
        manifest["file"] = None
        manifest["reason"] = reason
        target.unlink(missing_ok=True)
    for other in FILES.values():  # a model file of the other format is from an older model
        if other != FILES[fmt]:
            (folder / other).unlink(missing_ok=True)
    path = folder / MANIFEST
    atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")
    return ExportResult(fmt, None if reason else target, path, reason)


def export_model(model, folder: str | Path, compact: bool = True, data_meta: Optional[dict] = None) -> ExportResult:
    """:func:`export_network` of a saved model (:func:`~dpap.training.model_file.load_model`):
    compacted (:func:`~dpap.training.model_file.compact_model`: dead channels and neurons removed,
    the pruned synapses of living units written as zeros; ``export.json`` names the
    compact ``arch``, the ``dense_arch`` and, per block, the ``kept`` units of the dense
    network), or with ``compact=False`` in the dense shapes, every pruned weight a zero.
    ``data_meta`` (the processed data set's ``meta.json``, as the evaluate stage passes it)
    adds ``input`` to ``export.json``: the data set, its class names and how its values
    become the network's input (:func:`~dpap.data.processed.input_description`)."""
    encoding = model.cfg.model.encoding
    extra: dict = {}
    if data_meta is not None:
        extra["input"] = input_description(data_meta)
    if isinstance(model.net, UserNetwork):
        return export_user_network(model.net, folder, encoding, extra)
    if model.unit_masks is None:
        return export_network(model.net, folder, None, encoding, {"compacted": False, **extra})
    if not compact:
        live = live_synapses(model.net, model.unit_masks, model.synapse_masks)
        return export_network(model.net, folder, live, encoding, {"compacted": False, **extra})
    c = compact_model(model)
    notes = {"compacted": True, "dense_arch": model.net.arch, "kept": [k.tolist() for k in c.kept], **extra}
    return export_network(c.net, folder, c.synapse_masks, encoding, notes)


def export_user_network(net: UserNetwork, folder: str | Path, encoding: str = "direct", notes: Optional[dict] = None) -> ExportResult:
    """The user's own network (``model.factory``, ``model.nir``) as NIR, through
    :func:`dpap.to_nir`, where it is a single-step graph NIR can hold: a NIR graph read with
    ``dpap.from_nir`` (a :class:`~dpap.adapters.nirgraph.NIRNetwork`; also what a factory
    may return) or an ``nn.Sequential`` of snnTorch layers run once per sample. A model that
    runs its own time loop in ``forward`` gives ``path=None`` and the reason in
    ``export.json``. Not compacted: pruned weights are written as zeros."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / FILES["nir"]
    inner = net.model
    manifest = {
        "format": "nir",
        "file": FILES["nir"],
        "kind": net.kind,
        "arch": net.arch,
        "source": dict(net.source),
        "input_shape": list(net.input_shape),
        "num_classes": int(net.num_classes),
        "time_steps": int(net.time_steps),
        "encoding": encoding,
        "compacted": False,
        **(notes or {}),
    }
    reason = None
    try:
        if isinstance(inner, NIRNetwork):
            user_to_nir(inner, target)
        elif isinstance(inner, nn.Sequential):
            user_to_nir(inner, target, example_input=torch.zeros(1, *(net.reshape or net.input_shape)))
            manifest["time_steps"] = 1
        else:
            raise ExportError(f"{type(inner).__name__} runs its own time steps in forward, and NIR holds a single-step graph; to export it, "
                              f"let {net.arch} return a dpap.adapters.nirgraph.NIRNetwork (single-step snnTorch layers that dpap "
                              f"runs over time) or an nn.Sequential of snnTorch layers; the pruned weights are in models/model.pt")
        _check_read_back(net, target)
        manifest["dt"] = DT
        manifest["decoding"] = "argmax of the output's spike counts over time_steps; input at every step: " + STEP_INPUT.get(encoding, encoding)
    except Exception as exc:  # noqa: BLE001 - snnTorch's and nirtorch's errors too: evaluating does not depend on exporting
        reason = one_line(exc) if isinstance(exc, ExportError) else f"{type(exc).__name__}: {one_line(exc)}"
        manifest["file"] = None
        manifest["reason"] = reason
        target.unlink(missing_ok=True)
    (folder / FILES["onnx"]).unlink(missing_ok=True)  # from an older model of dpap's
    path = folder / MANIFEST
    atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")
    return ExportResult("nir", None if reason else target, path, reason)


MISMATCH = 1e-3
"""Share of output entries the graph read back may differ in (a membrane within float
rounding of the threshold after NIR's τ ↔ β conversion)."""


@torch.no_grad()
def _check_read_back(net: UserNetwork, path: Path) -> None:
    """The written graph, read back by snnTorch's importer (``dpap.from_nir``), computes what
    ``net`` computes on a batch of random images; else :class:`ExportError`."""
    probe = torch.rand((8, *net.input_shape), generator=torch.Generator().manual_seed(0))
    was = net.training
    net.eval()
    try:
        ours = net(probe.to(next(net.parameters()).device)).cpu()
    finally:
        net.train(was)
    back = from_nir(path).eval()
    try:
        theirs = back(net.prepare(probe))
        if theirs.dim() == 2:
            theirs = theirs.unsqueeze(0)
    except Exception as exc:  # noqa: BLE001 - whatever the importer built
        raise ExportError(f"the written graph does not run when snnTorch's importer reads it back ({type(exc).__name__}: {one_line(exc)[:160]})") from None
    if theirs.shape != ours.shape or float((theirs != ours).float().mean()) > MISMATCH:
        raise ExportError(f"the written graph, read back by snnTorch's importer, computes other outputs than the model "
                          f"({list(theirs.shape)} vs {list(ours.shape)})")
