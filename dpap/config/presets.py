"""Paper presets: partial ``params.yaml`` overlays in ``presets/<name>.yaml``.

:func:`apply_preset` merges one into ``params.yaml`` in place, keeping its comments and
order (ruamel.yaml round trip, as ``dvc exp run -S`` does), after validating the merged
result: a preset that would produce invalid parameters changes nothing. So that presets
can be applied one after another, every key that *some* preset sets is set by each:
a preset that leaves it out gets dpap's default (``train.baseline_accuracy`` of the
MNIST preset does not leak into the CIFAR-10 one). Other keys keep their values.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import yaml

from dpap.config import Config, ConfigError, load_params
from dpap.config.params_file import flatten_dotted, merge_into_params

PRESET_DIR = "presets"


def preset_dir(root: Optional[str | Path] = None) -> Path:
    return Path(root or os.getcwd()) / PRESET_DIR


def available(root: Optional[str | Path] = None) -> list[str]:
    return sorted(p.stem for p in preset_dir(root).glob("*.yaml"))


def read_preset(name: str, root: Optional[str | Path] = None) -> dict:
    path = preset_dir(root) / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"preset {name!r}: no {path}; available: {', '.join(available(root)) or 'none'}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of stage groups")
    return raw


def apply_preset(name: str, params: str | Path = "params.yaml", root: Optional[str | Path] = None) -> dict[str, Any]:
    """Merge preset ``name`` into ``params`` (in place); return the keys it set."""
    params = Path(params)
    changes = flatten_dotted(read_preset(name, root))
    defaults = flatten_dotted(Config().to_dict())
    for other in available(root):
        for key in flatten_dotted(read_preset(other, root)):
            if key not in changes and key in defaults:
                changes[key] = defaults[key]
    load_params(params, overrides=changes)  # names the offending key (raises ConfigError)
    merge_into_params(params, changes)
    return changes
