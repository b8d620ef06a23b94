"""Typed configuration, loaded from ``params.yaml`` and validated once, at the edge.

Every knob of the project lives in one of the dataclasses below, grouped by stage the
way ``params.yaml`` is. ``load_params`` turns the YAML into a :class:`Config`; any
unknown key, wrong type or out-of-range value raises :class:`ConfigError` with a
one-line message naming the key (``dpap.fc.eta``) and what is allowed.

The library takes these typed objects, never raw dicts.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml


class ConfigError(ValueError):
    """A value in params.yaml (or an override) is missing, unknown, mistyped or out of range."""


# ----------------------------------------------------------------------------- data


@dataclass
class DataConfig:
    """Which data set, where it lives, and how it is turned into tensors."""

    name: str = "digits"
    raw_dir: str = "data/raw"
    processed_dir: str = "data/processed"
    val_fraction: float = 0.0
    """Share of the training set held out as a validation split (0 = none)."""
    seed: int = 0
    """Seed of the validation split."""
    time_bins: int = 10
    """Number of frames an event stream is binned into (tonic ``ToFrame(n_time_bins=...)``)."""
    downsample: int = 32
    """Spatial size DVS-Gesture frames are downsampled to (128 -> ``downsample``)."""
    denoise_us: int = 10000
    """tonic ``Denoise(filter_time=...)`` in microseconds for event data; 0 disables it."""
    standardize: bool = False
    """Store static images standardised (mean 0, std 1) instead of scaled to [0, 1]."""
    limit: int = 0
    """Keep at most this many samples per split (0 = all); for quick checks."""
    checksums: dict[str, str] = field(default_factory=dict)
    """Your own checksums of raw files (file name -> sha256 or md5 hex, of the file or of its
    decompressed content), trusted instead of the published ones, with a warning; for data
    from another source (docs/pipeline.md, "How raw data is verified")."""


# ---------------------------------------------------------------------------- model


@dataclass
class ModelConfig:
    """The network: SNN or DNN, its layers in the paper's notation, and the input encoding."""

    kind: Literal["snn", "dnn"] = "snn"
    arch: str = "16C3-AP2-32C3-AP2-128FC-10FC"
    """Layers in the paper's notation (``15C3-AP2-40C3-AP2-300FC-10FC``; the last FC layer
    is the output layer and must have one unit per class) or a preset name (``mnist-snn``,
    ``cifar10-snn``, ``mnist-dnn``, ``vgg16-bn``, ...; the output layer is added for the
    data set's classes)."""
    encoding: Literal["direct", "poisson", "events"] = "direct"
    time_steps: int = 4
    """Simulation window T of the SNN (ignored for event data, whose T is ``data.time_bins``,
    and for DNNs, which have no time)."""


@dataclass
class NeuronConfig:
    """LIF neuron, Eq. 1-2, and its rectangle surrogate gradient, Eq. 4."""

    decay: float = 0.2
    """λ, the membrane decay."""
    threshold: float = 0.5
    """V_th."""
    surrogate_width: float = 1.0
    """a, the width of the rectangle surrogate."""
    detach_reset: bool = False
    """Do not back-propagate through the reset term (SpikingJelly's ``detach_reset``)."""
    kernel: Literal["auto", "eager", "compiled"] = "auto"
    """How the LIF's time loop runs: ``compiled`` fuses it into two kernels with
    ``torch.compile`` (:mod:`dpap.fused_lif`; needs a C++ compiler on CPU, Triton on CUDA),
    ``eager`` runs it as ATen calls, ``auto`` compiles on CPU for layers with at least
262,144 state entries per time step (the MNIST net's conv layers; not digits' nets, where
compiling costs more than it saves). Same results either way
    (bit for bit); a kernel that fails to compile falls back to eager with a warning."""


# ----------------------------------------------------------------------------- dpap


@dataclass
class LayerTypeConfig:
    """Survival-function knobs of one layer type (conv or fc), Eq. 12-17.

    ``None`` means "the protocol's default" (see :data:`PROTOCOL_DEFAULTS`)."""

    beta: Optional[float] = None
    """β, the initial value of every survival function."""
    epsilon: Optional[float] = None
    """ε, the decay value of Eq. 12-13."""
    eta: Optional[float] = None
    """η, the decay rate of Eq. 16-17."""
    protect: Optional[float] = None
    """C, the protection added to a non-negative δ (Eq. 14-15)."""


