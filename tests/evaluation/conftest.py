"""Fixtures of the evaluation tests (NeuroBench metrics, NIR and ONNX export):
scikit-learn's digits and small networks trained for a few epochs with pruning on (so
that spikes, zeros and dead units are real)."""

from __future__ import annotations

import pytest
import torch

from dpap.config import Config
from dpap.training.model_file import load_model, save_model
from dpap.training.history import Split
from dpap.training.loop import TrainingRun


def tiny_config(arch: str = "6C3-AP2-24FC-10FC", kind: str = "snn", epochs: int = 3) -> Config:
    """A few epochs with aggressive survival knobs: units and synapses die in them."""
    cfg = Config()
    cfg.model.arch = arch
    cfg.model.kind = kind
    cfg.model.time_steps = 4
    cfg.train.epochs = epochs
    cfg.train.threads = 1
    cfg.pruning.dpap.fc.beta = 0.5
    cfg.pruning.dpap.fc.epsilon = 1.2
    cfg.pruning.dpap.fc.eta = 10.0
    cfg.pruning.dpap.conv.beta = 0.5
    cfg.pruning.dpap.conv.epsilon = 1.0
    # a channel of 6C3 takes 15 % of this network: under the default share (0.1) it could
    # not die alone (docs/pruning.md, the cap on deaths)
    cfg.pruning.dpap.max_death_share = 0.2
    return cfg


def train_and_load(cfg: Config, digits, path):
    """Train ``cfg`` on the digits, save the model as the train stage does, load it back."""
    train, test = digits
    torch.set_num_threads(1)
    run = TrainingRun(cfg, train, test, (1, 8, 8), 10, progress=False)
    run.run()
    save_model(path, run)
    return load_model(path)


@pytest.fixture(scope="session")
def trained(digits, tmp_path_factory):
    """``trained(arch, kind, epochs)``: :func:`train_and_load` of :func:`tiny_config`."""

    def make(arch: str = "6C3-AP2-24FC-10FC", kind: str = "snn", epochs: int = 3):
        return train_and_load(tiny_config(arch, kind, epochs), digits, tmp_path_factory.mktemp(kind) / "model.pt")

    return make


@pytest.fixture(scope="session")
def pruned_snn(digits, tmp_path_factory):
    """The conv SNN ``6C3-AP2-24FC-10FC`` (T = 4, direct encoding), 3 epochs, pruned."""
    return train_and_load(tiny_config(), digits, tmp_path_factory.mktemp("snn") / "model.pt")
