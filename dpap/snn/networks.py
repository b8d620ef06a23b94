"""Networks from the paper's notation: ``15C3-AP2-40C3-AP2-300FC-10FC`` and friends.

Tokens: ``<n>C<k>`` convolution with n output channels and a k×k kernel (same padding),
``AP<k>`` / ``MP<k>`` average / max pooling, ``BN`` batch normalisation of the preceding
synaptic layer, ``<n>FC`` fully connected layer (the first one flattens), ``DO<p>``
dropout with p percent. Every synaptic layer (conv or FC) is followed by a neuron: LIF
for an SNN, ReLU for a DNN; the last FC layer is the output layer (LIF in an SNN, plain
logits in a DNN).

The network knows nothing about pruning. It offers one observation point: callables
registered with :meth:`SpikingNetwork.observe` receive, for every block of every forward
pass, the block's input and its neurons' output; a pruner uses that to build traces.
"""

from __future__ import annotations

from dpap.errors import DPAPError

import re
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from dpap.snn.neurons import LIF, ReLUNeuron

PRESETS: dict[str, tuple[str, str]] = {
    # name: (arch without the output layer, kind)
    "mnist-snn": ("15C3-AP2-40C3-AP2-300FC", "snn"),
    "nmnist-snn": ("15C3-AP2-40C3-AP2-300FC", "snn"),
    "dvs-gesture-snn": ("15C3-AP2-40C3-AP2-300FC", "snn"),
    "mnist-2fc": ("800FC", "snn"),
    "cifar10-snn": ("128C3-BN-128C3-BN-MP2-256C3-BN-256C3-BN-MP2-512C3-BN-512C3-BN-512FC", "snn"),
    "mnist-dnn": ("20C5-MP2-50C5-MP2-500FC", "dnn"),
    "vgg16-bn": (
        "64C3-BN-64C3-BN-MP2-128C3-BN-128C3-BN-MP2-256C3-BN-256C3-BN-256C3-BN-MP2-"
        "512C3-BN-512C3-BN-512C3-BN-MP2-512C3-BN-512C3-BN-512C3-BN-MP2-512FC-512FC",
        "dnn",
    ),
}

_TOKEN = re.compile(r"^(?:(?P<conv>\d+)C(?P<k>\d+)|(?P<fc>\d+)FC|(?P<pool>AP|MP)(?P<pk>\d+)|(?P<bn>BN)|DO(?P<do>\d+))$")


class ArchError(DPAPError, ValueError):
    """An architecture string that cannot be parsed or built."""


@dataclass(frozen=True)
class LayerSpec:
    op: str  # conv | fc | ap | mp | bn | dropout
    size: int = 0  # channels / neurons / pool kernel / dropout percent
    kernel: int = 0


def parse_arch(arch: str) -> list[LayerSpec]:
    """``"15C3-AP2-300FC"`` → ``[LayerSpec('conv', 15, 3), LayerSpec('ap', 2), LayerSpec('fc', 300)]``."""
    arch = arch.strip()
    if not arch:
        raise ArchError("model.arch: empty architecture string")
    specs = []
    for tok in arch.split("-"):
        m = _TOKEN.match(tok.strip().upper())
        if not m:
            raise ArchError(
                f"model.arch: cannot read token {tok!r} in {arch!r}; expected <n>C<k>, AP<k>, MP<k>, BN, DO<p> or <n>FC, "
                f"or a preset: {', '.join(PRESETS)}"
            )
        if m["conv"]:
            specs.append(LayerSpec("conv", int(m["conv"]), int(m["k"])))
        elif m["fc"]:
            specs.append(LayerSpec("fc", int(m["fc"])))
        elif m["pool"]:
            specs.append(LayerSpec(m["pool"].lower(), int(m["pk"])))
        elif m["bn"]:
            specs.append(LayerSpec("bn"))
        else:
            specs.append(LayerSpec("dropout", int(m["do"])))
    for s in specs:
        if s.op in ("conv", "fc", "ap", "mp") and (s.size < 1 or (s.op == "conv" and s.kernel < 1)):
            raise ArchError(f"model.arch: sizes must be >= 1 in {arch!r}")
    return specs


