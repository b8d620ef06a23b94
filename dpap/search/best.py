"""The best feasible trial as a params.yaml overlay (``best_params.yaml``), and applying it
(``dpap apply-best``, or the printed ``dvc exp run -S`` line)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import yaml

from dpap.config import Config, ConfigError, set_dotted
from dpap.config.params_file import flatten_dotted, merge_into_params
from dpap.search.errors import SearchError
from dpap.search.files import atomic_write
from dpap.search.space import best_overrides, search_epochs


def best_params_overlay(study: optuna.Study, cfg: Config, overrides: dict[str, Any]) -> dict[str, Any]:
    """The params.yaml overlay of the best feasible trial: its knobs, ``train.epochs`` when
    the search trained for another number of epochs, and the user's other overrides."""
    best = study.best_trial
    flat: dict[str, Any] = {k: v for k, v in overrides.items() if not k.startswith("search.")}
    if search_epochs(cfg) != cfg.train.epochs:
        flat["train.epochs"] = search_epochs(cfg)
    flat.update(best_overrides(best))
    nested: dict[str, Any] = {}
    for k, v in flat.items():
        set_dotted(nested, k, v)
    return nested


def write_best_params(path: Path, study: optuna.Study, cfg: Config, overrides: dict[str, Any]) -> None:
    best = study.best_trial
    acc_name = "validation" if best.user_attrs.get("val_accuracy") is not None else "test"
    header = (
        f"# Best feasible trial of `dpap search` (study {study.study_name!r}, trial {best.number}).\n"
        f"# target compression {cfg.search.target} ± {cfg.search.tolerance}; achieved {best.user_attrs.get('compression'):.4f}"
        f" at {acc_name} accuracy {best.value:.4f}, seed {cfg.train.seed}, {search_epochs(cfg)} epochs.\n"
        f"# Apply with `dpap apply-best` (merges into params.yaml) or the printed `dvc exp run -S` line.\n"
    )
    text = header + yaml.safe_dump(best_params_overlay(study, cfg, overrides), sort_keys=True)
    atomic_write(path, lambda tmp: tmp.write_text(text))


def dvc_exp_command(overlay: dict[str, Any]) -> str:
    return "dvc exp run " + " ".join(f"-S {k}={v!r}" if isinstance(v, str) else f"-S {k}={v}" for k, v in flatten_dotted(overlay, keep=()).items())


def apply_best(best_file: str | Path, params_file: str | Path, *, dry_run: bool = False) -> list[tuple[str, Any, Any]]:
    """Merge ``best_params.yaml`` into ``params.yaml`` in place, keeping its comments and
    layout (ruamel.yaml round trip). Validates the result before writing. Returns the
    changes as ``(key, old, new)``."""
    best_file, params_file = Path(best_file), Path(params_file)
    if not best_file.is_file():
        raise SearchError(f"{best_file}: not found; run `dpap search` first (it writes the best feasible trial there)")
    overlay = yaml.safe_load(best_file.read_text()) or {}
    if not isinstance(overlay, dict) or not overlay:
        raise SearchError(f"{best_file}: expected a mapping of params (dpap: {{conv: ..., fc: ...}})")
    if not params_file.is_file():
        raise SearchError(f"{params_file}: not found; run from the repository root or pass --params")
    try:
        changes = merge_into_params(params_file, flatten_dotted(overlay, keep=()), dry_run=dry_run)
    except ConfigError as exc:
        raise SearchError(f"{best_file}: applying it would make {params_file} invalid: {exc}") from None
    return changes
