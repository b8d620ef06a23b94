"""The stage groups of ``params.yaml`` (``data``, ``model``, ``neuron``, ``train``,
``search``), each a typed settings model whose fields carry their range rules."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from dpap.schema import Flag, Integer, Number, Settings, Text


class DataConfig(Settings):
    """Which data set, where it lives, and how it is turned into tensors."""

    name: Text = "digits"
    raw_dir: Text = "data/raw"
    processed_dir: Text = "data/processed"
    val_fraction: Number("a number in [0, 1)", ge=0, lt=1) = 0.0
    """Share of the training set held out as a validation split (0 = none)."""
    seed: Integer() = 0
    """Seed of the validation split."""
    time_bins: Integer("an integer >= 1", ge=1) = 10
    """Number of frames an event stream is binned into (tonic ``ToFrame(n_time_bins=...)``)."""
    downsample: Integer("an integer in [1, 128]", ge=1, le=128) = 32
    """Spatial size DVS-Gesture frames are downsampled to (128 -> ``downsample``)."""
    denoise_us: Integer("an integer >= 0 (0 disables)", ge=0) = 10000
    """tonic ``Denoise(filter_time=...)`` in microseconds for event data; 0 disables it."""
    standardize: Flag = False
    """Store static images standardised (mean 0, std 1) instead of scaled to [0, 1]."""
    limit: Integer("an integer >= 0 (0 = all)", ge=0) = 0
    """Keep at most this many samples per split (0 = all); for quick checks."""
    checksums: dict[str, Text] = Field(default_factory=dict)
    """Your own checksums of raw files (file name -> sha256 or md5 hex, of the file or of its
    decompressed content), trusted instead of the published ones, with a warning; for data
    from another source (docs/pipeline.md, "How raw data is verified")."""


class ModelConfig(Settings):
    """The network: SNN or DNN, its layers in the paper's notation (or your own network:
    ``factory`` or ``nir``), and the input encoding."""

    kind: Literal["snn", "dnn"] = "snn"
    arch: Text = "16C3-AP2-32C3-AP2-128FC-10FC"
    """Layers in the paper's notation (``15C3-AP2-40C3-AP2-300FC-10FC``; the last FC layer
    is the output layer and must have one unit per class) or a preset name (``mnist-snn``,
    ``cifar10-snn``, ``mnist-dnn``, ``vgg16-bn``, ...; the output layer is added for the
    data set's classes)."""
    factory: Optional[Text] = None
    """Your own network instead of ``arch``: ``"package.module:function"`` (a module
    importable from the repository root, e.g. ``mynets.py`` there, or an installed package),
    called with the keywords ``input_shape``, ``num_classes`` and ``time_steps`` it accepts
    and returning an ``nn.Module`` (docs/any_network.md, "In the pipeline")."""
    nir: Optional[Text] = None
    """A NIR graph file to build the network from instead of ``arch`` (``dpap.from_nir``)."""
    encoding: Literal["direct", "poisson", "events"] = "direct"
    time_steps: Integer("an integer >= 1", ge=1) = 4
    """Simulation window T of the SNN (ignored for event data, whose T is ``data.time_bins``,
    and for DNNs, which have no time)."""

    @property
    def own_network(self) -> Optional[tuple[str, str]]:
        """``("model.factory", value)`` or ``("model.nir", value)`` when the network is the
        user's own, else None (dpap builds ``arch``)."""
        if self.factory is not None:
            return "model.factory", self.factory
        if self.nir is not None:
            return "model.nir", self.nir
        return None


class NeuronConfig(Settings):
    """LIF neuron, Eq. 1-2, and its rectangle surrogate gradient, Eq. 4."""

    decay: Number("a number in [0, 1]", ge=0, le=1) = 0.2
    """λ, the membrane decay."""
    threshold: Number("a number > 0", gt=0) = 0.5
    """V_th."""
    surrogate_width: Number("a number > 0", gt=0) = 1.0
    """a, the width of the rectangle surrogate."""
    detach_reset: Flag = False
    """Do not back-propagate through the reset term (SpikingJelly's ``detach_reset``)."""
    kernel: Literal["auto", "eager", "compiled"] = "auto"
    """How the LIF's time loop runs: ``compiled`` fuses it into two kernels with
    ``torch.compile`` (:mod:`dpap.snn.fused_lif`; needs a C++ compiler on CPU, Triton on
    CUDA), ``eager`` runs it as ATen calls, ``auto`` compiles on CPU for layers with at least
    262,144 state entries per time step (the MNIST net's conv layers; not digits' nets, where
    compiling costs more than it saves). Same results either way (bit for bit); a kernel that
    fails to compile falls back to eager with a warning."""


class TrainConfig(Settings):
    """The training recipe, the device and the run's guards."""

    epochs: Integer("an integer >= 1", ge=1) = 30
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: Number("a number > 0", gt=0) = 5e-3
    weight_decay: Number("a number >= 0", ge=0) = 0.0
    momentum: Number("a number in [0, 1)", ge=0, lt=1) = 0.9
    schedule: Literal["none", "cosine", "step"] = "cosine"
    step_size: Integer("an integer >= 1", ge=1) = 30
    """Epochs between learning-rate drops (×0.1) for ``schedule: step``."""
    restart_epoch: Optional[Integer("an integer >= 1 or null", ge=1)] = None
    """``schedule: cosine`` only: the first cosine anneals over epochs 0 to this one, where
    a second starts from ``restart_lr`` × ``lr`` and anneals towards 0 at the end of the run
    (SGDR, Loshchilov & Hutter 2017, with one restart), so that epochs after the last
    pruning decision train the pruned network at a rate it can still recover with. The first
    epoch without decisions under ``pruning.dpap.end_fraction`` f is round(f · epochs)
    (f 0.8 of 30: 24). None: one cosine over the run."""
    restart_lr: Number("a number in (0, 1]", gt=0, le=1) = 0.5
    """The restarted cosine's first learning rate, a share of ``lr``."""
    batch_size: Integer("an integer >= 1", ge=1) = 64
    seed: Integer() = 0
    device: Text = "auto"
    """``auto`` (CUDA when there is one), ``cpu``, ``cuda`` or ``cuda:N``."""
    threads: Integer("an integer >= 0", ge=0) = 0
    """torch CPU threads (0 = torch's default)."""
    deterministic: Flag = False
    """Train with PyTorch's deterministic kernels (``torch.use_deterministic_algorithms``,
    cuDNN without benchmarking) for the run's duration, so that a run on a GPU repeats to
    the last digit; an op with no deterministic kernel warns and runs as it is. On the CPU,
    runs repeat without it (docs/pipeline.md, "What is reproducible")."""
    baseline_accuracy: Optional[Number("a number in [0, 1]", ge=0, le=1)] = None
    """Accuracy of a baseline run; the first epoch reaching it is the convergence epoch."""
    compact_share: Number("a number in [0, 1] (0 = never compact)", ge=0, le=1) = 0.25
    """Compaction while training: after an epoch in which a hidden layer lost this share of
    its units since the last compaction, the network, optimizer, pruner and checkpoint are
    made physically smaller (:mod:`dpap.compaction`); 0 = never. A method that regrows
    (SD-SNN ``fixed``) trains each epoch compact once a layer lost this share, and decides
    on the dense shapes (:mod:`dpap.training.compact_epoch`)."""
    stall_epochs: Integer("an integer >= 0 (0 = never stop)", ge=0) = 5
    """Stop with an error when train and test accuracy have stayed at chance level (at most
    1.5 / classes) for this many epochs in a row: the network is not learning (0 = never)."""


class SearchRange(Settings):
    """One searched knob's interval (``log``: sampled on a log scale)."""

    low: Number()
    high: Number()
    log: Flag = False


def _default_ranges() -> dict[str, SearchRange]:
    return {
        "pruning.dpap.epsilon": SearchRange(low=0.6, high=1.6),
        "pruning.dpap.fc.beta": SearchRange(low=2.0, high=6.0),
        "pruning.dpap.fc.eta": SearchRange(low=8.0, high=20.0, log=True),
    }


class SearchConfig(Settings):
    """Optuna search over the pruning method's knobs, for a chosen compression."""

    target: Number("a number in (0, 1)", gt=0, lt=1) = 0.5
    tolerance: Number("a number > 0", gt=0) = 0.03
    trials: Integer("an integer >= 1", ge=1) = 20
    epochs: Optional[Integer("an integer >= 1", ge=1)] = None
    """Training epochs per trial (None = ``train.epochs``)."""
    storage: Text = "search/optuna.journal"
    """A journal file (one machine) or an RDB URL (``postgresql+psycopg://...``: several)."""
    study_name: Text = "dpap-search"
    seed: Integer() = 0
    heartbeat_interval: Integer("an integer >= 1 (seconds)", ge=1) = 60
    """Seconds between a running trial's heartbeats in an RDB storage (Optuna's heartbeat)."""
    grace_period: Integer("an integer >= 1 (seconds)", ge=1) = 180
    """Seconds without a heartbeat after which another worker fails the trial and retries it."""
    ranges: dict[str, SearchRange] = Field(default_factory=_default_ranges)
    """Searched knobs by their params key (``pruning.dpap.epsilon``, ``pruning.dpap.fc.beta``,
    ``pruning.sdsnn.fc_rate_gain``): ``{low, high, log}``."""
    control: Optional[Text] = "pruning.dpap.epsilon"
    """The knob steered toward the target (compression must grow with it; one of
    ``ranges``): each trial solves for it given the other knobs
    (:mod:`dpap.search.target_sampler`). None = plain TPE over every knob."""