def resolve_arch(arch: str, num_classes: int) -> str:
    """Expand a preset name: its hidden layers plus the output layer ``<num_classes>FC``.

    Any other string is taken as written: its last FC layer is the output layer."""
    if arch in PRESETS:
        return f"{PRESETS[arch][0]}-{num_classes}FC"
    return arch


class _AvgPoolFunction(torch.autograd.Function):
    """Average pooling with kernel = stride = k, no padding, on a contiguous NCHW tensor.

    Adds the k² strided views in the order of PyTorch's CPU kernel (row by row) and divides
    by k², so the result is bit-identical to ``F.avg_pool2d``; backward writes ``g / k²``
    into each window with k² strided copies. On CPU about 2-4× faster than ATen's kernels
    forward, 3-5× backward."""

    @staticmethod
    def forward(ctx, x: Tensor, k: int) -> Tensor:  # type: ignore[override]
        H, W = x.shape[-2] // k, x.shape[-1] // k
        views = [x[..., i : H * k : k, j : W * k : k] for i in range(k) for j in range(k)]
        out = views[0] + views[1]
        for v in views[2:]:
            out += v
        out.div_(k * k)
        ctx.k, ctx.in_shape = k, x.shape
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        k, shape = ctx.k, ctx.in_shape
        H, W = grad.shape[-2], grad.shape[-1]
        exact = shape[-2] == H * k and shape[-1] == W * k
        gi = (torch.empty if exact else torch.zeros)(shape, dtype=grad.dtype, device=grad.device)
        g = grad / (k * k)
        for i in range(k):  # k² strided copies: faster than one broadcast copy or ATen's kernel
            for j in range(k):
                gi[..., i : H * k : k, j : W * k : k].copy_(g)
        return gi, None


class AvgPool2d(nn.AvgPool2d):
    """``nn.AvgPool2d`` (same results, same state) with a faster CPU path for the
    non-overlapping, unpadded pooling of the architectures (``AP<k>``)."""

    def window(self) -> Optional[int]:
        """k where this pooling is the plain kind the fast paths handle (kernel = stride =
        k > 1, no padding, floor mode, the default divisor), else None."""
        k = self.kernel_size
        plain = (
            isinstance(k, int) and k > 1 and self.stride in (k, (k, k)) and self.padding in (0, (0, 0)) and not self.ceil_mode
            and self.divisor_override is None
        )
        return k if plain else None  # type: ignore[return-value]

    def forward(self, x: Tensor) -> Tensor:
        k = self.window()
        if (
            k is not None and x.dim() == 4 and x.dtype in (torch.float32, torch.float64)
            and x.device.type == "cpu" and x.is_contiguous() and x.shape[-2] >= k and x.shape[-1] >= k
        ):
            return _AvgPoolFunction.apply(x, k)
        return super().forward(x)


def _fused_neuron_and_pooling(block: "Block", current: Tensor) -> Optional[Tensor]:
    """Inference: a block's LIF and the average pooling after it in one kernel
    (:meth:`LIF.pooled`), where the block's ``post`` is that pooling alone (dropout in eval
    mode counts as nothing) and the LIF uses the compiled kernels; None otherwise. Only
    without observers: they need the full-size spikes."""
    if not isinstance(block.neuron, LIF) or current.dim() != 5:
        return None
    post = [m for m in block.post if not (isinstance(m, nn.Dropout) and not m.training)]
    if len(post) != 1 or not isinstance(post[0], AvgPool2d):
        return None
    k = post[0].window()
    if k is None or current.shape[-2] < k or current.shape[-1] < k or current.dtype not in (torch.float32, torch.float64):
        return None
    return block.neuron.pooled(current, k)


def fold_time(module: nn.Module, x: Tensor, time_major: bool) -> Tensor:
    """Run a stateless layer once over ``T·N`` samples (SpikingJelly's SeqToANNContainer)."""
    if not time_major:
        return module(x)
    T, N = x.shape[:2]
    y = module(x.flatten(0, 1))
    return y.view(T, N, *y.shape[1:])


