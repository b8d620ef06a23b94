"""Paper presets: partial ``params.yaml`` overlays in ``presets/<name>.yaml``.

:func:`apply_preset` merges one into ``params.yaml`` in place, keeping its comments and
order (ruamel.yaml round trip, as ``dvc exp run -S`` does), after validating the merged
result: a preset that would produce invalid parameters changes nothing. So that presets
can be applied one after another, every key that *some* preset sets is set by each:
a preset that leaves it out gets dpap's default (``train.baseline_accuracy`` of the
MNIST preset does not leak into the CIFAR-10 one). Other keys keep their values.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Optional

import yaml

from .config import Config, ConfigError, config_from_dict, load_params

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


def dotted(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.1}}`` → ``{"train.lr": 0.1}`` (search ranges stay whole)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and key != "search.ranges":
            out.update(dotted(v, key))
        else:
            out[key] = v
    return out


def apply_preset(name: str, params: str | Path = "params.yaml", root: Optional[str | Path] = None) -> dict[str, Any]:
    """Merge preset ``name`` into ``params`` (in place); return the keys it set."""
    from ruamel.yaml import YAML

    params = Path(params)
    changes = dotted(read_preset(name, root))
    defaults = dotted(Config().to_dict())
    for other in available(root):
        for key in dotted(read_preset(other, root)):
            if key not in changes and key in defaults:
                changes[key] = defaults[key]
    load_params(params, overrides=changes)  # validates the merged result (raises ConfigError)
    ry = YAML()
    ry.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    ry.preserve_quotes = True
    ry.width = 4096
    doc = ry.load(params.read_text())
    for key, value in changes.items():
        node = doc
        parts = key.split(".")
        for part in parts[:-1]:
            if part not in node or node[part] is None:
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    buf = io.StringIO()
    ry.dump(doc, buf)
    config_from_dict(yaml.safe_load(buf.getvalue()))  # what we write reads back valid
    tmp = params.with_name(f".{params.name}.{os.getpid()}.tmp")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, params)
    return changes