@dataclass
class SDSNNConfig:
    """SD-SNN (``docs/spec/SDSNN.md``): synaptic constraint by dendritic-spine ranges,
    structured neuron pruning at "neurotrophic" rates, synaptic regeneration. Defaults are
    the authors' constants (spec §2.1). Epoch counts are in the authors' 600-epoch
    schedule; a shorter run compresses that schedule (:func:`dpap.pruning.sdsnn.schedule`)."""

    protocol: Literal["fixed", "reference"] = "fixed"
    """``fixed`` (default): ranges adapt in every layer, stable ties, masks enforced every
    step, pruned units silent, regrowth by magnitude. ``reference``: the authors' code
    point by point (spec §3, Q1-Q6)."""
    spines: int = 18
    """K: consecutive epochs before a range adapts (>= K+1) or a site regrows (> K+1);
    clipping starts at epoch K+1, pruning at 2K+1."""
    schedule_epochs: Optional[int] = 600
    """The run length the constants are written for. A run of E < this many epochs uses
    K' = max(2, round(K·E/schedule_epochs)) and counts each epoch as (K+2)/(K'+2) of the
    authors' epochs in the rate and percentile schedules. null = never scale (the authors'
    schedule as written)."""
    shrink: float = 0.75
    """Factor both bounds of a range shrink by when a weight's magnitude kept falling."""
    conv_rate: float = 0.5
    """Initial cumulative pruning rate p of a conv layer, in percent of its channels."""
    fc_rate: float = 2.0
    """Initial cumulative pruning rate p of a hidden FC layer, in percent of its neurons."""
    conv_rate_tau: float = 5.0
    """Time constant of a conv layer's rate increment e^{-t/τ}·ratio."""
    fc_rate_gain: float = 0.5
    """α's scale for FC layers (α = gain·e^{-t/τ}): the knob that sets how many neurons die."""
    fc_rate_tau: float = 1.0
    fc_rate_late: float = 0.0005
    """α once ``fc_rate_switch`` schedule epochs of pruning have passed."""
    fc_rate_switch: int = 23
    """Schedule epochs after pruning starts at which α switches to ``fc_rate_late`` (the
    authors' epoch 60 = 2K+1 + 23)."""
    conv_dead: int = 20
    """A conv channel with fewer living weights than this counts as dead for the rates."""
    fc_dead: int = 50
    """An FC neuron with fewer living weights than this counts as dead for the rates."""
    conv_percentile: float = 65.0
    """Regeneration percentile offset of conv layers: q = min(cap, offset + base^t)."""
    fc_percentile: float = 60.0
    growth_base: float = 1.1
    percentile_cap: float = 99.0
    regenerate: bool = True
    """Synaptic regeneration on (false: pruning only)."""


