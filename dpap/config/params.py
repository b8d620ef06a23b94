"""The whole ``params.yaml``: :class:`Config`, reading it (:func:`load_params`) and the
checks that involve more than one group.

``load_params`` turns the YAML into a :class:`Config`; any unknown key, wrong type or
out-of-range value raises :class:`~dpap.errors.ConfigError` with one line naming the file
and the key (``params.yaml: pruning.dpap.fc.eta: got -1, expected a number > 0``). The
library takes these typed objects, never raw dicts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import Field, model_validator

from dpap.config.stages import DataConfig, ModelConfig, NeuronConfig, SearchConfig, SearchRange, TrainConfig
from dpap.errors import ConfigError
from dpap.pruning.config import PruningConfig
from dpap.pruning.registry import METHODS
from dpap.schema import Settings, validate


class Config(Settings):
    """Every knob of dpap, grouped by stage the way ``params.yaml`` is."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    neuron: NeuronConfig = Field(default_factory=NeuronConfig)
    pruning: PruningConfig = Field(default_factory=PruningConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)

    @model_validator(mode="after")
    def _across_groups(self) -> "Config":
        check_across_groups(self)
        return self


def search_knob_error(key: str) -> Optional[str]:
    """Why ``key`` (a ``search.ranges`` key) is not a searchable knob, or None."""
    group, _, rest = key.partition(".")
    method, _, knob = rest.partition(".")
    if group != "pruning" or method not in METHODS:
        return f"unknown knob; expected pruning.<method>.<knob> with a method of {', '.join(METHODS)} (e.g. pruning.dpap.epsilon)"
    knobs = METHODS[method].search_knobs
    if knob not in knobs:
        return f"unknown knob; {method}'s searchable knobs: {', '.join(f'pruning.{method}.{k}' for k in knobs)}"
    return None


def check_restart(restart: Optional[int], schedule: str, epochs: int) -> None:
    """``train.restart_epoch`` restarts a cosine schedule inside the run."""
    if restart is None:
        return
    if schedule != "cosine":
        raise ConfigError(f"train.restart_epoch: restarts a cosine schedule, but train.schedule is {schedule!r}; "
                          "set train.schedule to 'cosine' or train.restart_epoch to null")
    if restart >= epochs:
        within = f"an epoch from 1 to train.epochs - 1 = {epochs - 1}, or null" if epochs > 1 else "null (a run of 1 epoch has no epoch to restart at)"
        raise ConfigError(f"train.restart_epoch: got {restart}, expected {within}")


