"""A short real training run on scikit-learn's digits, checkpoints, and NaN handling."""

import dataclasses

import pytest
import torch

from dpap.config import Config
from dpap.training import DivergedError, Split, TrainingRun, convergence_epoch


def test_dpap_prunes_while_learning_on_real_digits(digits):
    train, test = digits
    cfg = Config()
    cfg.train.epochs = 10
    cfg.dpap.fc.beta = 1.5
    run = TrainingRun(cfg, train, test, (1, 8, 8), 10, progress=False)
    history = run.run()
    last = history[-1]
    assert last.compression > 0.2
    assert last.test_accuracy > 0.7  # chance is 0.1
    assert [m.compression for m in history] == sorted(m.compression for m in history)  # permanent
    # the zeros in the weights are exactly the pruned synapses of living layers
    fc = run.net.blocks[2].synapse.weight
    assert torch.equal(fc == 0, ~run.pruner.synapse_mask(2))


def test_dnn_mode_trains_with_cross_entropy(digits):
    train, test = digits
    cfg = Config()
    cfg.model.kind = "dnn"
    cfg.train.epochs = 3
    run = TrainingRun(cfg, train, test, (1, 8, 8), 10, progress=False)
    assert run.run()[-1].test_accuracy > 0.7


def test_checkpoint_resume_is_exact(digits, tmp_path):
    train, test = digits
    cfg = Config()
    cfg.train.epochs = 4
    cfg.model.encoding = "poisson"  # randomness in the data path too
    cfg.model.arch = "8C3-AP2-32C3-AP2-64FC-DO20-10FC"  # and in dropout
    cfg.dpap.fc.eta = 2.0
    cfg.dpap.fc.beta = 1.0
    full = TrainingRun(cfg, train, test, (1, 8, 8), 10, progress=False).run()

    ckpt = tmp_path / "last.pt"
    # a crash after epoch 2, its checkpoint written
    first = TrainingRun(cfg, train, test, (1, 8, 8), 10, checkpoint=ckpt, progress=False, callbacks=[_stop_after(2)])
    with pytest.raises(_Crash):
        first.run()
    resumed = TrainingRun(cfg, train, test, (1, 8, 8), 10, checkpoint=ckpt, progress=False)
    assert resumed.resumed and resumed.epoch == 2
    history = resumed.run()
    strip = lambda ms: [dataclasses.replace(m, seconds=0.0) for m in ms]  # noqa: E731
    assert strip(history) == strip(full)


class _Crash(Exception):
    pass


def _stop_after(n):
    def cb(run, metrics):
        if metrics.epoch + 1 == n:
            run.save_checkpoint()
            raise _Crash()

    return cb


def test_nan_loss_is_a_clear_error(digits):
    train, test = digits
    bad = Split(train.x.clone(), train.y)
    bad.x[0, 0, 0, 0] = float("nan")
    cfg = Config()
    cfg.model.kind = "dnn"
    cfg.train.epochs = 1
    with pytest.raises(DivergedError, match="epoch 1"):
        TrainingRun(cfg, bad, test, (1, 8, 8), 10, progress=False).run()


def test_convergence_epoch():
    from dpap.training import EpochMetrics

    ms = [EpochMetrics(e, 0, 0, acc, None, 0, 0, 0, 0, 0) for e, acc in enumerate([0.5, 0.9, 0.95])]
    assert convergence_epoch(ms, 0.9) == 2
    assert convergence_epoch(ms, 0.99) is None
    assert convergence_epoch(ms, None) is None


def test_at_chance_needs_the_whole_window_at_chance():
    from types import SimpleNamespace as M

    from dpap.training import at_chance

    h = [M(train_accuracy=a, test_accuracy=b) for a, b in ((0.12, 0.10), (0.149, 0.15), (0.10, 0.11))]
    assert at_chance(h, 10, 3)  # 1.5 / 10 = 0.15: every epoch at or under it
    assert not at_chance(h, 10, 4)  # fewer epochs than the window
    assert not at_chance(h, 10, 0)  # 0 = never
    assert not at_chance(h + [M(train_accuracy=0.16, test_accuracy=0.10)], 10, 3)  # train left chance
    assert not at_chance(h, 20, 3)  # 20 classes: chance limit 0.075


def _deterministic_runs(digits, device: str):
    """Two runs of a small pruning configuration with ``train.deterministic`` on, and what
    ``torch.are_deterministic_algorithms_enabled()`` said at the end of every epoch."""
    train, test = digits
    cfg = Config()
    cfg.train.epochs = 4
    cfg.train.device = device
    cfg.train.deterministic = True
    cfg.dpap.fc.eta = 2.0
    cfg.dpap.fc.beta = 1.0
    seen = []
    record = lambda run, m: seen.append(torch.are_deterministic_algorithms_enabled())  # noqa: E731
    strip = lambda ms: [dataclasses.replace(m, seconds=0.0) for m in ms]  # noqa: E731
    return [strip(TrainingRun(cfg, train, test, (1, 8, 8), 10, progress=False, callbacks=[record]).run()) for _ in range(2)], seen, cfg


def test_deterministic_kernels_are_on_for_the_run_only_and_change_nothing_on_cpu(digits):
    before = torch.are_deterministic_algorithms_enabled()
    (one, two), seen, cfg = _deterministic_runs(digits, "cpu")
    assert seen == [True] * 8  # on during every epoch of both runs
    assert torch.are_deterministic_algorithms_enabled() == before  # restored after each
    assert one == two and one[-1].compression > 0  # pruned, and repeated exactly
    cfg.train.deterministic = False  # the CPU's kernels are deterministic already: the same numbers
    train, test = digits
    plain = TrainingRun(cfg, train, test, (1, 8, 8), 10, progress=False).run()
    assert [dataclasses.replace(m, seconds=0.0) for m in plain] == one


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_deterministic_cuda_runs_repeat_to_the_last_digit(digits):
    """On a GPU two runs differ without ``train.deterministic`` (docs/pruning.md §2); with
    it they must repeat exactly."""
    (one, two), seen, _ = _deterministic_runs(digits, "cuda")
    assert all(seen)
    assert one == two and one[-1].compression > 0


def test_switching_deterministic_keeps_the_checkpoint():
    """How a GPU orders its sums is not part of what a run computes: a run resumes after
    ``train.deterministic`` was switched."""
    from dpap.training import fingerprint

    a = Config()
    b = Config()
    b.train.deterministic = True
    assert fingerprint(a) == fingerprint(b)
    b.train.threads = 3  # what does change the CPU's sums still counts
    assert fingerprint(a) != fingerprint(b)
