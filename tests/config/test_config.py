"""params.yaml validation: one-line errors naming the key and what is allowed."""

import re

import pytest
import yaml

from dpap.config import Config, ConfigError, config_from_dict, load_params


def test_defaults_are_valid_and_protocols_fill_in_knobs():
    cfg = config_from_dict({})
    assert cfg == Config()
    fc = cfg.pruning.dpap.resolved("fc")
    assert fc.protect == 2.0 and cfg.pruning.dpap.resolved("conv").protect == 5.0  # the paper's C
    ref = config_from_dict({"pruning": {"dpap": {"protocol": "reference"}}}).pruning.dpap
    assert ref.resolved("fc").beta == 10.0 and ref.resolved("conv").epsilon == 0.65 and ref.resolved_start_epoch() == 5
    mixed = config_from_dict({"pruning": {"dpap": {"protocol": "reference", "fc": {"beta": 3}}}}).pruning.dpap
    assert mixed.resolved("fc").beta == 3.0 and mixed.resolved("fc").eta == 13.0


@pytest.mark.parametrize(
    "raw, key, allowed",
    [
        ({"pruning": {"dpap": {"fc": {"eta": 0}}}}, "pruning.dpap.fc.eta", "> 0"),
        ({"pruning": {"dpap": {"conv": {"eta": -1.5}}}}, "pruning.dpap.conv.eta", "> 0"),
        ({"pruning": {"dpap": {"gamma": 1.5}}}, "pruning.dpap.gamma", "(0, 1]"),
        ({"pruning": {"dpap": {"gamma": 0}}}, "pruning.dpap.gamma", "(0, 1]"),
        ({"train": {"lr": "fast"}}, "train.lr", "a number"),
        ({"train": {"epochs": 2.5}}, "train.epochs", "an integer"),
        ({"train": {"optimizer": "rmsprop"}}, "train.optimizer", "'adam'"),
        ({"train": {"batchsize": 3}}, "train.batchsize", "unknown key"),
        ({"model": {"kind": "cnn"}}, "model.kind", "'snn'"),
        ({"pruning": {"enabled": "yes"}}, "pruning.enabled", "true or false"),
        ({"trian": {}}, "trian", "unknown key"),
        ({"search": {"target": 1.2}}, "search.target", "(0, 1)"),
        ({"search": {"ranges": {"pruning.dpap.fc.eta": {"low": 5, "high": 2}}}}, "search.ranges.pruning.dpap.fc.eta", "empty range"),
        ({"train": {"device": "tpu"}}, "train.device", "'cpu'"),
        ({"pruning": {"dpap": {"epsilon": -0.2}}}, "pruning.dpap.epsilon", "[0, 2]"),
        ({"pruning": {"dpap": {"max_death_share": 0}}}, "pruning.dpap.max_death_share", "(0, 1]"),
        ({"pruning": {"dpap": {"max_death_share": 1.5}}}, "pruning.dpap.max_death_share", "(0, 1]"),
        ({"pruning": {"dpap": {"protocol": "gradul"}}}, "pruning.dpap.protocol", "'gradual'"),
        ({"pruning": {"dpap": {"bounded": "yes"}}}, "pruning.dpap.bounded", "true or false"),
        ({"pruning": {"dpap": {"conv_mode": "kernel"}}}, "pruning.dpap.conv_mode", "'kernels'"),
        ({"search": {"control": "pruning.dpap.fc.beta", "ranges": {"pruning.dpap.epsilon": {"low": 0.5, "high": 1}}}}, "search.control", "one of the knobs"),
        ({"search": {"ranges": {"gamma": {"low": 0.5, "high": 1}}}}, "search.ranges.gamma", "unknown knob"),
    ],
)
def test_bad_values_name_the_key_and_the_allowed_values(raw, key, allowed):
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    msg = str(err.value)
    assert msg.startswith(key + ":") and allowed in msg and "\n" not in msg


def test_load_params_file_errors(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("train:\n  lr: [1, 2\n")
    with pytest.raises(ConfigError, match=r"params.yaml: not valid YAML \(line"):
        load_params(p)
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "missing.yaml")
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_params(p)
    p.write_text("pruning:\n  dpap:\n    fc:\n      eta: 4\n")
    assert load_params(p).pruning.dpap.fc.eta == 4.0
    assert load_params(p, {"pruning.dpap.fc.eta": 7, "train.epochs": 3}).pruning.dpap.fc.eta == 7.0
    with pytest.raises(ConfigError, match=r"pruning.dpap.fc.eta: got -1"):
        load_params(p, {"pruning.dpap.fc.eta": -1})


