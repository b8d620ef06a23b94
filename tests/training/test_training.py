"""A short real training run on scikit-learn's digits, checkpoints, and NaN handling."""

import dataclasses

import pytest
import torch

from dpap.config import Config
from dpap.training.history import DivergedError, Split, convergence_epoch
from dpap.training.loop import TrainingRun
from crash_after import Crash, stop_after


def test_dpap_prunes_while_learning_on_real_digits(digits):
    train, test = digits
    cfg = Config()
    cfg.train.epochs = 10
    cfg.pruning.dpap.fc.beta = 1.5
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
    cfg.pruning.dpap.fc.eta = 2.0
    cfg.pruning.dpap.fc.beta = 1.0
    full = TrainingRun(cfg, train, test, (1, 8, 8), 10, progress=False).run()

    ckpt = tmp_path / "last.pt"
    # a crash after epoch 2, its checkpoint written
    first = TrainingRun(cfg, train, test, (1, 8, 8), 10, checkpoint=ckpt, progress=False, callbacks=[stop_after(2)])
    with pytest.raises(Crash):
        first.run()
    resumed = TrainingRun(cfg, train, test, (1, 8, 8), 10, checkpoint=ckpt, progress=False)
    assert resumed.resumed and resumed.epoch == 2
    history = resumed.run()
    strip = lambda ms: [dataclasses.replace(m, seconds=0.0) for m in ms]  # noqa: E731
    assert strip(history) == strip(full)


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
    from dpap.training.history import EpochMetrics

    ms = [EpochMetrics(e, 0, 0, acc, None, 0, 0, 0, 0, 0) for e, acc in enumerate([0.5, 0.9, 0.95])]
    assert convergence_epoch(ms, 0.9) == 2
    assert convergence_epoch(ms, 0.99) is None
    assert convergence_epoch(ms, None) is None


def test_at_chance_needs_the_whole_window_at_chance():
    from types import SimpleNamespace as M

    from dpap.training.history import at_chance

    h = [M(train_accuracy=a, test_accuracy=b) for a, b in ((0.12, 0.10), (0.149, 0.15), (0.10, 0.11))]
    assert at_chance(h, 10, 3)  # 1.5 / 10 = 0.15: every epoch at or under it
    assert not at_chance(h, 10, 4)  # fewer epochs than the window
    assert not at_chance(h, 10, 0)  # 0 = never
    assert not at_chance(h + [M(train_accuracy=0.16, test_accuracy=0.10)], 10, 3)  # train left chance
    assert not at_chance(h, 20, 3)  # 20 classes: chance limit 0.075


def _deterministic_runs(train, test, shape, cfg, runs=2):
    """``runs`` runs of ``cfg`` with ``train.deterministic`` on, and the deterministic
    settings seen at the end of every epoch."""
    cfg.train.deterministic = True
    seen = []

    def record(run, m):
        seen.append(_deterministic_settings())

    strip = lambda ms: [dataclasses.replace(m, seconds=0.0) for m in ms]  # noqa: E731
    return [strip(TrainingRun(cfg, train, test, shape, 10, progress=False, callbacks=[record]).run()) for _ in range(runs)], seen


def _small_pruning_config(device: str) -> Config:
    cfg = Config()
    cfg.train.epochs = 4
    cfg.train.device = device
    cfg.pruning.dpap.fc.eta = 2.0
    cfg.pruning.dpap.fc.beta = 1.0
    return cfg


def _deterministic_settings():
    from torch.utils import deterministic as det

    return (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.benchmark, det.fill_uninitialized_memory)


def test_deterministic_kernels_are_on_for_the_run_only_and_change_nothing_on_cpu(digits):
    train, test = digits
    before = _deterministic_settings()
    cfg = _small_pruning_config("cpu")
    (one, two), seen = _deterministic_runs(train, test, (1, 8, 8), cfg)
    assert seen == [(True, True, False, False)] * 8  # on during every epoch of both runs
    assert _deterministic_settings() == before  # and restored after each
    assert one == two and one[-1].compression > 0  # pruned, and repeated exactly
    cfg.train.deterministic = False  # the CPU's kernels are deterministic already: the same numbers
    plain = TrainingRun(cfg, train, test, (1, 8, 8), 10, progress=False).run()
    assert [dataclasses.replace(m, seconds=0.0) for m in plain] == one


def test_deterministic_settings_are_restored_when_a_run_fails(digits):
    train, test = digits
    before = _deterministic_settings()
    cfg = _small_pruning_config("cpu")
    cfg.train.deterministic = True
    with pytest.raises(Crash):
        TrainingRun(cfg, train, test, (1, 8, 8), 10, progress=False, callbacks=[stop_after(1)]).run()
    assert _deterministic_settings() == before


def test_a_checkpoint_says_whether_all_its_epochs_were_deterministic(digits, tmp_path):
    """Epochs trained without ``train.deterministic`` and resumed with it: the run as a
    whole is not deterministic, and its checkpoint says so."""
    from dpap.training.setup import DETERMINISTIC_KEY

    train, test = digits
    cfg = _small_pruning_config("cpu")
    ckpt = tmp_path / "last.pt"
    with pytest.raises(Crash):
        TrainingRun(cfg, train, test, (1, 8, 8), 10, checkpoint=ckpt, progress=False, callbacks=[stop_after(2)]).run()
    cfg.train.deterministic = True
    resumed = TrainingRun(cfg, train, test, (1, 8, 8), 10, checkpoint=ckpt, progress=False)
    assert resumed.resumed and resumed.epoch == 2  # the flag does not invalidate the checkpoint
    resumed.run()
    assert resumed.extra[DETERMINISTIC_KEY] is False
    fresh = TrainingRun(cfg, train, test, (1, 8, 8), 10, checkpoint=tmp_path / "fresh.pt", progress=False)
    fresh.run()
    assert fresh.extra[DETERMINISTIC_KEY] is True
    assert torch.load(tmp_path / "fresh.pt", weights_only=False)["extra"][DETERMINISTIC_KEY] is True


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_deterministic_cuda_runs_repeat_to_the_last_digit(digits):
    """On a GPU two runs differ without ``train.deterministic`` (docs/pruning.md §2); with
    it they must repeat exactly. The MNIST net on digits scaled to 28×28, so that cuDNN's
    convolution gradients have enough to sum over."""
    import torch.nn.functional as F

    train, test = digits
    big = lambda s: Split(F.interpolate(s.x.float(), size=(28, 28), mode="bilinear"), s.y)  # noqa: E731
    cfg = _small_pruning_config("cuda")
    cfg.model.arch = "15C3-AP2-40C3-AP2-300FC-10FC"
    cfg.train.epochs = 3
    (one, two), seen = _deterministic_runs(big(train), big(test), (1, 28, 28), cfg)
    assert all(s[:3] == (True, True, False) for s in seen)
    assert one == two


def test_switching_deterministic_keeps_the_checkpoint():
    """How a GPU orders its sums is not part of what a run computes: a run resumes after
    ``train.deterministic`` was switched."""
    from dpap.training.setup import fingerprint

    a = Config()
    b = Config()
    b.train.deterministic = True
    assert fingerprint(a) == fingerprint(b)
    b.train.threads = 3  # what does change the CPU's sums still counts
    assert fingerprint(a) != fingerprint(b)
