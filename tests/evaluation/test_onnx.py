"""ONNX export of a DNN, run by onnxruntime."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dpap.export import export_model

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def test_onnxruntime_predicts_what_the_pruned_dnn_predicts(trained, digits, tmp_path):
    model = trained("6C3-BN-MP2-6C3-AP2-24FC-10FC", kind="dnn", epochs=2)
    assert any(not m.all() for m in model.unit_masks), "the fixture should have pruned units"
    meta = {"name": "digits", "kind": "static", "classes": [str(c) for c in range(10)],
            "storage": {"dtype": "uint8", "scale": 1 / 16, "mean": None, "std": None}}
    result = export_model(model, tmp_path / "export", data_meta=meta)
    assert result.path == tmp_path / "export" / "model.onnx"
    manifest = json.loads(result.manifest.read_text())
    assert manifest["format"] == "onnx" and manifest["decoding"] == "one pass per sample; class = argmax of the logits"
    assert manifest["input"]["scale"] == 1 / 16 and manifest["input"]["layout"].startswith("[C, H, W]")
    onnx.checker.check_model(onnx.load(str(result.path)))

    x = digits[1].x[:100]
    with torch.no_grad():
        ours = model.net(x)[0]
    session = ort.InferenceSession(str(result.path))
    (logits,) = session.run(None, {"input": x.numpy()})
    assert logits.shape == (100, 10)
    assert np.array_equal(logits.argmax(1), ours.argmax(1).numpy())
    assert np.allclose(logits, ours.numpy(), atol=1e-4)
    # the compacted network: the FC layer holds only the living neurons' living inputs
    manifest = json.loads(result.manifest.read_text())
    kept = [torch.tensor(k) for k in manifest["kept"]]
    assert manifest["compacted"] and (len(kept[2]) < 24 or len(kept[1]) < 6)
    spatial = model.net.blocks[2].in_spatial
    cols = (kept[1][:, None] * spatial + torch.arange(spatial)).flatten()
    dense_fc = model.net.blocks[2].synapse.weight.detach()[kept[2]][:, cols]
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(result.path)).graph.initializer}
    fc = next(w for w in weights.values() if w.shape == tuple(dense_fc.shape))
    assert np.array_equal(fc, dense_fc.numpy())
    # compact=False: the dense shapes, pruned synapses as zeros
    dense = export_model(model, tmp_path / "dense", compact=False)
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(dense.path)).graph.initializer}
    fc = next(w for w in weights.values() if w.shape == model.net.blocks[2].synapse.weight.shape)
    assert (fc == 0).any()
    assert np.array_equal(fc == 0, model.net.blocks[2].synapse.weight.detach().numpy() == 0)