def check_across_groups(cfg: Config) -> None:
    """The rules a single field's type cannot say (one-line :class:`ConfigError`, key first)."""
    for name, checksum in cfg.data.checksums.items():
        if not re.fullmatch(r"(md5:|sha256:)?([0-9a-fA-F]{32}|[0-9a-fA-F]{64})", checksum):
            raise ConfigError(f"data.checksums.{name}: got {checksum!r}, expected a sha256 (64 hex digits) or md5 (32 hex digits)")
    dev = cfg.train.device
    if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ConfigError(f"train.device: got {dev!r}, expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    check_model_source(cfg.model)
    check_restart(cfg.train.restart_epoch, cfg.train.schedule, cfg.train.epochs)
    if cfg.train.restart_epoch is not None and cfg.search.epochs is not None and cfg.train.restart_epoch >= cfg.search.epochs:
        raise ConfigError(f"search.epochs: got {cfg.search.epochs}, but train.restart_epoch {cfg.train.restart_epoch} restarts the "
                          "schedule after that: a trial would never reach it; give the trials more epochs or set train.restart_epoch to null")
    if cfg.pruning.enabled and cfg.pruning.method == "dpap" and cfg.pruning.dpap.regrow_share is not None:
        try:
            cfg.pruning.dpap.regrowth_swaps(cfg.train.epochs)
        except ConfigError as exc:
            raise ConfigError(f"pruning.dpap.{exc}") from None
    if cfg.model.kind == "dnn" and cfg.model.encoding == "poisson":
        raise ConfigError("model.encoding: 'poisson' needs model.kind 'snn'; a DNN takes 'direct'")
    if cfg.pruning.dpap.importance == "stdp" and cfg.model.kind == "dnn":
        raise ConfigError("pruning.dpap.importance: 'stdp' needs spike timing (model.kind 'snn'); use 'bcm' or 'hebb'")
    for name, rng in cfg.search.ranges.items():
        key = f"search.ranges.{name}"
        why = search_knob_error(name)
        if why:
            raise ConfigError(f"{key}: {why}")
        if not rng.low < rng.high:
            raise ConfigError(f"{key}: empty range [{rng.low}, {rng.high}]; low must be < high")
        if rng.log and rng.low <= 0:
            raise ConfigError(f"{key}: a log range needs low > 0, got {rng.low}")
        knob = name.rpartition(".")[2]
        if name.startswith("pruning.dpap.") and ((knob in ("beta", "eta") and rng.low <= 0) or rng.low < 0):
            raise ConfigError(f"{key}: low must be > 0 for {knob}, got {rng.low}")
    control = cfg.search.control
    if control is not None and control not in cfg.search.ranges:
        raise ConfigError(f"search.control: got {control!r}, expected one of the knobs in search.ranges ({', '.join(cfg.search.ranges)}) or null")


FACTORY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
"""``model.factory``: ``package.module:function`` (the function may be ``Class.method``)."""


def check_model_source(model: ModelConfig) -> None:
    """One network: ``model.arch`` (dpap's) or the user's own, ``model.factory`` or
    ``model.nir``; a factory written ``package.module:function``."""
    if model.factory is not None and model.nir is not None:
        raise ConfigError("model.nir: set together with model.factory; name your network one way and set the other to null")
    own = model.own_network
    if own is None:
        return
    key, value = own
    default = ModelConfig.model_fields["arch"].default
    if model.arch != default:
        raise ConfigError(f"model.arch: got {model.arch!r} together with {key}; dpap trains one network: set model.arch back to "
                          f"its default ({default}) to train {key}'s, or set {key}: null to train the arch")
    if key == "model.factory" and not FACTORY.fullmatch(value.strip()):
        raise ConfigError(f"model.factory: got {value!r}, expected 'package.module:function' (a module importable from the "
                          f"repository root and a function in it returning an nn.Module, e.g. 'mynets:build')")
    if key == "model.nir" and not value.strip():
        raise ConfigError("model.nir: got '', expected the path of a .nir file (or null)")


LEGACY_GROUP = "dpap"
"""The group that held the pruning settings before ``pruning``: ``pruning.enabled`` is now
``pruning.enabled``, ``pruning.method`` ``pruning.method``, ``pruning.sdsnn.*``
``pruning.sdsnn.*`` and every other ``dpap.*`` ``pruning.dpap.*``."""


def legacy_key(key: str) -> Optional[str]:
    """The key that replaced ``key`` (a dotted params key of the ``dpap`` group), else None."""
    group, _, rest = key.partition(".")
    if group != LEGACY_GROUP:
        return None
    head = rest.partition(".")[0]
    if head in ("enabled", "method", ""):
        return f"pruning.{rest}" if rest else "pruning"
    if head == "sdsnn":
        return f"pruning.{rest}"
    return f"pruning.dpap.{rest}"


def _first_key(raw: Any, prefix: str) -> str:
    while isinstance(raw, dict) and raw:
        name = next(iter(raw))
        prefix, raw = f"{prefix}.{name}", raw[name]
    return prefix


def migrate_legacy(raw: dict) -> dict:
    """``raw`` (a parsed params mapping, e.g. from an older model file) with the ``dpap``
    group moved to ``pruning``: ``pruning.enabled``/``method``/``sdsnn`` one level up."""
    if LEGACY_GROUP not in raw:
        return raw
    raw = dict(raw)
    old = dict(raw.pop(LEGACY_GROUP) or {})
    new: dict[str, Any] = {}
    for key in ("enabled", "method", "sdsnn"):
        if key in old:
            new[key] = old.pop(key)
    new["dpap"] = old
    raw["pruning"] = new
    search = raw.get("search")
    if isinstance(search, dict):
        search = raw["search"] = dict(search)
        if isinstance(search.get("ranges"), dict):
            search["ranges"] = {_legacy_knob(k): v for k, v in search["ranges"].items()}
        if isinstance(search.get("control"), str):
            search["control"] = _legacy_knob(search["control"])
    return raw


def _legacy_knob(name: str) -> str:
    if name.startswith("pruning."):
        return name
    return f"pruning.{name}" if name.startswith("sdsnn.") else f"pruning.dpap.{name}"


def config_from_dict(raw: Any) -> Config:
    """Build and validate a :class:`Config` from a parsed params mapping."""
    if isinstance(raw, dict) and LEGACY_GROUP in raw:
        old = _first_key(raw[LEGACY_GROUP], LEGACY_GROUP)
        raise ConfigError(f"{old}: this key is now {legacy_key(old)} (the group 'dpap' became 'pruning', with the method's settings "
                          f"under pruning.<method>); rename it")
    return validate(Config, raw)


def load_params(path: str | Path = "params.yaml", overrides: Optional[dict[str, Any]] = None) -> Config:
    """Read ``params.yaml``, apply dotted ``overrides`` (``{"pruning.dpap.fc.eta": 5}``),
    validate. Raises :class:`ConfigError` with a one-line message naming the file or key."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found; run from the repository root or pass --params") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of stage groups (data, model, ...), got {type(raw).__name__}")
    for key, value in (overrides or {}).items():
        new = legacy_key(key)
        if new is not None:
            raise ConfigError(f"{key}: this key is now {new}; rename it")
        set_dotted(raw, key, value)
    try:
        return config_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def set_dotted(raw: dict, key: str, value: Any) -> None:
    """``set_dotted(d, "pruning.dpap.fc.eta", 5)`` sets ``d["pruning"]["dpap"]["fc"]["eta"] = 5``."""
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: cannot set below a non-mapping value")
    node[parts[-1]] = value


def get_dotted(raw: dict, key: str) -> Any:
    """The value at dotted ``key`` of a nested mapping (KeyError if absent)."""
    node: Any = raw
    for part in key.split("."):
        node = node[part]
    return node
