"""DPAP's settings (``params.yaml``: ``pruning.dpap``) and its protocols' defaults."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import BeforeValidator, Field, model_validator

from dpap.errors import ConfigError
from dpap.schema import Expected, Flag, Integer, Number, Settings

PositiveOrNone = Optional[Number("a number > 0", gt=0)]


def _flag_or_channels(value: Any) -> Any:
    """``prune_units``: a flag, strictly (no number reads as one), or ``"channels"``."""
    if isinstance(value, bool) or value == "channels":
        return value
    raise ValueError("not true, false or channels")


class LayerTypeConfig(Settings):
    """Survival-function knobs of one layer type (conv or fc), Eq. 12-17.

    ``None`` means "the protocol's default" (see :data:`PROTOCOL_DEFAULTS`)."""

    beta: PositiveOrNone = None
    """β, the initial value of every survival function."""
    epsilon: Optional[Number("a number in [0, 2]", ge=0, le=2)] = None
    """ε, the decay value of Eq. 12-13."""
    eta: PositiveOrNone = None
    """η, the decay rate of Eq. 16-17."""
    protect: Optional[Number("a number >= 0", ge=0)] = None
    """C, the protection added to a non-negative δ (Eq. 14-15)."""


class DPAPConfig(Settings):
    """Developmental plasticity-inspired adaptive pruning (Eq. 5-17)."""

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
    bounded: Optional[Flag] = None
    """Survival values never exceed β (gradual: true; paper, reference: false). None = the
    protocol's."""
    epsilon: Optional[Number("a number in [0, 2]", ge=0, le=2)] = None
    """ε of Eq. 12-13 for conv and FC layers at once, the one knob that sets how much is
    pruned (``conv.epsilon`` / ``fc.epsilon`` override it per layer type). None = the
    protocol's values, per layer type, conv mode and (an FC network's first layer) place:
    :meth:`resolved`."""
    max_death_share: Optional[Number("a number in (0, 1] (1 = no limit)", gt=0, le=1)] = None
    """At most this share of a layer's living units (or synapses) dies in one epoch, the
    lowest survival first; 1 = no limit (gradual: 0.1; paper, reference: 1). None = the
    protocol's."""
    gamma: Number("a number in (0, 1]", gt=0, le=1) = 0.999
    """γ, the decay constant of the survival functions (Eq. 16-17)."""
    tau: Number("a number in [0, 1]", ge=0, le=1) = 0.5
    """τ, the decay of the spiking trace (Eq. 5-6)."""
    start_epoch: Optional[Integer("an integer >= 0", ge=0)] = None
    """First epoch whose end updates the survival functions (reference code: 5)."""
    end_fraction: Optional[Number("a number in (0, 1] (1 = prune until the last epoch)", gt=0, le=1)] = None
    """Pruning decisions stop after this share of a run's epochs (the survival functions
    are no longer updated, nothing dies), so the last epochs only train the pruned network;
    1 = decide after every epoch (the paper). None = the protocol's."""
    conv_mode: Optional[Literal["channels", "kernels", "auto"]] = None
    """How conv layers are pruned. ``channels`` (the paper): a whole output channel at a
    time. ``kernels``: channels (with the ``conv`` knobs) and, as synapses, kernels (one
    input channel to one output channel, decided by that channel pair's BCM, Eq. 7, 10, 12,
    with the ``fc`` knobs, as FC synapses are); not in the paper. ``auto``: ``kernels`` in
    a network whose conv layers hold more than half of its parameters, where channels alone
    cannot compress it, else ``channels``. None = the protocol's (gradual: auto; paper,
    reference: channels)."""
    prune_output: Flag = False
    """Also prune synapses of the output layer (its neurons are never pruned)."""
    prune_units: Optional[Annotated[Literal[True, False, "channels"], BeforeValidator(_flag_or_channels), Expected("true, false or channels")]] = None
    """Neurons and conv channels may die (None or ``true``: every protocol, as the paper).
    ``false``: they all live, and only synapses die: FC synapses, and conv kernels under
    ``conv_mode: kernels``; unstructured pruning, which compaction cannot make smaller (a
    conv layer pruned by channels is then not pruned). ``channels``: conv channels die,
    FC neurons all live (FC layers lose synapses only)."""
    regrow_share: Optional[Number("a number in (0, 1)", gt=0, lt=1)] = None
    """Regrowth after the decisions (not in the paper; :mod:`dpap.pruning.regrowth`): in
    the first half of the epochs after ``end_fraction``, each epoch grows back the dead
    synapses the loss pulls hardest (largest epoch gradient) and drops as many living ones
    of the smallest magnitude, up to this share of a layer's living synapses, decaying by a
    cosine (RigL's swap, Evci et al. 2020); compression stays. Needs ``end_fraction`` below
    1. None: nothing regrows (the paper)."""
    conv: LayerTypeConfig = Field(default_factory=LayerTypeConfig)
    fc: LayerTypeConfig = Field(default_factory=LayerTypeConfig)

    @model_validator(mode="after")
    def _regrowth_has_epochs(self) -> "DPAPConfig":
        if self.regrow_share is not None and self.resolved_end_fraction() >= 1.0:
            raise ConfigError(f"regrow_share: {self.regrow_share} swaps synapses in the epochs after the last decision, but "
                              "end_fraction is 1 (decisions to the last epoch); set end_fraction below 1 (e.g. 0.5) or regrow_share to null")
        return self

    def resolved(self, layer_type: str, conv_mode: str = "channels", reads_input: bool = False) -> LayerTypeConfig:
        """The knobs of ``layer_type`` (``conv``/``fc``) with protocol defaults filled in;
        a conv layer's in a network pruned by ``conv_mode`` (``channels``/``kernels``, as
        :meth:`resolved_conv_mode` gives it): the protocol may default its channels' knobs
        per mode (``conv_kernels`` in :data:`PROTOCOL_DEFAULTS`), and an FC layer's that
        ``reads_input`` (the network's first layer: an FC network's) apart (``fc_input``)."""
        own = getattr(self, layer_type)
        defaults = dict(PROTOCOL_DEFAULTS[self.protocol][layer_type])
        if layer_type == "conv" and conv_mode == "kernels":
            defaults.update(PROTOCOL_DEFAULTS[self.protocol].get("conv_kernels", {}))
        if layer_type == "fc" and reads_input:
            defaults.update(PROTOCOL_DEFAULTS[self.protocol].get("fc_input", {}))
        if self.epsilon is not None:
            defaults["epsilon"] = self.epsilon
        return LayerTypeConfig(**{name: getattr(own, name) if getattr(own, name) is not None else defaults[name] for name in LayerTypeConfig.model_fields})

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

    def resolved_conv_mode(self, conv_share: float) -> str:
        """``channels`` or ``kernels`` for a network whose conv layers hold ``conv_share`` of
        its parameters (:attr:`conv_mode`)."""
        mode = self._protocol("conv_mode")
        if mode == "auto":
            return "kernels" if conv_share > 0.5 else "channels"
        return mode

    def resolved_end_fraction(self) -> float:
        return self._protocol("end_fraction")

    def last_decision_epoch(self, epochs: Optional[int]) -> Optional[int]:
        """The last epoch (from 0) whose end still decides in a run of ``epochs`` epochs
        (:attr:`end_fraction`); None = every epoch. :class:`ConfigError` when ``end_fraction``
        is below 1 and ``epochs`` is None (a run of unknown length)."""
        fraction = self.resolved_end_fraction()
        if fraction >= 1.0:
            return None
        if epochs is None:
            raise ConfigError(f"end_fraction: {fraction} stops the decisions at a share of the run, whose length is not known; "
                              "pass epochs=<the run's length> (to dpap.attach or make_pruner) or leave end_fraction at 1")
        return max(0, round(fraction * epochs) - 1)

    def regrowth_swaps(self, epochs: int) -> int:
        """Epochs whose ends swap synapses (``regrow_share``) in a run of ``epochs``: the first
        half of those after the last decision. :class:`ConfigError` when that is none."""
        last = self.last_decision_epoch(epochs)
        quiet = epochs - 1 - last if last is not None else 0
        if quiet // 2 < 1:
            raise ConfigError(f"regrow_share: end_fraction {self.resolved_end_fraction()} of {epochs} epochs leaves {quiet} epoch(s) "
                              "after the last decision; regrowth swaps in the first half of them and needs at least 2 (lower end_fraction)")
        return quiet // 2

    def knob(self, name: str, conv_mode: str = "channels") -> float:
        """The value a search knob resolves to (``epsilon``: its own value, else the FC
        layers'; ``fc.beta``: with the protocol's default filled in; ``conv.*`` in a network
        whose conv layers are pruned by ``conv_mode``, :meth:`resolved`)."""
        if "." not in name:
            own = getattr(self, name)
            return own if own is not None else getattr(self.resolved("fc"), name)
        group, knob = name.split(".", 1)
        return getattr(self.resolved(group, conv_mode), knob)