def test_exponent_without_a_dot_is_a_number(tmp_path):
    """YAML 1.1 reads `1e-3` as text; in a number field it means 0.001, not a type error."""
    p = tmp_path / "params.yaml"
    p.write_text("train:\n  lr: 1e-3\n  weight_decay: 5E-4\n")
    assert yaml.safe_load(p.read_text())["train"]["lr"] == "1e-3"  # what the YAML parser gives
    t = load_params(p).train
    assert t.lr == 0.001 and t.weight_decay == 0.0005
    for text, msg in [("lr: 1e", "train.lr: got '1e', expected a number"), ("lr: e5", "train.lr: got 'e5', expected a number"), ("epochs: 1e3", "train.epochs: got '1e3', expected an integer")]:
        p.write_text(f"train:\n  {text}\n")
        with pytest.raises(ConfigError, match=re.escape(msg)):
            load_params(p)


def test_command_line_overrides_are_read_as_yaml_and_bad_ones_named():
    from dpap.config.params_file import parse_overrides

    got = parse_overrides(["pruning.dpap.epsilon=1.2", " train.epochs = 3", "pruning.enabled=false", "search.tolerance=", "model.arch=8C3-AP2-32FC", "x.y=[1, 2]"])
    assert got == {"pruning.dpap.epsilon": 1.2, "train.epochs": 3, "pruning.enabled": False, "search.tolerance": None,
                   "model.arch": "8C3-AP2-32FC", "x.y": [1, 2]}
    assert parse_overrides(None) == {}
    for bad in ("nonsense", "=3", " =3"):
        with pytest.raises(ConfigError, match=rf"^-S '{re.escape(bad)}': expected KEY=VALUE"):
            parse_overrides(["a.b=1", bad], "-S")
    for bad in ("a=[1, 2", "model.arch=@x"):  # YAML that does not parse: named, not a traceback
        with pytest.raises(ConfigError, match=rf"^--set '{re.escape(bad)}': the value is not valid YAML \("):
            parse_overrides([bad])


def test_train_deterministic_must_be_true_or_false():
    assert config_from_dict({"train": {"deterministic": True}}).train.deterministic is True
    with pytest.raises(ConfigError, match=r"^train\.deterministic: got 'yes', expected true or false$"):
        config_from_dict({"train": {"deterministic": "yes"}})


def test_old_dpap_keys_stop_with_the_new_key_named(tmp_path):
    """params.yaml from before the ``pruning`` group: one line naming the key that replaced it."""
    p = tmp_path / "params.yaml"
    for text, old, new in [("dpap:\n  fc:\n    eta: 4\n", "dpap.fc.eta", "pruning.dpap.fc.eta"),
                           ("dpap:\n  enabled: false\n", "dpap.enabled", "pruning.enabled"),
                           ("dpap:\n  sdsnn:\n    spines: 3\n", "dpap.sdsnn.spines", "pruning.sdsnn.spines")]:
        p.write_text(text)
        with pytest.raises(ConfigError, match=rf"^{re.escape(str(p))}: {re.escape(old)}: this key is now {re.escape(new)} ") as err:
            load_params(p)
        assert "\n" not in str(err.value)
    p.write_text("train:\n  epochs: 2\n")
    with pytest.raises(ConfigError, match=r"^dpap\.epsilon: this key is now pruning\.dpap\.epsilon"):
        load_params(p, {"dpap.epsilon": 1.0})


def test_old_model_files_are_read_with_the_keys_moved():
    """A model file written before the ``pruning`` group keeps loading (its config migrated)."""
    from dpap.config import migrate_legacy

    old = {"dpap": {"enabled": True, "method": "sdsnn", "epsilon": 1.2, "sdsnn": {"spines": 4}},
           "search": {"ranges": {"fc.beta": {"low": 1.0, "high": 2.0}}, "control": "fc.beta"}}
    cfg = config_from_dict(migrate_legacy(old))
    assert cfg.pruning.method == "sdsnn" and cfg.pruning.dpap.epsilon == 1.2 and cfg.pruning.sdsnn.spines == 4
    assert cfg.search.control == "pruning.dpap.fc.beta" and list(cfg.search.ranges) == ["pruning.dpap.fc.beta"]


def test_every_registered_method_has_its_settings_group():
    """``pruning.<method>`` exists for each registered method, with its defaults."""
    from dpap.pruning.registry import METHODS

    cfg = config_from_dict({})
    for name, spec in METHODS.items():
        assert isinstance(getattr(cfg.pruning, name), spec.config)
    assert cfg.pruning.settings is cfg.pruning.dpap
    assert config_from_dict({"pruning": {"method": "sdsnn"}}).pruning.settings is not None
