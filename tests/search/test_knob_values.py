"""The knobs a search starts from (params.yaml's own values, the study's first trial)
resolve as the run resolves them, also for conv layers pruned by kernels (``conv_mode``).
(A searched top-level ``epsilon`` sets conv and FC ε alike, so its anchor trial has the FC
layers' ε in the conv layers too.)"""

from __future__ import annotations

from pathlib import Path

import optuna

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


def test_a_search_on_a_conv_heavy_network_starts_from_its_kernel_mode_knobs(make_params, processed_root, tmp_path):
    """``run_search`` builds the network, finds it pruned by kernels and anchors the study
    on conv ε 1.1 (the channels' value under ``kernels``), the value params.yaml's run uses."""
    cfg = load_params(make_params(epochs=1, trials=1), {"model.arch": "16C3-AP2-32C3-AP2-10FC", "search.control": None,
                                                       "search.ranges": {"pruning.dpap.conv.epsilon": {"low": 0.5, "high": 1.5}}})
    S.run_search(cfg, processed_root / "digits", out_dir=tmp_path / "search", quiet=True)
    store = S.make_storage(str(cfg.search.storage))
    trial = optuna.load_study(study_name=cfg.search.study_name, storage=store).trials[0]
    assert trial.user_attrs["current_params"] and trial.params["pruning.dpap.conv.epsilon"] == 1.1
