"""The baselines (gmp, random, gradr, deepr) in a real training on scikit-learn's digits
(3 epochs of params.yaml's network, 16C3-AP2-32C3-AP2-128FC-10FC): each prunes what it
defines, and a run stopped after epoch 2 resumes from its checkpoint to the same history
as the uninterrupted one (method state, generators and, for channel GMP, a network
compacted while training included)."""

import dataclasses

import pytest

from dpap.config import Config
from dpap.pruning.schedule import pruned_count
from dpap.training.loop import TrainingRun
from crash_after import Crash, stop_after

# dense synapses of the digits network: 16 conv1 kernels, 16·32 conv2 kernels, 128·128 FC, 10·128 output
DENSE = [16, 512, 16384, 1280]
UNITS = [16, 32, 128, 10]


def config(method: str, **settings) -> Config:
    cfg = Config()
    cfg.train.epochs = 3
    cfg.pruning.method = method
    group = getattr(cfg.pruning, method)
    for k, v in settings.items():
        setattr(group, k, v)
    return cfg


def run_and_resume(cfg, digits, tmp_path):
    """The uninterrupted run, and one stopped after epoch 2 then resumed; the histories
    must be the same."""
    train, test = digits
    full = TrainingRun(cfg, train, test, (1, 8, 8), 10, progress=False)
    history = full.run()
    ckpt = tmp_path / "last.pt"
    first = TrainingRun(cfg, train, test, (1, 8, 8), 10, checkpoint=ckpt, progress=False, callbacks=[stop_after(2)])
    with pytest.raises(Crash):
        first.run()
    resumed = TrainingRun(cfg, train, test, (1, 8, 8), 10, checkpoint=ckpt, progress=False)
    assert resumed.resumed and resumed.epoch == 2
    strip = lambda ms: [dataclasses.replace(m, seconds=0.0) for m in ms]  # noqa: E731
    assert strip(resumed.run()) == strip(history)
    return full, history


def alive(history, epoch, key="synapses_alive"):
    return [row[key] for row in history[epoch].layers]


@pytest.mark.parametrize("method", ["gmp", "random"])
def test_gmp_and_random_reach_the_target_on_the_end_epoch_and_resume(method, digits, tmp_path):
    """Target 0.6, end_fraction 0.5 of 3 epochs → end epoch 1: every hidden layer at 60 %
    of its synapses from epoch 1 on (16·0.6 → 10, 512·0.6 → 307, 16384·0.6 → 9830 pruned),
    the output layer whole; random prunes GMP's counts."""
    run, history = run_and_resume(config(method, target=0.6), digits, tmp_path)
    expected = [d - pruned_count(0.6, d) for d in DENSE[:3]] + [DENSE[3]]
    assert expected == [6, 205, 6554, 1280]
    assert alive(history, 1) == expected and alive(history, 2) == expected
    assert alive(history, 0)[2] == DENSE[2] - pruned_count(0.6 * (1 - 0.5**3), DENSE[2])  # s_0 = 0.525: 8602 pruned
    w = run.net.blocks[2].synapse.weight
    assert bool(((w == 0) == ~run.pruner.synapse_mask(2)).all())


def test_channel_gmp_kills_whole_units_compacts_and_resumes(digits, tmp_path):
    """structure: channel, target 0.5: s_0 = 0.4375 of the units after epoch 0 (7 of 16, 14
    of 32, 56 of 128), half of them from epoch 1 on (8, 16, 64). After epoch 0 a layer lost
    ≥ 25 % of its units, so the run was compacted (epochs 1 and 2 train 9, 18, 72 units);
    it still resumes exactly."""
    run, history = run_and_resume(config("gmp", target=0.5, structure="channel"), digits, tmp_path)
    assert alive(history, 0, "units_alive") == [9, 18, 72, 10]
    assert alive(history, 1, "units_alive") == alive(history, 2, "units_alive") == [8, 16, 64, 10]
    assert [row["width"] for row in history[0].layers] == [16, 32, 128, 10]
    assert [row["width"] for row in history[2].layers] == [9, 18, 72, 10]  # trained compact


def test_gradr_prunes_and_resumes_and_alpha_prunes_more(digits, tmp_path):
    """Grad R in a real run: synapses switch off (and may come back); the run resumes
    exactly (θ in the checkpoint); α = 1 prunes more than α = 0 after the same epochs."""
    run, history = run_and_resume(config("gradr", alpha=1.0, lr=0.005), digits, tmp_path)
    train, test = digits
    no_prior = TrainingRun(config("gradr", alpha=0.0, lr=0.005), train, test, (1, 8, 8), 10, progress=False).run()
    assert history[-1].compression > no_prior[-1].compression > 0.0
    # the network's zeros are the synapses that are off (FC: one weight each)
    theta = run.pruner.method.layers[2]["theta"]
    assert bool(((run.net.blocks[2].synapse.weight == 0) == (theta <= 0)).all())
    assert bool((run.pruner.synapse_mask(2) == (theta > 0)).all())


def test_deepr_keeps_its_connection_counts_through_training_and_resumes(digits, tmp_path):
    """density 0.3: round(0.3·n) active weights in every hidden layer at every epoch's end
    (FC: 4915 of 16384 synapses), though connections were rewired."""
    run, history = run_and_resume(config("deepr", density=0.3, lr=0.005, temperature=1e-4), digits, tmp_path)
    counts = [round(0.3 * n) for n in (16 * 9, 512 * 9, 16384)]
    assert run.pruner.method.active_counts() == counts + [-1]
    assert [alive(history, e)[2] for e in range(3)] == [4915] * 3
    assert sum(row.get("rewired", 0) for m in history for row in m.layers) > 0