class Block(nn.Module):
    """One synaptic layer with its BN, neuron, and the pooling/dropout that follow it.

    ``layer_type`` is ``conv`` or ``fc``. ``in_spatial`` is how many input columns of an
    FC layer belong to one channel of the preceding conv block (H·W at the flatten), so
    a pruned channel can be mapped to the synapses it feeds."""

    def __init__(self, synapse: nn.Module, norm: Optional[nn.Module], neuron: Optional[nn.Module], post: Sequence[nn.Module], flatten: bool, in_spatial: int, is_output: bool):
        super().__init__()
        self.synapse = synapse
        self.norm = norm
        self.neuron = neuron if neuron is not None else nn.Identity()
        self.post = nn.Sequential(*post)
        self.flatten = flatten
        self.in_spatial = in_spatial
        self.is_output = is_output
        self.layer_type = "conv" if isinstance(synapse, nn.Conv2d) else "fc"

    @property
    def units(self) -> int:
        """Neurons (FC) or channels (conv) of this layer."""
        return self.synapse.weight.shape[0]


class SpikingNetwork(nn.Module):
    """A feed-forward SNN (LIF) or DNN (ReLU) of :class:`Block` s.

    ``forward`` takes a static batch ``[N, *input_shape]`` (direct encoding: the first
    synaptic layer runs once and its current is fed to the neurons at all T steps) or a
    time-major sequence ``[T, N, *input_shape]`` (rate-coded or event frames). It returns
    the output layer's activity ``[T, N, classes]`` (spikes for an SNN, logits with T=1
    for a DNN)."""

    def __init__(self, blocks: Sequence[Block], input_shape: Sequence[int], num_classes: int, kind: str, time_steps: int, arch: str):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.kind = kind
        self.time_steps = time_steps if kind == "snn" else 1
        self.arch = arch
        self._observers: dict[int, tuple[Callable, bool]] = {}
        self._next_handle = 0

    def observe(self, fn: Callable[[int, Block, Tensor, Tensor], None], training_only: bool = False) -> Callable[[], None]:
        """Call ``fn(index, block, pre, post)`` for every block in every forward pass
        (with ``training_only``, only while the network is in training mode).

        ``pre`` is the block's input (``[N, ...]`` when static, else ``[T, N, ...]``),
        ``post`` its neurons' output ``[T, N, ...]``. Returns a function that removes it.
        An observer to call turns off ``forward``'s ``fuse_pooling`` (it needs the
        full-size spikes)."""
        handle = self._next_handle
        self._next_handle += 1
        self._observers[handle] = (fn, training_only)
        return lambda: self._observers.pop(handle, None)

    def forward(self, x: Tensor, fuse_pooling: bool = False) -> Tensor:
        """The output ``[T, N, classes]`` for ``x`` ``[N, *input_shape]`` (held over T
        steps) or ``[T, N, *input_shape]``.

        ``fuse_pooling`` (inference: no gradient, no observer to call): each LIF and the
        average pooling after it run as one kernel that returns only the pooled spikes
        (:func:`dpap.snn.fused_lif.pooled_spikes`; the same output, 1.2× faster on the MNIST
        net). Off by default, because the neuron modules are then not called, so forward
        hooks on them (NeuroBench's activation probes) would miss those layers."""
        sample_dims = len(self.input_shape)
        if x.dim() == sample_dims + 1:
            time_major = False
        elif x.dim() == sample_dims + 2:
            time_major = True
        else:
            raise ValueError(f"expected input [N, {self.input_shape}] or [T, N, {self.input_shape}], got {tuple(x.shape)}")
        observers = [fn for fn, training_only in self._observers.values() if self.training or not training_only]
        for index, block in enumerate(self.blocks):
            pre = x
            if block.flatten:
                x = x.flatten(2) if time_major else x.flatten(1)
                pre = x
            current = fold_time(block.synapse, x, time_major)
            if block.norm is not None:
                current = fold_time(block.norm, current, time_major)
            if not time_major:
                current = current.unsqueeze(0).expand(self.time_steps, *current.shape)
                time_major = True
            if fuse_pooling and not observers and not torch.is_grad_enabled():
                pooled = _fused_neuron_and_pooling(block, current)
                if pooled is not None:
                    x = pooled
                    continue
            out = block.neuron(current)
            for fn in observers:
                fn(index, block, pre, out)
            x = fold_time(block.post, out, True) if len(block.post) else out
        return x

    def prunable(self) -> list[tuple[int, Block]]:
        return list(enumerate(self.blocks))


