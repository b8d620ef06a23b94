"""The learning-rate schedule with one restart (``train.restart_epoch``), held to hand
numbers, and the rules a config must meet for it."""

from __future__ import annotations

import math

import pytest
import torch

from dpap.config import Config, ConfigError
from dpap.training.setup import continue_scheduler, fingerprint, make_scheduler


def lrs(cfg: Config) -> list[float]:
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=cfg.train.lr)
    sched = make_scheduler(cfg, opt)
    out = []
    for _ in range(cfg.train.epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_the_cosine_restarts_at_the_epoch_and_anneals_to_zero_by_the_end():
    cfg = Config.model_validate({"train": {"epochs": 10, "lr": 1e-3, "restart_epoch": 6, "restart_lr": 0.5}})
    got = lrs(cfg)
    # epochs 0-5: 1e-3 * (1 + cos(pi e / 6)) / 2; epochs 6-9: 0.5e-3 * (1 + cos(pi (e - 6) / 4)) / 2
    hand = [1e-3, 0.9330127e-3, 0.75e-3, 0.5e-3, 0.25e-3, 0.0669873e-3, 0.5e-3, 0.4267767e-3, 0.25e-3, 0.0732233e-3]
    assert got == pytest.approx(hand, rel=1e-6)
    plain = lrs(Config.model_validate({"train": {"epochs": 10, "lr": 1e-3}}))
    assert plain[3] == pytest.approx(1e-3 * (1 + math.cos(math.pi * 3 / 10)) / 2) and plain[6] < plain[5]


def test_a_resumed_or_continued_schedule_trains_on_at_its_rate(tmp_path):
    """A checkpoint resumed as the training loop resumes it (schedule built, then the
    optimizer's and the schedule's states loaded), and a schedule continued on a new
    optimizer (continue_scheduler, as a compaction does), give the next epoch the rate the
    schedule left, not train.lr (building a LambdaLR resets it)."""
    cfg = Config.model_validate({"train": {"epochs": 10, "lr": 1e-3, "restart_epoch": 6}})
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = make_scheduler(cfg, opt)
    for _ in range(7):
        opt.step()
        sched.step()
    expected = 0.5e-3 * (1 + math.cos(math.pi * 1 / 4)) / 2  # epoch 7
    assert opt.param_groups[0]["lr"] == pytest.approx(expected)
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, tmp_path / "ck.pt")
    saved = torch.load(tmp_path / "ck.pt", weights_only=True)

    resumed = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    resumed_sched = make_scheduler(cfg, resumed)
    resumed.load_state_dict(saved["optimizer"])
    resumed_sched.load_state_dict(saved["scheduler"])
    continued = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    continued.load_state_dict(saved["optimizer"])
    continued_sched = continue_scheduler(cfg, continued, saved["scheduler"])
    for o in (resumed, continued):
        assert o.param_groups[0]["lr"] == pytest.approx(expected)
    for s in (sched, resumed_sched, continued_sched):
        s.step()
    assert resumed.param_groups[0]["lr"] == continued.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])


def test_no_restart_keeps_the_fingerprints_of_earlier_runs():
    """Without a restart neither key enters a run's fingerprint: the values are those of
    the code before the keys existed, so checkpoints of earlier runs resume; with one,
    both do."""
    plain = Config.model_validate({"train": {"epochs": 10}})
    assert fingerprint(Config()) == "e0274be9c4982eec"
    assert fingerprint(Config.model_validate({"train": {"epochs": 7, "schedule": "step"}}), "abc") == "76e0861b4adb6e8f"
    assert fingerprint(Config.model_validate({"train": {"epochs": 10, "restart_lr": 0.3}})) == fingerprint(plain)
    restart = Config.model_validate({"train": {"epochs": 10, "restart_epoch": 6}})
    assert len({fingerprint(plain), fingerprint(restart), fingerprint(Config.model_validate({"train": {"epochs": 10, "restart_epoch": 6, "restart_lr": 0.3}}))}) == 3


def test_prune_units_enters_the_fingerprint_only_when_set():
    """``pruning.dpap.prune_units`` unset (null) leaves the fingerprints of runs from before
    the key; ``false`` and ``true`` are runs of their own (``true`` prunes as null does, but
    was asked for)."""
    assert fingerprint(Config.model_validate({"pruning": {"dpap": {"prune_units": None}}})) == "e0274be9c4982eec"
    off = fingerprint(Config.model_validate({"pruning": {"dpap": {"prune_units": False}}}))
    assert off != "e0274be9c4982eec"
    assert fingerprint(Config.model_validate({"pruning": {"dpap": {"prune_units": True}}})) not in ("e0274be9c4982eec", off)


@pytest.mark.parametrize("cfg,needle", [
    ({"train": {"epochs": 10, "restart_epoch": 10}}, "train.restart_epoch: got 10, expected an epoch from 1 to train.epochs - 1 = 9, or null"),
    ({"train": {"epochs": 1, "restart_epoch": 1}}, "train.restart_epoch: got 1, expected null (a run of 1 epoch has no epoch to restart at)"),
    ({"train": {"epochs": 10, "restart_epoch": 5, "schedule": "step"}},
     "train.restart_epoch: restarts a cosine schedule, but train.schedule is 'step'; set train.schedule to 'cosine' or train.restart_epoch to null"),
    ({"train": {"epochs": 30, "restart_epoch": 24}, "search": {"epochs": 10}}, "search.epochs: got 10, but train.restart_epoch 24 restarts the schedule after that"),
], ids=["past the run", "one epoch", "not cosine", "trials shorter"])
def test_a_restart_the_schedule_cannot_make_is_a_config_error(cfg, needle):
    with pytest.raises(ValueError) as e:
        Config.model_validate(cfg)
    assert needle in str(e.value)


def test_a_config_edited_in_python_is_checked_when_the_schedule_is_built():
    """Assignments skip the cross-group check; the schedule says it before any epoch."""
    cfg = Config.model_validate({"train": {"epochs": 6}})
    cfg.train.restart_epoch = 6
    with pytest.raises(ConfigError, match=r"^train\.restart_epoch: got 6, expected an epoch from 1 to train\.epochs - 1 = 5"):
        make_scheduler(cfg, torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3))