@dataclass
class DPAPConfig:
    """Developmental plasticity-inspired adaptive pruning, and the pruning switch."""

    enabled: bool = True
    """false = no pruning at all (the unpruned baseline), whatever ``method``."""
    method: Literal["dpap", "sdsnn"] = "dpap"
    """Which pruning method decides: ``dpap`` (this group's knobs) or ``sdsnn``
    (``dpap.sdsnn``: SD-SNN, with synaptic regeneration)."""
    protocol: Literal["gradual", "paper", "reference"] = "gradual"
    """``gradual`` (default): the paper's equations with rank normalisation, survival
    bounded by β and a cap on deaths per epoch, so units die gradually in order of
    importance. ``paper``: the paper's formulas as written. ``reference``: the authors'
    code (METHOD.md §5)."""
    importance: Literal["bcm", "hebb", "stdp"] = "bcm"
    normalization: Optional[Literal["minmax", "percentile75", "rank"]] = None
    """How Eq. 12-13 normalise importance: ``minmax`` (the paper), ``percentile75`` (the
    authors' code), ``rank`` (not in the paper: ε/2 is then the share of units with δ < 0).
    None = the protocol's (gradual: rank)."""
    bounded: Optional[bool] = None
    """Survival values never exceed β (gradual: true; paper, reference: false). None = the
    protocol's."""
    epsilon: Optional[float] = None
    """ε of Eq. 12-13 for conv and FC layers at once, the one knob that sets how much is
    pruned (``dpap.conv.epsilon`` / ``dpap.fc.epsilon`` override it per layer type).
    None = the protocol's per-type values."""
    max_death_share: Optional[float] = None
    """At most this share of a layer's living units (or synapses) dies in one epoch, the
    lowest survival first; 1 = no limit (gradual: 0.1; paper, reference: 1). None = the
    protocol's."""
    gamma: float = 0.999
    """γ, the decay constant of the survival functions (Eq. 16-17)."""
    tau: float = 0.5
    """τ, the decay of the spiking trace (Eq. 5-6)."""
    start_epoch: Optional[int] = None
    """First epoch whose end updates the survival functions (reference code: 5)."""
    prune_output: bool = False
    """Also prune synapses of the output layer (its neurons are never pruned)."""
    conv: LayerTypeConfig = field(default_factory=LayerTypeConfig)
    fc: LayerTypeConfig = field(default_factory=LayerTypeConfig)
    sdsnn: SDSNNConfig = field(default_factory=SDSNNConfig)

    def resolved(self, layer_type: str) -> LayerTypeConfig:
        """The knobs of ``layer_type`` (``conv``/``fc``) with protocol defaults filled in."""
        own = getattr(self, layer_type)
        defaults = dict(PROTOCOL_DEFAULTS[self.protocol][layer_type])
        if self.epsilon is not None:
            defaults["epsilon"] = self.epsilon
        return LayerTypeConfig(
            **{
                f.name: getattr(own, f.name) if getattr(own, f.name) is not None else defaults[f.name]
                for f in dataclasses.fields(LayerTypeConfig)
            }
        )

    def _protocol(self, key: str) -> Any:
        own = getattr(self, key)
        return own if own is not None else PROTOCOL_DEFAULTS[self.protocol][key]

    def resolved_start_epoch(self) -> int:
        return self._protocol("start_epoch")

    def resolved_normalization(self) -> str:
        """Normalisation of Eq. 12-13 for synapses (and, but for the reference protocol's
        conv channels, units)."""
        return self._protocol("normalization")

    def resolved_bounded(self) -> bool:
        return self._protocol("bounded")

    def resolved_max_death_share(self) -> float:
        return self._protocol("max_death_share")


PROTOCOL_DEFAULTS: dict[str, dict[str, Any]] = {
    # The paper's ingredients, made gradual and importance-ordered (README, "Why the
    # default is not the paper's formulas as written"); knobs chosen with
    # benchmarks/pruning_dynamics.py on Fashion-MNIST and digits.
    "gradual": {
        "conv": {"beta": 6.0, "epsilon": 1.0, "eta": 12.0, "protect": 5.0},
        "fc": {"beta": 4.0, "epsilon": 1.0, "eta": 12.0, "protect": 2.0},
        "start_epoch": 0,
        "normalization": "rank",
        "bounded": True,
        "max_death_share": 0.1,
    },
    # The paper gives C (5 conv, 2 FC) and γ; β, ε and η are its free knobs.
    "paper": {
        "conv": {"beta": 4.0, "epsilon": 0.4, "eta": 10.0, "protect": 5.0},
        "fc": {"beta": 4.0, "epsilon": 0.4, "eta": 10.0, "protect": 2.0},
        "start_epoch": 0,
        "normalization": "minmax",
        "bounded": False,
        "max_death_share": 1.0,
    },
    # The authors' public code (METHOD.md §5).
    "reference": {
        "conv": {"beta": 10.0, "epsilon": 0.65, "eta": 12.0, "protect": 5.0},
        "fc": {"beta": 10.0, "epsilon": 1.5, "eta": 13.0, "protect": 2.0},
        "start_epoch": 5,
        "normalization": "percentile75",
        "bounded": False,
        "max_death_share": 1.0,
    },
}


# ---------------------------------------------------------------------------- train