SEARCH_KNOBS = ("epsilon",) + tuple(f"{t}.{k}" for t in ("conv", "fc") for k in ("beta", "epsilon", "eta", "protect"))
"""Knobs of ``pruning.dpap`` a search may tune (``search.ranges``)."""

PROTOCOL_DEFAULTS: dict[str, dict[str, Any]] = {
    # The paper's ingredients, made gradual and importance-ordered (docs/pruning.md, "Why
    # the default is not the paper's formulas as written"); knobs measured on Fashion-MNIST
    # (mnist-snn), digits and snnTorch/SpikingJelly nets attached with dpap.attach
    # (docs/results/2026-12-06-default-eps1.1.md).
    "gradual": {
        # Channels of a network whose conv layers hold little of it (conv_mode channels) free
        # few parameters and cost accuracy: ε 0.9 (digits, 8 seeds: −0.2 points at 69.2 %
        # against −1.4 at 74 % with 1.1; docs/results/2026-12-06-conv-channel-epsilon.md).
        # Where kernels are pruned too, channels are where the compression is: ε 1.1.
        "conv": {"beta": 5.0, "epsilon": 0.9, "eta": 12.0, "protect": 5.0},
        "conv_kernels": {"epsilon": 1.1},
        "fc": {"beta": 4.0, "epsilon": 1.1, "eta": 12.0, "protect": 2.0},
        # The first layer of an FC network reads the input itself (pixels, not a layer's
        # spikes), and nothing before it holds the same information: ε 0.9 (snnTorch
        # tutorial 5's FC net and fc128, 3 seeds: 48-52 % within 1.6 points, against 68-70 %
        # at −0.9 to −2.6 with 1.1; docs/results/2026-12-06-fc-ablation.md). The FC layers
        # of a network with conv layers in front (mnist-snn's) keep ε 1.1.
        "fc_input": {"epsilon": 0.9},
        "start_epoch": 0,
        "normalization": "rank",
        "bounded": True,
        "max_death_share": 0.1,
        "end_fraction": 1.0,
        "conv_mode": "auto",
    },
    # The paper gives C (5 conv, 2 FC) and γ; β, ε and η are its free knobs.
    "paper": {
        "conv": {"beta": 4.0, "epsilon": 0.4, "eta": 10.0, "protect": 5.0},
        "fc": {"beta": 4.0, "epsilon": 0.4, "eta": 10.0, "protect": 2.0},
        "start_epoch": 0,
        "normalization": "minmax",
        "bounded": False,
        "max_death_share": 1.0,
        "end_fraction": 1.0,
        "conv_mode": "channels",
    },
    # The authors' public code (METHOD.md §5).
    "reference": {
        "conv": {"beta": 10.0, "epsilon": 0.65, "eta": 12.0, "protect": 5.0},
        "fc": {"beta": 10.0, "epsilon": 1.5, "eta": 13.0, "protect": 2.0},
        "start_epoch": 5,
        "normalization": "percentile75",
        "bounded": False,
        "max_death_share": 1.0,
        "end_fraction": 1.0,
        "conv_mode": "channels",
    },
}
