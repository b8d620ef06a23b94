"""Writing an exported network and its manifest (``export.json``) into one folder."""


from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from torch import Tensor

from dpap.data.processed import input_description
from dpap.export.errors import ExportError
from dpap.export.to_nir import DT, nir_graph, write_nir
from dpap.export.to_onnx import write_onnx
from dpap.pruning.compression import live_synapses
from dpap.runtime.outputs import atomic_write_text
from dpap.training.model_file import compact_model

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
    if model.unit_masks is None:
        return export_network(model.net, folder, None, encoding, {"compacted": False, **extra})
    if not compact:
        live = live_synapses(model.net, model.unit_masks, model.synapse_masks)
        return export_network(model.net, folder, live, encoding, {"compacted": False, **extra})
    c = compact_model(model)
    notes = {"compacted": True, "dense_arch": model.net.arch, "kept": [k.tolist() for k in c.kept], **extra}
    return export_network(c.net, folder, c.synapse_masks, encoding, notes)