@dataclass
class TrainConfig:
    epochs: int = 30
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 5e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: Literal["none", "cosine", "step"] = "cosine"
    step_size: int = 30
    """Epochs between learning-rate drops (×0.1) for ``schedule: step``."""
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    """``auto`` (CUDA when there is one), ``cpu``, ``cuda`` or ``cuda:N``."""
    threads: int = 0
    """torch CPU threads (0 = torch's default)."""
    deterministic: bool = False
    """Train with PyTorch's deterministic kernels (``torch.use_deterministic_algorithms``,
    cuDNN without benchmarking) for the run's duration, so that a run on a GPU repeats to
    the last digit; an op with no deterministic kernel warns and runs as it is. On the CPU,
    runs repeat without it (README, "What is reproducible")."""
    baseline_accuracy: Optional[float] = None
    """Accuracy of a baseline run; the first epoch reaching it is the convergence epoch."""
    compact_share: float = 0.25
    """Compaction while training: after an epoch in which a hidden layer lost this share of
    its units since the last compaction, the network, optimizer, pruner and checkpoint are
    made physically smaller (:mod:`dpap.compaction`); 0 = never. A method that regrows
    (SD-SNN ``fixed``) trains each epoch compact once a layer lost this share, and decides
    on the dense shapes (:mod:`dpap.compaction.epoch`)."""
    stall_epochs: int = 5
    """Stop with an error when train and test accuracy have stayed at chance level (at most
    1.5 / classes) for this many epochs in a row: the network is not learning (0 = never)."""


@dataclass
class SearchRange:
    low: float
    high: float
    log: bool = False


