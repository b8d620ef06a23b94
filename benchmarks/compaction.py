"""Compaction: what a physically smaller network saves, in a training step and in inference.

The paper's MNIST SNN (``mnist-snn``: ``15C3-AP2-40C3-AP2-300FC-10FC``, T=4, direct
encoding, CPU) with 0, 50, 75 and 90 % of its channels and hidden neurons pruned (random
unit masks, the same share in every layer but the output layer, which keeps its 10
units), compacted with :func:`dpap.compaction.compact`. For each level:

* a training step: forward, MSE on the output firing rate, backward, Adam step, batch 100;
* inference: 1000 samples under ``torch.inference_mode`` with ``fuse_pooling`` (as
  ``dpap.evaluation.metrics`` infers), in batches of ``--infer-chunk``
  (default 100: what ``dpap.evaluation.metrics`` does, in batches of ``train.batch_size``; pass
  ``--infer-chunk 1000`` for one pass of batch 1000: with glibc's defaults
  (``DPAP_MALLOC=default``) page faults on its 188 MB activations dominate it,
  docs/compaction.md §3).

Timings are interleaved (round robin over the levels, the order reversed every other
round) so that changes in machine load hit every level alike; the tables show medians,
relative to the dense network (level 0), on two clocks: the process's CPU time (user +
system; with ``--threads 1`` the work itself, whatever else a shared machine runs: the
default for the RESULT line) and wall-clock time (``--clock wall``). A row "masked, not
compacted" times the 50 % network as training runs it today: dense shapes, masks applied
around every optimizer step (``--no-masked`` leaves it out). The process keeps freed
memory, as the ``dpap`` command and the pipeline do (:mod:`dpap.runtime.allocator`; the header
says so; ``DPAP_MALLOC=default`` measures glibc's defaults, whose page faults slow the
dense network most: docs/compaction.md §3). ``--fusion`` also times each level's inference with every LIF and
the average pooling after it run apart (the full-size spikes written and read back), to
show what the fused inference kernel (:func:`dpap.snn.fused_lif.pooled_spikes`) saves.

FLOPs are counted analytically from the layer shapes: 2 per multiply-accumulate of the
conv and FC layers (a conv: out channels × in channels × k² × output positions; the first
layer runs once per sample under direct encoding, every other layer T times). A training
step counts the forward pass, the weight gradients and the input gradients of every layer
but the first: 3× the forward FLOPs less the first layer's input gradient. Neuron updates,
pooling and the optimizer are not counted (``--elementwise`` prints their share).

Last line: ``RESULT train_step_ratio_at_50=<step time at 50 % / dense>
inference_speedup_over_flop_reduction_at_50=<(dense / 50 % inference time) /
(dense / 50 % inference FLOPs)>``. Targets (issue #11): ≤ 0.7 and ≥ 0.8.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from dpap.runtime.allocator import keep_freed_memory
from dpap.compaction import compact
from dpap.snn.networks import SpikingNetwork, build_network
from dpap.snn.neurons import firing_rate_mse
from dpap.pruning import Pruner, PruningMethod

ARCH = "mnist-snn"
INPUT = (1, 28, 28)
CLASSES = 10
LR = 5e-3


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def random_unit_masks(net: SpikingNetwork, share: float, generator: torch.Generator) -> list[torch.Tensor]:
    """Per block, ``share`` of the units dead (at least one left), chosen at random; the
    output layer keeps all its units."""
    masks = []
    for block in net.blocks:
        alive = torch.ones(block.units, dtype=torch.bool)
        if not block.is_output:
            keep = max(1, round((1.0 - share) * block.units))
            alive[:] = False
            alive[torch.randperm(block.units, generator=generator)[:keep]] = True
        masks.append(alive)
    return masks


@dataclass
class LayerFlops:
    macs: int
    """Multiply-accumulates of the conv/FC layer per sample (all its runs)."""
    elementwise: int
    """Neuron, BN and pooling operations per sample (for the ``--elementwise`` share)."""
    first: bool


def layer_flops(net: SpikingNetwork, static_input: bool = True) -> list[LayerFlops]:
    """Per block, multiply-accumulates and element-wise operations per sample, from the
    layer shapes (module docstring)."""
    shape = list(net.input_shape)
    T = net.time_steps
    out = []
    for i, block in enumerate(net.blocks):
        runs = 1 if (i == 0 and static_input) else T
        syn = block.synapse
        if block.flatten:
            shape = [shape[0] * shape[1] * shape[2]]
        if isinstance(syn, nn.Conv2d):
            k, p, s = syn.kernel_size[0], syn.padding[0], syn.stride[0]
            H = (shape[1] + 2 * p - k) // s + 1
            W = (shape[2] + 2 * p - k) // s + 1
            macs = syn.out_channels * syn.in_channels * k * k * H * W
            shape = [syn.out_channels, H, W]
        else:
            macs = syn.out_features * syn.in_features
            shape = [syn.out_features]
        outputs = 1
        for d in shape:
            outputs *= d
        elementwise = outputs * T * 4  # LIF: decay, reset, add, threshold per step
        elementwise += outputs * runs * (1 + (2 if block.norm is not None else 0))  # bias, BN
        for m in block.post:
            if isinstance(m, (nn.AvgPool2d, nn.MaxPool2d)):
                k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
                shape = [shape[0], shape[1] // k, shape[2] // k]
                elementwise += outputs * T  # one op per input element
        out.append(LayerFlops(macs * runs, elementwise, i == 0))
    return out


def inference_flops(layers: list[LayerFlops], batch: int) -> int:
    return 2 * sum(l.macs for l in layers) * batch


def train_flops(layers: list[LayerFlops], batch: int) -> int:
    """Forward + weight gradients + input gradients (not of the first layer)."""
    return 2 * sum(l.macs * (2 if l.first else 3) for l in layers) * batch


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


@dataclass
class Level:
    share: float
    net: SpikingNetwork
    opt: torch.optim.Optimizer
    pruner: Optional[Pruner] = None
    """Set for the masked (not compacted) network: masks applied around every step."""
    times: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    """(``train``/``infer``, clock) → seconds per timed call."""

    def record(self, what: str, seconds: dict[str, float]) -> None:
        for clock, s in seconds.items():
            self.times.setdefault((what, clock), []).append(s)

    def median(self, what: str, clock: str) -> float:
        return statistics.median(self.times[(what, clock)])


def _timed(fn, device: torch.device) -> dict[str, float]:
    """Seconds ``fn()`` took on each clock: wall time, and the CPU time of this process
    (user + system, all its threads: with one thread, the work itself, whatever else
    the machine runs). On a GPU, up to the end of its queued kernels (wall time is then
    the one that counts: the CPU time is the host's share)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = {k: c() for k, c in CLOCKS.items()}
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return {k: c() - start[k] for k, c in CLOCKS.items()}


def train_step(level: Level, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    net = level.net.train()

    def step():
        loss = firing_rate_mse(net(x), y, CLASSES)
        level.opt.zero_grad(set_to_none=True)
        loss.backward()
        if level.pruner is not None:
            level.pruner.mask_gradients()
        level.opt.step()
        if level.pruner is not None:
            level.pruner.apply_masks()

    return _timed(step, x.device)


def inference(level: Level, x: torch.Tensor, chunk: int, apart: bool = False) -> dict[str, float]:
    """As ``dpap.evaluation.metrics`` infers: each LIF fused with the average pooling after it
    (``fuse_pooling``); ``apart``: the two as separate kernels (the full-size spikes
    written and read back), as a plain ``net(x)`` runs them."""
    net = level.net.eval()

    def forward():
        with torch.inference_mode():
            for start in range(0, len(x), chunk):
                net(x[start : start + chunk], fuse_pooling=not apart)

    return _timed(forward, x.device)


def report(levels: list[Level], clock: str, args) -> dict[int, tuple[float, float]]:
    """Print the table of one clock; return {percent pruned: (train step ratio,
    inference speed-up over FLOP reduction)}."""
    base = levels[0]
    base_layers = layer_flops(base.net)
    base_train, base_infer = base.median("train", clock), base.median("infer", clock)
    base_train_f, base_infer_f = train_flops(base_layers, args.train_batch), inference_flops(base_layers, args.infer_batch)
    print(f"{clock} clock, medians of {args.rounds} rounds:")
    print(f"{'pruned':>6} {'network':<30} {'params':>7} | {'train ms':>8} {'time':>6} {'FLOPs':>6} | "
          f"{'infer ms':>8} {'time':>6} {'FLOPs':>6} {'speed-up/FLOP red.':>18}")
    ratios = {}
    for level in levels:
        t_train, t_infer = level.median("train", clock), level.median("infer", clock)
        if level.pruner is not None:  # masked: the dense shapes, the dense FLOPs
            print(f"{level.share * 100:>5.0f}% {'masked, not compacted':<30} {'':>7} | {t_train * 1e3:>8.1f} {t_train / base_train:>5.3f}x {1:>5.3f}x | "
                  f"{t_infer * 1e3:>8.1f} {t_infer / base_infer:>5.3f}x {1:>5.3f}x {base_infer / t_infer:>18.3f}")
            continue
        layers = layer_flops(level.net)
        f_train, f_infer = train_flops(layers, args.train_batch) / base_train_f, inference_flops(layers, args.infer_batch) / base_infer_f
        speedup_over_reduction = (base_infer / t_infer) * f_infer
        ratios[round(level.share * 100)] = (t_train / base_train, speedup_over_reduction)
        params = sum(p.numel() for p in level.net.parameters())
        print(f"{level.share * 100:>5.0f}% {level.net.arch:<30} {params:>7d} | {t_train * 1e3:>8.1f} {t_train / base_train:>5.3f}x {f_train:>5.3f}x | "
              f"{t_infer * 1e3:>8.1f} {t_infer / base_infer:>5.3f}x {f_infer:>5.3f}x {speedup_over_reduction:>18.3f}")
        if args.elementwise and clock == args.clock:
            macs = 2 * sum(l.macs for l in layers)
            elem = sum(l.elementwise for l in layers)
            print(f"{'':>6} element-wise ops: {elem / (macs + elem):.1%} of forward operations")
    return ratios


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--levels", default="0,50,75,90", help="percent of channels/neurons pruned, comma-separated (0 is added)")
    ap.add_argument("--train-batch", type=int, default=100)
    ap.add_argument("--infer-batch", type=int, default=1000, help="samples inferred per timing")
    ap.add_argument("--infer-chunk", type=int, default=100, help="... in batches of this many (dpap.evaluation.metrics: train.batch_size)")
    ap.add_argument("--time-steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=7, help="timed round-robin rounds (medians over them)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    ap.add_argument("--threads", type=int, default=cores())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                    help="the clock of the RESULT line (both tables are printed); cpu: this process's CPU time, robust to other "
                         "load on a shared machine with --threads 1; wall: with several threads")
    ap.add_argument("--no-masked", action="store_true", help="do not time the masked, not compacted, 50 %% network")
    ap.add_argument("--elementwise", action="store_true", help="also print the share of neuron/pooling operations")
    ap.add_argument("--fusion", action="store_true",
                    help="also time inference with each LIF and its average pooling apart (not fused), and print the speed-up")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"),
                    help="cpu (default), cuda or auto; on a GPU the RESULT line uses the wall clock")
    args = ap.parse_args(argv)
    from dpap.config import ConfigError
    from dpap.training.setup import resolve_device

    try:
        device = resolve_device(args.device)
    except ConfigError as exc:
        ap.error(str(exc).replace("train.device", "--device"))
    if device.type == "cuda":
        args.clock = "wall"
    try:
        shares = sorted({0.0} | {float(s) / 100 for s in args.levels.split(",") if s.strip()})
    except ValueError:
        ap.error(f"--levels: expected percentages like 0,50,75,90, got {args.levels!r}")
    if any(not 0 <= s < 1 for s in shares):
        ap.error(f"--levels: every level must be in [0, 100), got {args.levels!r}")

    malloc = keep_freed_memory()  # as the dpap command does; DPAP_MALLOC=default to compare
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dense = build_network(ARCH, INPUT, CLASSES, time_steps=args.time_steps)
    g = torch.Generator().manual_seed(args.seed)
    levels = []
    for share in shares:
        masks = random_unit_masks(dense, share, g)
        net = compact(dense, masks).net if share > 0 else dense
        levels.append(Level(share, net, torch.optim.Adam(net.parameters(), lr=LR)))
        if share == 0.5 and not args.no_masked:  # what a pruned network costs without compaction
            masked = copy.deepcopy(dense)
            pruner = Pruner(masked, PruningMethod())
            pruner.units = [m.clone() for m in masks]
            pruner.refresh_masks()
            pruner.apply_masks()
            levels.append(Level(share, masked, torch.optim.Adam(masked.parameters(), lr=LR), pruner))
    for level in levels:  # in place: the optimizers keep their parameters; a pruner follows at its first call
        level.net.to(device)
    x_train = torch.rand(args.train_batch, *INPUT, generator=g).to(device)
    y_train = torch.randint(0, CLASSES, (args.train_batch,), generator=g).to(device)
    x_infer = torch.rand(args.infer_batch, *INPUT, generator=g).to(device)

    for r in range(args.warmup + args.rounds):
        for level in levels if r % 2 == 0 else levels[::-1]:
            t_train = train_step(level, x_train, y_train)
            t_infer = inference(level, x_infer, args.infer_chunk)
            t_apart = inference(level, x_infer, args.infer_chunk, apart=True) if args.fusion and level.pruner is None else None
            if r >= args.warmup:
                level.record("train", t_train)
                level.record("infer", t_infer)
                if t_apart is not None:
                    level.record("apart", t_apart)

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{args.threads} thread(s)"
    print(f"torch {torch.__version__}, {where}, {ARCH} T={args.time_steps}, train batch {args.train_batch}, "
          f"inference {args.infer_batch} samples in batches of {args.infer_chunk}; allocator: {malloc}")
    ratios = {}
    for clock in sorted(CLOCKS, key=lambda c: c == args.clock):  # the RESULT's clock last
        ratios = report(levels, clock, args)
        print()
    if args.fusion:
        print(f"inference with each LIF and its pooling fused (the default) and apart ({args.clock} clock, medians):")
        print(f"{'pruned':>6} {'fused ms':>9} {'apart ms':>9} {'speed-up':>9}")
        for level in levels:
            if level.pruner is None:
                fused, apart = level.median("infer", args.clock), level.median("apart", args.clock)
                print(f"{level.share * 100:>5.0f}% {fused * 1e3:>9.1f} {apart * 1e3:>9.1f} {apart / fused:>8.2f}x")
        print()
    at50 = ratios.get(50)
    if at50 is None:
        print("RESULT train_step_ratio_at_50=nan inference_speedup_over_flop_reduction_at_50=nan")
    else:
        print(f"RESULT train_step_ratio_at_50={at50[0]:.3f} inference_speedup_over_flop_reduction_at_50={at50[1]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