def build_network(
    arch: str,
    input_shape: Sequence[int],
    num_classes: int,
    kind: str = "snn",
    time_steps: int = 4,
    decay: float = 0.2,
    threshold: float = 0.5,
    surrogate_width: float = 1.0,
    detach_reset: bool = False,
    kernel: str = "auto",
) -> SpikingNetwork:
    """Build an SNN (``kind="snn"``) or DNN (``"dnn"``) from the paper's notation or a preset.

    >>> net = build_network("15C3-AP2-40C3-AP2-300FC-10FC", (1, 28, 28), 10)
    """
    if kind not in ("snn", "dnn"):
        raise ArchError(f"model.kind: got {kind!r}, expected 'snn' or 'dnn'")
    full = resolve_arch(arch, num_classes)
    specs = parse_arch(full)
    if specs[-1].op != "fc":
        raise ArchError(f"model.arch: {full!r} must end with an FC layer (the output layer)")
    if specs[-1].size != num_classes:
        raise ArchError(
            f"model.arch: the output layer {specs[-1].size}FC of {full!r} does not match the data set's {num_classes} classes; "
            f"end the string with {num_classes}FC"
        )

    def neuron() -> nn.Module:
        if kind == "snn":
            return LIF(decay, threshold, surrogate_width, detach_reset, kernel)
        return ReLUNeuron()

    shape = list(input_shape)  # current per-sample shape
    if len(shape) not in (1, 3):
        raise ArchError(f"input shape must be [C, H, W] or [features], got {shape}")
    blocks: list[Block] = []
    i = 0
    last_fc = max(j for j, s in enumerate(specs) if s.op == "fc")
    while i < len(specs):
        s = specs[i]
        if s.op not in ("conv", "fc"):
            raise ArchError(f"model.arch: {s.op.upper()} at position {i + 1} of {full!r} must follow a conv or FC layer")
        flatten = False
        in_spatial = 1
        if s.op == "conv":
            if len(shape) != 3:
                raise ArchError(f"model.arch: a conv layer after an FC layer in {full!r}")
            synapse: nn.Module = nn.Conv2d(shape[0], s.size, s.kernel, padding=s.kernel // 2)
            shape = [s.size, shape[1] + 2 * (s.kernel // 2) - s.kernel + 1, shape[2] + 2 * (s.kernel // 2) - s.kernel + 1]
        else:
            if len(shape) == 3:
                flatten = True
                in_spatial = shape[1] * shape[2]
                shape = [shape[0] * shape[1] * shape[2]]
            synapse = nn.Linear(shape[0], s.size)
            shape = [s.size]
        is_output = i == last_fc
        norm = None
        post: list[nn.Module] = []
        i += 1
        while i < len(specs) and specs[i].op not in ("conv", "fc"):
            t = specs[i]
            if t.op == "bn":
                if norm is not None or post:
                    raise ArchError(f"model.arch: BN must directly follow its conv/FC layer in {full!r}")
                norm = nn.BatchNorm2d(shape[0]) if len(shape) == 3 else nn.BatchNorm1d(shape[0])
            elif t.op in ("ap", "mp"):
                if len(shape) != 3:
                    raise ArchError(f"model.arch: pooling after an FC layer in {full!r}")
                if shape[1] < t.size or shape[2] < t.size:
                    raise ArchError(f"model.arch: {t.op.upper()}{t.size} on a {shape[1]}x{shape[2]} map in {full!r}; the input is too small")
                post.append(AvgPool2d(t.size) if t.op == "ap" else nn.MaxPool2d(t.size))
                shape = [shape[0], shape[1] // t.size, shape[2] // t.size]
            else:
                post.append(nn.Dropout(t.size / 100))
            i += 1
        if is_output and kind == "dnn":
            neu = None
        else:
            neu = neuron()
        if shape[-1] < 1 or (len(shape) == 3 and shape[1] < 1):
            raise ArchError(f"model.arch: the feature map vanishes in {full!r}")
        blocks.append(Block(synapse, norm, neu, post, flatten, in_spatial, is_output))
        if is_output and i < len(specs):
            raise ArchError(f"model.arch: nothing may follow the output layer in {full!r}")
    return SpikingNetwork(blocks, input_shape, num_classes, kind, time_steps, full)
