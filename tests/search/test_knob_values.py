"""The knobs a search starts from (params.yaml's own values, the study's first trial) are
the values the run would use, also for conv layers pruned by kernels (``conv_mode``)."""

from __future__ import annotations

from pathlib import Path

from dpap import search as S
from dpap.config import load_params
from dpap.pruning.dpap.config import DPAPConfig, PROTOCOL_DEFAULTS
from dpap.pruning.dpap.method import conv_mode_of
from dpap.search.space import current_knobs
from dpap.training.setup import make_network

ROOT = Path(__file__).resolve().parents[2]
RANGES = {"pruning.dpap.conv.epsilon": {"low": 0.5, "high": 1.5}, "pruning.dpap.fc.beta": {"low": 2.0, "high": 6.0}}


def test_conv_knobs_resolve_per_conv_mode():
    gradual = PROTOCOL_DEFAULTS["gradual"]
    d = DPAPConfig()
    assert d.knob("conv.epsilon") == gradual["conv"]["epsilon"] == 0.9
    assert d.knob("conv.epsilon", "kernels") == gradual["conv_kernels"]["epsilon"] == 1.1
    assert d.knob("conv.beta", "kernels") == gradual["conv"]["beta"]  # only ε differs by mode
    own = DPAPConfig(conv={"epsilon": 1.3})
    assert own.knob("conv.epsilon") == own.knob("conv.epsilon", "kernels") == 1.3
    assert DPAPConfig(epsilon=0.7).knob("conv.epsilon", "kernels") == 0.7


def test_the_network_decides_the_mode_and_the_first_trial_uses_it(tmp_path):
    cfg = load_params(ROOT / "params.yaml", {"search.ranges": RANGES, "search.control": None, "model.arch": "16C3-AP2-32C3-AP2-10FC"})
    conv_heavy = make_network(cfg, (1, 8, 8), 10)  # 8x8 digits: the conv layers hold most of it
    fc_heavy = make_network(load_params(ROOT / "params.yaml", {"model.arch": "8C3-AP2-300FC-10FC"}), (1, 28, 28), 10)
    assert conv_mode_of(cfg.pruning.dpap, conv_heavy) == "kernels"
    assert conv_mode_of(cfg.pruning.dpap, fc_heavy) == "channels"
    assert current_knobs(cfg, "kernels")["pruning.dpap.conv.epsilon"] == 1.1
    assert current_knobs(cfg, "channels")["pruning.dpap.conv.epsilon"] == 0.9

    study = S.open_study(cfg, str(tmp_path / "j.log"), "s", "hash", conv_mode="kernels")
    first = study.get_trials(deepcopy=False)[0]
    assert first.system_attrs["fixed_params"]["pruning.dpap.conv.epsilon"] == 1.1 and first.user_attrs["current_params"]
