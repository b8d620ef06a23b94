"""benchmarks/frontier.py reuses a finished run's record only when it was made with the same
configuration, DPAP's protocol defaults included: a ``null`` in params.yaml means "the
protocol's value", so a record from before a default changed must not be served."""

import importlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def frontier():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        yield importlib.import_module("frontier")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def record(path: Path, config: dict) -> None:
    path.write_text(json.dumps({"done": True, "config": config, "history": []}))


def test_a_record_made_under_other_dpap_defaults_is_not_reused(frontier, tmp_path):
    cfg = frontier.make_config("digits", ROOT / "params.yaml", {"pruning.method": "dpap", "pruning.dpap.epsilon": 1.2})
    path = tmp_path / "run.json"
    now = frontier.config_record(cfg)
    assert now["resolved_dpap"]["conv"]["beta"] == cfg.pruning.dpap.resolved("conv").beta
    record(path, now)
    assert frontier.finished(path, cfg) is not None
    before = json.loads(json.dumps(now))
    before["resolved_dpap"]["conv"]["beta"] = 6.0  # the same params.yaml, an older default
    record(path, before)
    assert frontier.finished(path, cfg) is None
    kernels = json.loads(json.dumps(now))
    assert now["resolved_dpap"]["conv_kernels"]["epsilon"] == cfg.pruning.dpap.resolved("conv", "kernels").epsilon
    kernels["resolved_dpap"]["conv_kernels"]["epsilon"] = 0.9  # channels' ε of a network pruned by kernels changed
    assert now["resolved_dpap"]["fc_input"]["epsilon"] == cfg.pruning.dpap.resolved("fc", reads_input=True).epsilon
    record(path, kernels)
    assert frontier.finished(path, cfg) is None
    old = dict(now)
    del old["resolved_dpap"]  # a record written before defaults were recorded
    record(path, old)
    assert frontier.finished(path, cfg) is None


def test_records_of_other_methods_do_not_depend_on_dpap_defaults(frontier, tmp_path):
    cfg = frontier.make_config("digits", ROOT / "params.yaml", {"pruning.method": "gmp", "pruning.gmp.target": 0.5})
    path = tmp_path / "run.json"
    plain = cfg.to_dict()
    record(path, plain)
    assert frontier.finished(path, cfg) is not None
    record(path, {**plain, "resolved_dpap": {"conv": {"beta": 6.0}}})
    assert frontier.finished(path, cfg) is not None
    record(path, {**plain, "train": {**plain["train"], "epochs": 7}})
    assert frontier.finished(path, cfg) is None


def test_a_record_made_before_a_setting_existed_is_reused_when_the_setting_is_left_at_null(frontier, tmp_path):
    cfg = frontier.make_config("digits", ROOT / "params.yaml", {"pruning.method": "dpap"})
    path = tmp_path / "run.json"
    now = frontier.config_record(cfg)
    assert now["pruning"]["dpap"]["conv_mode"] is None
    older = json.loads(json.dumps(now))
    del older["pruning"]["dpap"]["conv_mode"]  # written before pruning.dpap.conv_mode existed
    record(path, older)
    assert frontier.finished(path, cfg) is not None
    set_now = frontier.make_config("digits", ROOT / "params.yaml", {"pruning.method": "dpap", "pruning.dpap.conv_mode": "kernels"})
    assert frontier.finished(path, set_now) is None  # but not when the new setting is set
