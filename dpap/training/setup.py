"""What a training run is made of, from its config: device, network, optimizer, learning-
rate schedule, pruner, seeds, the run's fingerprint and the deterministic-kernels switch."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from functools import partial
from typing import Optional, Sequence

import torch
from torch.utils import deterministic as det

from dpap.config import Config, ConfigError
from dpap.config.params import check_restart
from dpap.pruning.mechanics import Pruner
from dpap.pruning.registry import make_pruner
from dpap.snn.networks import SpikingNetwork, build_network
from dpap.training.user_model import RunAttachment, UserNetwork, attach_run_pruner, build_user_network, source_digest

def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} asked for but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


def make_network(cfg: Config, input_shape: Sequence[int], num_classes: int) -> SpikingNetwork | UserNetwork:
    """dpap's network of ``model.arch``, or the user's own (``model.factory``, ``model.nir``)."""
    if cfg.model.own_network is not None:
        return build_user_network(cfg, input_shape, num_classes)
    n = cfg.neuron
    return build_network(cfg.model.arch, input_shape, num_classes, cfg.model.kind, cfg.model.time_steps, n.decay, n.threshold, n.surrogate_width, n.detach_reset, n.kernel)


def make_optimizer(cfg: Config, params) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)


def restarted_cosine(epoch: int, restart: int, epochs: int, share: float) -> float:
    """The learning rate of ``epoch``, a share of ``train.lr``: a cosine from 1 that would
    reach 0 at ``restart``, then one from ``share`` that would reach 0 at ``epochs`` (after
    the run's last epoch, as the plain cosine does; ``train.restart_epoch``)."""
    if epoch < restart:
        return 0.5 * (1 + math.cos(math.pi * epoch / restart))
    return share * 0.5 * (1 + math.cos(math.pi * (epoch - restart) / (epochs - restart)))


def make_scheduler(cfg: Config, opt: torch.optim.Optimizer):
    t = cfg.train
    check_restart(t.restart_epoch, t.schedule, t.epochs)  # again: a config edited in Python skips the cross-group check
    if t.schedule == "cosine" and t.restart_epoch is not None:
        return torch.optim.lr_scheduler.LambdaLR(opt, partial(restarted_cosine, restart=t.restart_epoch, epochs=t.epochs, share=t.restart_lr))
    if t.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t.epochs)
    if t.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=t.step_size, gamma=0.1)
    return None


def continue_scheduler(cfg: Config, optimizer: torch.optim.Optimizer, state: Optional[dict]):
    """A schedule for ``optimizer`` (a new one, its state just loaded) that goes on from
    ``state`` (another schedule's ``state_dict()``; None: a fresh one). Building a schedule
    resets the optimizer's learning rates to its first epoch's; they are set back to where
    ``state`` left them (a restarted cosine would otherwise train one epoch at ``lr``)."""
    scheduler = make_scheduler(cfg, optimizer)
    if scheduler is not None and state is not None:
        scheduler.load_state_dict(state)
        for group, lr in zip(optimizer.param_groups, scheduler.get_last_lr()):
            group["lr"] = lr
    return scheduler


def fingerprint(cfg: Config, data_hash: str = "") -> str:
    """Hash of everything that determines a training run (not the search settings; the
    CPU thread count included: it changes float sums, hence pruning decisions)."""
    d = cfg.to_dict()
    d.pop("search", None)
    d["train"].pop("deterministic", None)  # how a GPU orders its sums, not what is computed: a run may switch it and resume
    d["data"].pop("checksums", None)  # which files were trusted, not what they hold (data_hash)
    pruning = d["pruning"]  # only the method in use: registering another method changes no run's fingerprint
    d["pruning"] = {"enabled": pruning["enabled"], "method": pruning["method"], pruning["method"]: pruning[pruning["method"]]} if pruning["enabled"] else {"enabled": False}
    for key in ("factory", "nir"):  # unset: the fingerprints of runs from before these keys stay
        if d["model"].get(key) is None:
            d["model"].pop(key, None)
    dpap_settings = d["pruning"].get("dpap")
    for key in ("prune_units", "regrow_share"):
        if dpap_settings is not None and dpap_settings.get(key) is None:  # unset: as before the key
            dpap_settings.pop(key, None)
    if d["train"].get("restart_epoch") is None:  # no restart: the fingerprints of runs from before these keys stay
        d["train"].pop("restart_epoch", None)
        d["train"].pop("restart_lr", None)
    if cfg.model.own_network is not None:  # the user's code or graph, not only its name
        d["model"]["source_digest"] = source_digest(cfg)
    return hashlib.sha256((json.dumps(d, sort_keys=True) + data_hash).encode()).hexdigest()[:16]


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool):
    """``train.deterministic``: PyTorch's deterministic kernels while the block runs
    (``torch.use_deterministic_algorithms``, which also picks cuDNN's deterministic
    convolutions; cuDNN's benchmarking off), the previous settings restored after it: they
    are process-wide. An op with no deterministic CUDA kernel warns, naming itself, and runs
    as it is (``warn_only``). Uninitialised memory is not filled with NaN, as that mode
    would otherwise do for every ``torch.empty``: every buffer of ours is written whole."""
    if not enabled:
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark, det.fill_uninitialized_memory)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    det.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark = before[2]
        det.fill_uninitialized_memory = before[3]


DETERMINISTIC_KEY = "deterministic"
"""``TrainingRun.extra``: whether every epoch so far ran with ``train.deterministic``."""


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s data order and encoding draws (and of an evaluation's, at 10**6)."""
    return (seed * 1_000_003 + epoch * 7919 + 17) % (2**63)


def make_run_pruner(net: SpikingNetwork | UserNetwork, cfg: Config) -> Optional[Pruner | RunAttachment]:
    """The pruner ``cfg.pruning`` asks for, attached to ``net``; None for the unpruned baseline.
    The user's own network gets ``dpap.attach``'s (:func:`~dpap.training.user_model.attach_run_pruner`)."""
    if not cfg.pruning.enabled:
        return None
    if isinstance(net, UserNetwork):
        return attach_run_pruner(net, cfg)
    return make_pruner(net, cfg.pruning.method, cfg.pruning.settings, epochs=cfg.train.epochs)
