"""Editing ``params.yaml`` in place: dotted keys, comments and layout kept.

Presets (``pipeline/apply_preset.py``) and the search (``dpap apply-best``) both merge a
set of values into ``params.yaml``; this is the one place that does it. The merged
result is validated before anything is written, and written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping

import yaml

from dpap.config import ConfigError, config_from_dict
from dpap.runtime.outputs import atomic_write_text


def parse_overrides(items: list[str] | None, flag: str = "--set") -> dict[str, Any]:
    """Command-line overrides ``KEY=VALUE`` (``dpap search --set``, the benchmarks' ``-S``)
    as ``{dotted key: value}``, each value read as YAML (``3`` an int, ``null`` or nothing
    None, ``[1, 2]`` a list). :class:`~dpap.config.ConfigError` naming the item and
    ``flag`` where one has no ``=``, no key or a value that is not YAML."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE, e.g. {flag} model.arch=8C3-AP2-32FC")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or "not valid YAML"
            raise ConfigError(f"{flag} {item!r}: the value is not valid YAML ({problem}); quote a string, e.g. {flag} '{key.strip()}=\"...\"'") from None
    return out


def flatten_dotted(d: Mapping[str, Any], prefix: str = "", keep: tuple[str, ...] = ("search.ranges",)) -> dict[str, Any]:
    """``{"dpap": {"fc": {"eta": 10}}}`` → ``{"pruning.dpap.fc.eta": 10}``.

    Mappings under a key in ``keep`` stay whole (the search ranges' own keys hold dots)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and key not in keep:
            out.update(flatten_dotted(v, key, keep))
        else:
            out[key] = v
    return out


def merge_into_params(params: str | Path, changes: Mapping[str, Any], *, dry_run: bool = False) -> list[tuple[str, Any, Any]]:
    """Set the dotted ``changes`` in the YAML file ``params``, keeping its comments and
    order (ruamel.yaml round trip). Raises :class:`~dpap.config.ConfigError` (and writes
    nothing) if the result would be invalid. Returns ``(key, old, new)`` for each value
    that changed."""
    from ruamel.yaml import YAML

    params = Path(params)
    ry = YAML()
    ry.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    ry.preserve_quotes = True
    ry.width = 4096
    doc = ry.load(params.read_text()) or {}
    diff = []
    for key, value in changes.items():
        node = doc
        parts = key.split(".")
        for part in parts[:-1]:
            if part not in node or node[part] is None:
                node[part] = {}
            node = node[part]
        old = node.get(parts[-1])
        if old != value:
            diff.append((key, old, value))
        node[parts[-1]] = value
    buf = io.StringIO()
    ry.dump(doc, buf)
    config_from_dict(yaml.safe_load(buf.getvalue()))  # what we write reads back valid
    if not dry_run:
        atomic_write_text(params, buf.getvalue())  # OutputError: params.yaml as it was
    return diff
