"""The ``dpap`` command: ``dpap search``, ``dpap apply-best``, ...

Each subcommand is a function ``add_<name>(subparsers)`` in :data:`COMMANDS` that adds its
parser and sets ``func`` (called with the parsed namespace, returns the exit status).
Another module adds a subcommand by appending its own function to ``COMMANDS`` (or to the
list below). Heavy imports (torch, optuna, mlflow) happen inside ``func``, so ``dpap
--help`` stays fast.

Errors a user can act on print one line, ``error: ...``, on stderr and exit with the status
of their kind (:mod:`dpap.errors`, docs/faults.md) through the one front door every command
shares (:func:`dpap.runtime.entry.guarded`); an interrupted run exits 130.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from dpap import __version__
from dpap.runtime.entry import guarded


# ------------------------------------------------------------------------- search


def add_search(sub) -> None:
    p = sub.add_parser(
        "search",
        help="search a method's knobs (DPAP's β, ε, η, C, ...) for a target compression (Optuna)",
        description="Search the pruning method's knobs (ranges in params.yaml search.ranges) for the most "
        "accurate network whose compression is within --tolerance of --target. Re-running the same command "
        "resumes the study.",
    )
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--target", help="compression to hit, in (0, 1) (search.target)")  # checked by _flag_value
    p.add_argument("--tolerance", help="allowed |compression - target| (search.tolerance)")  # checked by _flag_value
    p.add_argument("--trials", help="total trials of the study, earlier ones included (search.trials)")  # checked by _flag_value
    p.add_argument("--epochs", help="training epochs per trial (search.epochs; default train.epochs)")  # checked by _flag_value
    p.add_argument("--storage", help="journal file or RDB URL, e.g. sqlite:///search/optuna.db (search.storage)")
    p.add_argument("--study-name", help="study name (search.study_name)")
    p.add_argument("--seed", type=int, help="sampler seed (search.seed)")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine sharing the trial budget (default 1); "
                   "other `dpap search` started on the same storage share it too")
    p.add_argument("--out", default="search", help="folder for best_params.yaml, the plot and summary.json (default: search)")
    p.add_argument("--set", "-S", dest="set", action="append", metavar="KEY=VALUE", help="override any param (repeatable), e.g. -S train.lr=0.01")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the summary")
    p.set_defaults(func=cmd_search)


def cmd_search(args) -> int:
    from dpap.config import load_params
    from dpap.config.params_file import parse_overrides

    overrides = parse_overrides(args.set)
    for flag, key in [("target", "search.target"), ("tolerance", "search.tolerance"), ("trials", "search.trials"), ("epochs", "search.epochs")]:
        if getattr(args, flag) is not None:  # a bad value is the flag's, not params.yaml's
            setattr(args, flag, _flag_value(f"--{flag}", key, getattr(args, flag)))
    for flag, key in [("target", "search.target"), ("tolerance", "search.tolerance"), ("trials", "search.trials"), ("epochs", "search.epochs"), ("storage", "search.storage"), ("study_name", "search.study_name"), ("seed", "search.seed")]:
        value = getattr(args, flag)
        if value is not None:
            overrides[key] = value
    cfg = load_params(args.params, overrides)

    from dpap import search as S

    S.check_search(cfg, args.workers)  # bad input fails before anything is loaded
    from dpap.data import load_processed

    data_dir = Path(cfg.data.processed_dir) / cfg.data.name
    load_processed(data_dir)  # a missing folder is a one-line error here, not a worker traceback
    tracking_uri = None
    if not args.no_mlflow:
        from dpap.tracking import default_tracking_uri

        tracking_uri = default_tracking_uri()
    res = S.run_search(cfg, data_dir, workers=args.workers, out_dir=args.out, tracking_uri=tracking_uri, overrides=overrides, quiet=args.quiet)
    print("\nsearch summary")
    print(S.format_summary(res))
    if res.plot_file:
        print(f"\nplot: {res.plot_file}")
    print(f"dashboard: dpap dashboard --storage {S.shown_storage(cfg.search.storage)}")  # a password stays out of logs
    if res.best_params_file is None:
        print(f"error: no feasible trial yet (|compression - {cfg.search.target}| <= {cfg.search.tolerance}); raise --trials to continue this study, or widen --tolerance / search.ranges", file=sys.stderr)
        return 1
    overlay = yaml.safe_load(Path(res.best_params_file).read_text())
    print(f"best params: {res.best_params_file}; apply with `dpap apply-best` or:")
    print("  " + S.dvc_exp_command(overlay))
    return 0


def _flag_value(flag: str, key: str, text: str) -> Any:
    """The value of ``flag`` (``--target``), which sets params key ``key``, checked by that
    key's own rule on its own: a bad value is :class:`~dpap.errors.ConfigError` naming the
    flag, ``--target: got 'x', expected a number in (0, 1)``."""
    from dpap.config.params import config_from_dict, set_dotted
    from dpap.errors import ConfigError

    try:
        value: Any = yaml.safe_load(text)  # 3 an int, 0.5 a number, as in params.yaml
    except yaml.YAMLError:
        value = text
    raw: dict = {}
    set_dotted(raw, key, value)
    try:
        config_from_dict(raw)
    except ConfigError as exc:
        message = str(exc)
        if message.startswith(f"{key}:"):
            raise ConfigError(f"{flag}{message[len(key):]}") from None
        raise
    return value


# ---------------------------------------------------------------------- apply-best


def add_apply_best(sub) -> None:
    p = sub.add_parser(
        "apply-best",
        help="merge search/best_params.yaml into params.yaml",
        description="Merge the best feasible trial's params (written by `dpap search`) into params.yaml, keeping its comments.",
    )
    p.add_argument("--best", default="search/best_params.yaml", help="overlay written by `dpap search` (default: search/best_params.yaml)")
    p.add_argument("--params", default="params.yaml", help="params file to update (default: params.yaml)")
    p.add_argument("--dry-run", action="store_true", help="show the changes and the `dvc exp run -S` line; write nothing")
    p.set_defaults(func=cmd_apply_best)


def cmd_apply_best(args) -> int:
    from dpap import search as S

    changes = S.apply_best(args.best, args.params, dry_run=args.dry_run)
    verb = "would change" if args.dry_run else "updated"
    if not changes:
        print(f"{args.params}: already has the best params; nothing to change")
    else:
        print(f"{args.params}: {verb} {len(changes)} value(s)")
        for key, old, new in changes:
            print(f"  {key}: {old} -> {new}")
    overlay = yaml.safe_load(Path(args.best).read_text())
    print("same as an experiment, without editing params.yaml:\n  " + S.dvc_exp_command(overlay))
    return 0


# --------------------------------------------------------------------------- main

# ----------------------------------------------------------------------- dashboard


def add_dashboard(sub) -> None:
    p = sub.add_parser(
        "dashboard",
        help="optuna-dashboard for a search, with the best feasible trial as best",
        description="Serve optuna-dashboard over the search's storage. Unlike plain `optuna-dashboard <storage>`, "
        "whose Best Trial card ignores constraints, it names the most accurate trial within the target band.",
    )
    p.add_argument("--params", default="params.yaml", help="params file naming search.storage (default: params.yaml)")
    p.add_argument("--storage", help="journal file or RDB URL (default: search.storage from --params)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    p.set_defaults(func=cmd_dashboard)


def cmd_dashboard(args) -> int:
    from dpap.config import ConfigError, load_params
    from dpap.search import is_rdb_url, shown_storage

    storage = args.storage
    if storage is None:
        storage = load_params(args.params).search.storage
    if not is_rdb_url(storage) and not Path(storage).is_file():
        raise ConfigError(f"{storage}: no search storage there; run `dpap search` first or name one with --storage")
    from dpap.search.dashboard import serve

    print(f"optuna-dashboard for {shown_storage(storage)} on http://{args.host}:{args.port}/dashboard (best = best feasible trial); Ctrl-C stops it", flush=True)
    try:
        serve(storage, host=args.host, port=args.port)
    except OSError as e:  # the port is taken, or the address is not ours
        raise ConfigError(f"{args.host}:{args.port}: {e.strerror or e}; choose another --port / --host") from None
    except KeyboardInterrupt:
        pass
    return 0


COMMANDS: list[Callable[[Any], None]] = [add_search, add_apply_best, add_dashboard]
"""Subcommand registrars; append ``add_<name>(subparsers)`` functions to add commands."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dpap", description="DPAP: developmental plasticity-inspired adaptive pruning")
    parser.add_argument("--version", action="version", version=f"dpap {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(lambda: args.func(args), signals=False)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
