"""dpap.tracking.names: the MLflow names of an epoch's and an evaluation's results."""

import pytest

from dpap.config import Config
from dpap.tracking.names import EXPERIMENT, RUN_ID_KEY, default_run_name, epoch_metrics, evaluation_metrics
from dpap.training.history import EpochMetrics


def _layer(index, layer_type, units, units_alive, synapses, synapses_alive, compression, **extra):
    return dict(index=index, layer_type=layer_type, units=units, units_alive=units_alive, synapses=synapses,
                synapses_alive=synapses_alive, compression=compression, **extra)


def _epoch(layers=(), val_accuracy=None) -> EpochMetrics:
    return EpochMetrics(epoch=2, train_loss=0.5, train_accuracy=0.8, test_accuracy=0.75, val_accuracy=val_accuracy,
                        compression=0.4, params_retained=600, zero_weight_share=0.3, lr=0.01, seconds=1.5, layers=list(layers))


def test_names_of_the_experiment_and_the_checkpoint_key():
    assert EXPERIMENT == "dpap" and RUN_ID_KEY == "mlflow_run_id"


def test_epoch_metrics_of_an_epoch_without_layers():
    assert epoch_metrics(_epoch()) == {
        "train/loss": 0.5, "train/accuracy": 0.8, "train/lr": 0.01, "train/seconds": 1.5, "test/accuracy": 0.75,
        "pruning/compression": 0.4, "pruning/params_retained": 600.0, "pruning/zero_weight_share": 0.3,
    }
    assert epoch_metrics(_epoch(val_accuracy=0.7))["val/accuracy"] == 0.7


def test_epoch_metrics_name_each_layer_and_each_kind():
    layers = [
        _layer(0, "conv", units=8, units_alive=6, synapses=72, synapses_alive=54, compression=0.25),
        _layer(1, "fc", units=32, units_alive=8, synapses=320, synapses_alive=80, compression=0.75, units_died=3, regenerated=2, rate=0.1),
        _layer(2, "fc", units=10, units_alive=10, synapses=0, synapses_alive=0, compression=0.0, regenerated=1, width=10),
    ]
    out = epoch_metrics(_epoch(layers))
    assert out["layers/0_conv/synapses_pruned"] == pytest.approx(0.25)
    assert out["layers/0_conv/units_alive"] == 6.0 and out["layers/0_conv/units_alive_share"] == 0.75
    assert out["layers/1_fc/compression"] == 0.75
    assert (out["layers/1_fc/units_died"], out["layers/1_fc/regenerated"], out["layers/1_fc/rate"]) == (3.0, 2.0, 0.1)
    assert out["layers/2_fc/synapses_pruned"] == 0.0 and out["layers/2_fc/width"] == 10.0  # no synapses: no division
    assert "layers/0_conv/units_died" not in out and "layers/0_conv/width" not in out
    # the kinds of the hidden layers (the output layer, the last, left out)
    assert out["pruning/conv_channels_pruned"] == pytest.approx(0.25)
    assert out["pruning/fc_neurons_pruned"] == pytest.approx(0.75)
    assert out["pruning/fc_synapses_pruned"] == pytest.approx(0.75)
    assert out["pruning/regenerated"] == 3.0
    assert all(isinstance(v, float) for v in out.values())
    assert {k.split("/")[0] for k in out} == {"train", "test", "pruning", "layers"}


def test_evaluation_metrics_keep_the_scalars():
    metrics = {"accuracy": 0.9, "params": 1200, "compacted": True, "name": "dpap", "layers": {"0": {"units": 3}},
               "neurobench": {"footprint": 4096, "activation_sparsity": 0.8, "layers": [1, 2]}}
    assert evaluation_metrics(metrics) == {
        "eval/accuracy": 0.9, "eval/params": 1200.0,
        "eval/neurobench/footprint": 4096.0, "eval/neurobench/activation_sparsity": 0.8,
    }
    assert evaluation_metrics({"accuracy": 0.5, "neurobench": None}) == {"eval/accuracy": 0.5}


def test_default_run_name_says_pruned_or_baseline():
    cfg = Config()
    assert default_run_name(cfg) == f"{cfg.data.name}-{cfg.model.kind}-{'dpap' if cfg.pruning.enabled else 'baseline'}"
    cfg.data.name, cfg.model.kind = "nmnist", "snn"
    cfg.pruning.enabled = True
    assert default_run_name(cfg) == "nmnist-snn-dpap"
    cfg.pruning.enabled = False
    assert default_run_name(cfg) == "nmnist-snn-baseline"
