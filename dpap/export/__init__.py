"""Exporting a trained network for other tools: an SNN as a NIR graph, a DNN as ONNX.

:func:`export_model` writes, into one folder (the evaluate stage's ``models/export/``):

- ``model.nir`` (SNN, :mod:`dpap.export.to_nir`) or ``model.onnx`` (DNN,
  :mod:`dpap.export.to_onnx`) of the compacted network (dead channels and neurons
  removed), pruned synapses of living units as zeros;
- ``export.json``: what was written and how to run it (format, file, time steps,
  encoding, input shape, classes, the LIF parameter mapping and, from the evaluate stage,
  how the data set's values become the input), or why nothing was (a
  layer the format cannot express, e.g. max pooling in an SNN: NIR has none).

Both files are replaced atomically; a model file from an earlier export that no longer
applies (an SNN's ``model.onnx`` after the kind changed) is removed, so the folder always
describes the current model. No MLflow or DVC involved.
"""

from dpap.export.errors import ExportError
from dpap.export.writer import FILES, MANIFEST, ExportResult, export_model, export_network

__all__ = ["ExportError", "ExportResult", "FILES", "MANIFEST", "export_model", "export_network"]
