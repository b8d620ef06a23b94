"""The learning-rate schedule with one restart (``train.restart_epoch``), held to hand
numbers, and the rules a config must meet for it."""

from __future__ import annotations

import math

import pytest
import torch

from dpap.config import Config, ConfigError
from dpap.training.setup import fingerprint, make_scheduler


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


def test_the_restarted_schedule_resumes_from_its_state_dict():
    cfg = Config.model_validate({"train": {"epochs": 10, "lr": 1e-3, "restart_epoch": 6}})
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = make_scheduler(cfg, opt)
    for _ in range(7):
        opt.step()
        sched.step()
    opt2 = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    opt2.load_state_dict(opt.state_dict())
    sched2 = make_scheduler(cfg, opt2)
    sched2.load_state_dict(sched.state_dict())
    sched.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"]) == pytest.approx(0.5e-3 * (1 + math.cos(math.pi * 2 / 4)) / 2)


def test_no_restart_keeps_the_fingerprints_of_earlier_runs():
    """Without a restart neither key enters a run's fingerprint (checkpoints of runs from
    before the keys resume); with one, both do."""
    plain = Config.model_validate({"train": {"epochs": 10}})
    unused_share = Config.model_validate({"train": {"epochs": 10, "restart_lr": 0.3}})
    assert fingerprint(unused_share) == fingerprint(plain)
    restart = Config.model_validate({"train": {"epochs": 10, "restart_epoch": 6}})
    assert len({fingerprint(plain), fingerprint(restart), fingerprint(Config.model_validate({"train": {"epochs": 10, "restart_epoch": 6, "restart_lr": 0.3}}))}) == 3


@pytest.mark.parametrize("train,needle", [
    ({"epochs": 10, "restart_epoch": 10}, "train.restart_epoch: got 10, expected an epoch from 1 to train.epochs - 1 = 9, or null"),
    ({"epochs": 10, "restart_epoch": 5, "schedule": "step"}, "train.restart_epoch: restarts a cosine schedule, but train.schedule is 'step'"),
], ids=["past the run", "not cosine"])
def test_a_restart_the_schedule_cannot_make_is_one_line(train, needle):
    with pytest.raises((ConfigError, ValueError)) as e:
        Config.model_validate({"train": train})
    assert needle in str(e.value)