@dataclass
class SearchConfig:
    """Optuna search over the survival-function knobs (issue: hit a chosen compression)."""

    target: float = 0.5
    tolerance: float = 0.03
    trials: int = 20
    epochs: Optional[int] = None
    """Training epochs per trial (None = ``train.epochs``)."""
    storage: str = "search/optuna.journal"
    """A journal file (one machine) or an RDB URL (``postgresql+psycopg://...``: several)."""
    study_name: str = "dpap-search"
    seed: int = 0
    heartbeat_interval: int = 60
    """Seconds between a running trial's heartbeats in an RDB storage (Optuna's heartbeat)."""
    grace_period: int = 180
    """Seconds without a heartbeat after which another worker fails the trial and retries it."""
    ranges: dict[str, SearchRange] = field(
        default_factory=lambda: {
            "epsilon": SearchRange(0.6, 1.6),
            "fc.beta": SearchRange(2.0, 6.0),
            "fc.eta": SearchRange(8.0, 20.0, True),
        }
    )
    control: Optional[str] = "epsilon"
    """The knob steered toward the target (compression must grow with it; one of
    ``ranges``): each trial solves for it given the other knobs (:mod:`dpap.target_sampler`).
    None = plain TPE over every knob."""


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    neuron: NeuronConfig = field(default_factory=NeuronConfig)
    dpap: DPAPConfig = field(default_factory=DPAPConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------ validation

_RULES: dict[str, tuple[Any, str]] = {
    # key: (predicate, allowed-values text)
    "data.val_fraction": (lambda v: 0.0 <= v < 1.0, "a number in [0, 1)"),
    "data.time_bins": (lambda v: v >= 1, "an integer >= 1"),
    "data.downsample": (lambda v: 1 <= v <= 128, "an integer in [1, 128]"),
    "data.denoise_us": (lambda v: v >= 0, "an integer >= 0 (0 disables)"),
    "data.limit": (lambda v: v >= 0, "an integer >= 0 (0 = all)"),
    "model.time_steps": (lambda v: v >= 1, "an integer >= 1"),
    "neuron.decay": (lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]"),
    "neuron.threshold": (lambda v: v > 0, "a number > 0"),
    "neuron.surrogate_width": (lambda v: v > 0, "a number > 0"),
    "dpap.gamma": (lambda v: 0.0 < v <= 1.0, "a number in (0, 1]"),
    "dpap.tau": (lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]"),
    "dpap.start_epoch": (lambda v: v is None or v >= 0, "an integer >= 0"),
    "dpap.epsilon": (lambda v: v is None or 0 <= v <= 2, "a number in [0, 2]"),
    "dpap.max_death_share": (lambda v: v is None or 0 < v <= 1, "a number in (0, 1] (1 = no limit)"),
    "train.epochs": (lambda v: v >= 1, "an integer >= 1"),
    "train.lr": (lambda v: v > 0, "a number > 0"),
    "train.weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "train.momentum": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "train.step_size": (lambda v: v >= 1, "an integer >= 1"),
    "train.batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "train.threads": (lambda v: v >= 0, "an integer >= 0"),
    "train.stall_epochs": (lambda v: v >= 0, "an integer >= 0 (0 = never stop)"),
    "train.compact_share": (lambda v: 0 <= v <= 1, "a number in [0, 1] (0 = never compact)"),
    "train.baseline_accuracy": (lambda v: v is None or 0 <= v <= 1, "a number in [0, 1]"),
    "search.target": (lambda v: 0 < v < 1, "a number in (0, 1)"),
    "search.tolerance": (lambda v: v > 0, "a number > 0"),
    "search.trials": (lambda v: v >= 1, "an integer >= 1"),
    "search.epochs": (lambda v: v is None or v >= 1, "an integer >= 1"),
    "search.heartbeat_interval": (lambda v: v >= 1, "an integer >= 1 (seconds)"),
    "search.grace_period": (lambda v: v >= 1, "an integer >= 1 (seconds)"),
}
_RULES.update({
    "dpap.sdsnn.spines": (lambda v: v >= 1, "an integer >= 1"),
    "dpap.sdsnn.schedule_epochs": (lambda v: v is None or v >= 1, "an integer >= 1 or null"),
    "dpap.sdsnn.shrink": (lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "dpap.sdsnn.conv_rate": (lambda v: 0 <= v <= 100, "a percentage in [0, 100]"),
    "dpap.sdsnn.fc_rate": (lambda v: 0 <= v <= 100, "a percentage in [0, 100]"),
    "dpap.sdsnn.conv_rate_tau": (lambda v: v > 0, "a number > 0"),
    "dpap.sdsnn.fc_rate_gain": (lambda v: v >= 0, "a number >= 0"),
    "dpap.sdsnn.fc_rate_tau": (lambda v: v > 0, "a number > 0"),
    "dpap.sdsnn.fc_rate_late": (lambda v: v >= 0, "a number >= 0"),
    "dpap.sdsnn.fc_rate_switch": (lambda v: v >= 0, "an integer >= 0"),
    "dpap.sdsnn.conv_dead": (lambda v: v >= 0, "an integer >= 0"),
    "dpap.sdsnn.fc_dead": (lambda v: v >= 0, "an integer >= 0"),
    "dpap.sdsnn.conv_percentile": (lambda v: 0 <= v <= 100, "a percentile in [0, 100]"),
    "dpap.sdsnn.fc_percentile": (lambda v: 0 <= v <= 100, "a percentile in [0, 100]"),
    "dpap.sdsnn.growth_base": (lambda v: v > 1, "a number > 1"),
    "dpap.sdsnn.percentile_cap": (lambda v: 0 < v <= 100, "a percentile in (0, 100]"),
})
SDSNN_KNOBS = ("spines", "shrink", "conv_rate", "fc_rate", "conv_rate_tau", "fc_rate_gain", "fc_rate_tau", "fc_rate_late",
               "conv_percentile", "fc_percentile", "growth_base")
"""SD-SNN knobs a search may tune (``search.ranges``: ``sdsnn.fc_rate_gain``)."""
for _t in ("conv", "fc"):
    _RULES[f"dpap.{_t}.beta"] = (lambda v: v is None or v > 0, "a number > 0")
    _RULES[f"dpap.{_t}.epsilon"] = (lambda v: v is None or 0 <= v <= 2, "a number in [0, 2]")
    _RULES[f"dpap.{_t}.eta"] = (lambda v: v is None or v > 0, "a number > 0")
    _RULES[f"dpap.{_t}.protect"] = (lambda v: v is None or v >= 0, "a number >= 0")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (int -> float)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(value, inner, key)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}: got {value!r}, expected {_type_name(tp)}")
        return value
    if origin is dict:
        _, vtype = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: got {value!r}, expected a mapping")
        return {k: _convert(v, vtype, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: got {value!r}, expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: got {value!r}, expected an integer")
        return value
    if tp is float:
        if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads `1e-3` (no dot) as text; it means a number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: got {value!r}, expected a number")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: got {value!r}, expected a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: got {value!r}, expected a string")
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")  # pragma: no cover


_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")  # 1e-3, 5E4, -2.5e+1


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'params'}: got {raw!r}, expected a mapping of keys")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"{where}: unknown key; allowed keys here: {', '.join(fields)}")
    kwargs = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _convert(value, hints[name], key)
    try:
        obj = cls(**kwargs)
    except TypeError as exc:  # a required field (SearchRange.low/high) is missing
        raise ConfigError(f"{prefix}: {exc}") from None
    return obj


def _check_ranges(cfg: Config) -> None:
    for key, (pred, allowed) in _RULES.items():
        obj: Any = cfg
        for part in key.split("."):
            obj = getattr(obj, part)
        if not pred(obj):
            raise ConfigError(f"{key}: got {obj!r}, expected {allowed}")
    for name, checksum in cfg.data.checksums.items():
        if not re.fullmatch(r"(md5:|sha256:)?([0-9a-fA-F]{32}|[0-9a-fA-F]{64})", checksum):
            raise ConfigError(f"data.checksums.{name}: got {checksum!r}, expected a sha256 (64 hex digits) or md5 (32 hex digits)")
    if cfg.model.kind == "dnn" and cfg.model.encoding == "poisson":
        raise ConfigError("model.encoding: 'poisson' needs model.kind 'snn'; a DNN takes 'direct'")
    if cfg.dpap.importance == "stdp" and cfg.model.kind == "dnn":
        raise ConfigError("dpap.importance: 'stdp' needs spike timing (model.kind 'snn'); use 'bcm' or 'hebb'")
    dev = cfg.train.device
    if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ConfigError(f"train.device: got {dev!r}, expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    for name, rng in cfg.search.ranges.items():
        key = f"search.ranges.{name}"
        group, _, knob = name.rpartition(".")
        if group == "sdsnn":
            if knob not in SDSNN_KNOBS:
                raise ConfigError(f"{key}: unknown knob; SD-SNN knobs: {', '.join('sdsnn.' + k for k in SDSNN_KNOBS)}")
        elif not ((group in ("conv", "fc") and knob in ("beta", "epsilon", "eta", "protect")) or name == "epsilon"):
            raise ConfigError(f"{key}: unknown knob; expected epsilon, conv|fc . beta|epsilon|eta|protect, or sdsnn.<knob>")
        if not rng.low < rng.high:
            raise ConfigError(f"{key}: empty range [{rng.low}, {rng.high}]; low must be < high")
        if rng.log and rng.low <= 0:
            raise ConfigError(f"{key}: a log range needs low > 0, got {rng.low}")
        if group != "sdsnn" and ((knob in ("beta", "eta") and rng.low <= 0) or rng.low < 0):
            raise ConfigError(f"{key}: low must be > 0 for {knob}, got {rng.low}")
    control = cfg.search.control
    if control is not None and control not in cfg.search.ranges:
        raise ConfigError(f"search.control: got {control!r}, expected one of the knobs in search.ranges ({', '.join(cfg.search.ranges)}) or null")


def config_from_dict(raw: Any) -> Config:
    """Build and validate a :class:`Config` from a parsed params mapping."""
    cfg = _build(Config, raw, "")
    _check_ranges(cfg)
    return cfg


def load_params(path: str | Path = "params.yaml", overrides: Optional[dict[str, Any]] = None) -> Config:
    """Read ``params.yaml``, apply dotted ``overrides`` (``{"dpap.fc.eta": 5}``), validate.

    Raises :class:`ConfigError` with a one-line message naming the file or key."""
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
        set_dotted(raw, key, value)
    try:
        return config_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def set_dotted(raw: dict, key: str, value: Any) -> None:
    """``set_dotted(d, "dpap.fc.eta", 5)`` sets ``d["dpap"]["fc"]["eta"] = 5``."""
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: cannot set below a non-mapping value")
    node[parts[-1]] = value
