"""The Optuna objective of the search: sample the knobs, train once with
:func:`dpap.training.loop.fit` (the project's only training loop), return the accuracy."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import optuna

from dpap.config import Config
from dpap.training.history import DivergedError
from dpap.training.loop import fit
from dpap.search.feasibility import CONSTRAINT, TrialMonitor, accuracy_of, constraint_value
from dpap.search.space import search_epochs, suggest_overrides, trial_config

if TYPE_CHECKING:  # pragma: no cover
    from dpap.search.tracker import SearchTracker


def make_objective(
    cfg: Config,
    data,
    *,
    tracker: Optional["SearchTracker"] = None,
    checkpoint_dir: Optional[str | Path] = None,
) -> Callable[[optuna.Trial], float]:
    """A plain Optuna objective: sample the knobs, ``fit`` once, return the accuracy.

    Sets the constraint ``compression`` and the user attributes ``compression``,
    ``test_accuracy``, ``val_accuracy``, ``params_retained``, ``epochs_run``, ``feasible``
    (and ``mlflow_run_id`` with a ``tracker``; ``resumed_epochs`` when it resumed a lost
    trial's checkpoint). A run that raises (diverged: :class:`DivergedError`; out of
    memory; a sample the training refuses) sets ``fail_reason``, ends its MLflow run
    FAILED and re-raises (``study.optimize(..., catch=(Exception,))``).

    With ``checkpoint_dir``, each trial keeps an epoch checkpoint there, named by the
    trial it retries (``retry_of``) or its own number, so a retry resumes where the lost
    trial stopped; it is deleted when the trial ends, and kept when the trial is
    interrupted or was taken away from this worker (failed for a missing heartbeat)."""

    def objective(trial: optuna.Trial) -> float:
        overrides = suggest_overrides(trial, cfg)
        tcfg = trial_config(cfg, overrides)
        monitor = TrialMonitor(trial, cfg)
        callbacks: list = [monitor]
        logger = None
        if tracker is not None:  # logs each epoch before the monitor may stop the trial
            logger = tracker.trial_callback(trial, overrides, data_hash=getattr(data, "meta", {}).get("hash", ""), epochs=search_epochs(cfg))
            if logger is not None:  # None: the store failed (one warning); the trial goes on untracked
                callbacks.insert(0, logger)

        def end(state: str, final: dict[str, float], reason: Optional[str] = None) -> None:
            if logger is not None:
                tracker.end_trial(logger, monitor.run, trial, state, final, reason)

        ckpt = None
        if checkpoint_dir is not None:
            key = trial.user_attrs.get("retry_of", trial.number)
            ckpt = Path(checkpoint_dir) / f"trial-{key}.pt"
        interrupted = False
        try:
            run = fit(tcfg, data, checkpoint=ckpt, callbacks=callbacks, progress=False)
            last = run.history[-1]
            c = last.compression
            value = constraint_value(c, cfg.search.target, cfg.search.tolerance)
            trial.set_constraint(CONSTRAINT, value)
            for k, v in {
                "compression": c,
                "test_accuracy": last.test_accuracy,
                "val_accuracy": last.val_accuracy,
                "params_retained": last.params_retained,
                "epochs_run": len(run.history),
                "feasible": value <= 0,
            }.items():
                trial.set_user_attr(k, v)
            end("COMPLETE", {"search/accuracy": accuracy_of(last), "search/compression": c, "search/feasible": float(value <= 0)})
            return accuracy_of(last)
        except optuna.TrialPruned as exc:
            last = monitor.run.history[-1] if monitor.run is not None and monitor.run.history else None
            final = {"search/feasible": 0.0}
            if last is not None:
                final.update({"search/accuracy": accuracy_of(last), "search/compression": last.compression})
            end("PRUNED", final, trial.user_attrs.get("prune_reason", str(exc)))
            raise
        except (KeyboardInterrupt, optuna.exceptions.UpdateFinishedTrialError):
            interrupted = True  # keep the checkpoint: the retry resumes from it
            raise
        except Exception as exc:
            reason = f"diverged: {exc}" if isinstance(exc, DivergedError) else f"{type(exc).__name__}: {exc}"
            trial.set_user_attr("fail_reason", reason[:2000])
            end("FAIL", {"search/feasible": 0.0}, reason)
            raise
        finally:
            if ckpt is not None and not interrupted:
                with contextlib.suppress(OSError):
                    ckpt.unlink()

    return objective
