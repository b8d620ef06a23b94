"""The model file (``models/model.pt``): the final network of a training run with its
masks, config and history, written atomically and read back as a :class:`LoadedModel`."""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from dpap.compaction.network import CompactNetwork, compact
from dpap.config import Config, config_from_dict, migrate_legacy
from dpap.errors import DPAPError
from dpap.runtime.outputs import atomic_write_bytes
from dpap.snn.networks import SpikingNetwork
from dpap.training.history import EpochMetrics
from dpap.training.setup import make_network
from dpap.training.user_model import ModelSourceError, UserNetwork, build_user_network, plain_state

FORMAT = 1


class ModelFileError(DPAPError, RuntimeError):
    """``models/model.pt`` is missing, unreadable or from another format."""


def save_model(path: str | Path, run: "TrainingRun", data_meta: Optional[dict] = None) -> Path:
    """Write the final network of ``run`` (state, masks, config, history) atomically."""
    n = len(run.net.blocks)
    pruner = run.pruner
    state = {
        "format": FORMAT,
        "config": run.cfg.to_dict(),
        "fingerprint": run.fingerprint,
        "input_shape": list(run.input_shape),
        "num_classes": run.num_classes,
        "time_steps": run.net.time_steps,
        "arch": run.net.arch,
        "state_dict": plain_state(run.net),
        "unit_masks": [pruner.unit_mask(i).cpu() for i in range(n)] if pruner is not None else None,
        "synapse_masks": [pruner.synapse_mask(i).cpu() for i in range(n)] if pruner is not None else None,
        "history": [dataclasses.asdict(m) for m in run.history],
        "data": {k: (data_meta or {}).get(k) for k in ("name", "hash", "kind", "input_shape", "num_classes")},
        "extra": dict(run.extra),
    }
    if isinstance(run.net, UserNetwork):  # how to rebuild it: the factory (with the config) or the NIR graph itself
        state["source"] = {**run.net.source, "nir_file": run.net.nir_data}
    buf = io.BytesIO()
    torch.save(state, buf)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


@dataclass
class LoadedModel:
    net: SpikingNetwork | UserNetwork
    cfg: Config
    unit_masks: Optional[list[Tensor]]
    synapse_masks: Optional[list[Tensor]]
    history: list[EpochMetrics]
    extra: dict
    state: dict

    @property
    def mlflow_run_id(self) -> Optional[str]:
        return self.extra.get("mlflow_run_id")


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the network saved by :func:`save_model` (masked weights already zero)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no model file; run the train stage (`dvc repro train` or `python pipeline/train.py`)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
        if state.get("format") != FORMAT:
            raise KeyError(f"format {state.get('format')!r}")
        cfg = config_from_dict(migrate_legacy(state["config"]))
        if cfg.model.own_network is not None:
            net = build_user_network(cfg, state["input_shape"], state["num_classes"], (state.get("source") or {}).get("nir_file"))
        else:
            net = make_network(cfg, state["input_shape"], state["num_classes"])
        net.time_steps = state["time_steps"]
        net.load_state_dict(state["state_dict"])
    except ModelFileError:
        raise
    except ModelSourceError as exc:  # the user's factory is gone or changed
        raise ModelSourceError(f"{path}: {exc} (the network this model file was trained with)") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable model file
        raise ModelFileError(f"{path}: unreadable model file ({type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''}); rerun the train stage") from None
    net.eval()
    history = [EpochMetrics(**m) for m in state["history"]]
    return LoadedModel(net, cfg, state["unit_masks"], state["synapse_masks"], history, dict(state.get("extra", {})), state)


def compact_model(model: LoadedModel) -> CompactNetwork:
    """:func:`~dpap.compaction.network.compact` of a saved model (:func:`load_model`)."""
    return compact(model.net, model.unit_masks, model.synapse_masks)
