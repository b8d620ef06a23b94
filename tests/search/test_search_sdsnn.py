"""``dpap search`` over SD-SNN's own knobs (pruning.method: sdsnn), on a real journal
storage and MLflow store, toward a target compression."""

from __future__ import annotations

import optuna
import yaml

from dpap import search as S
from dpap.cli import main
from dpap.config import load_params

ARCH = "8C3-AP2-32FC-10FC"  # as in conftest.py

PARAMS = f"""\
data:
  name: digits
  processed_dir: {{processed}}
model:
  arch: {ARCH}
  time_steps: 2
pruning:
  method: sdsnn           # SD-SNN, pruning from epoch 5 of 7 (K' = 2)
train:
  epochs: 7
  batch_size: 100
  threads: 1
search:
  target: 0.2
  tolerance: 0.1
  trials: 4
  storage: {{storage}}
  ranges:
    pruning.sdsnn.fc_rate_gain: {{{{low: 0.05, high: 6.0, log: true}}}}
    pruning.sdsnn.fc_percentile: {{{{low: 50.0, high: 70.0}}}}
  control: pruning.sdsnn.fc_rate_gain
"""


def test_search_tunes_sdsnn_knobs_toward_the_target(tmp_path, processed_root, mlflow_uri, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "params.yaml"
    p.write_text(PARAMS.format(processed=processed_root, storage=tmp_path / "search" / "optuna.journal"))
    assert main(["search", "--params", str(p), "--quiet"]) == 0
    study = optuna.load_study(study_name="dpap-search", storage=S.make_storage(str(tmp_path / "search" / "optuna.journal")))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(study.trials) == 4 and done
    for t in study.trials:
        assert set(t.params) == {"pruning.sdsnn.fc_rate_gain", "pruning.sdsnn.fc_percentile"}
    # the control knob steers compression: more gain, more pruned (SD-SNN's rates grow with it)
    pairs = sorted((t.params["pruning.sdsnn.fc_rate_gain"], t.user_attrs["compression"]) for t in done)
    assert pairs[-1][1] >= pairs[0][1], pairs
    assert max(c for _, c in pairs) > 0.0
    # the best trial's SD-SNN knobs land under pruning.sdsnn in params.yaml
    assert main(["apply-best", "--params", str(p)]) == 0
    cfg = load_params(p)
    best = study.best_trial
    assert cfg.pruning.sdsnn.fc_rate_gain == best.params["pruning.sdsnn.fc_rate_gain"]
    assert yaml.safe_load(p.read_text())["pruning"]["method"] == "sdsnn"
