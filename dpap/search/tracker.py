"""MLflow for ``dpap search``: one parent run per study (reused on resume) and a nested
child run per trial, each trial logged by a :class:`~dpap.tracking.MlflowCallback` like any
training run (same metric names, steps = epochs)."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from dpap.tracking import MlflowCallback, get_or_create_experiment, git_commit, open_store

SEARCH_EXPERIMENT = "dpap-search"
"""The experiment of the search's parent and trial runs."""
SUMMARY_TAG = "dpap.summary_of"
"""Tag of a search's parent run: which state of the study its summary describes."""
STATUS_OF_TRIAL = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
"""The MLflow status a search trial's run ends with, by Optuna state."""


def _raise(exc: Exception) -> None:
    raise exc


def find_parent_run(client, experiment_id: str, study_name: str, storage: str) -> Optional[str]:
    """The oldest live parent run of the study ``study_name`` in ``storage`` (by its tags
    ``dpap.kind = search``, ``optuna.study``, ``optuna.storage``), or None. The names are
    compared here, not in the filter, so any characters in them are fine."""
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string="tags.`dpap.kind` = 'search'", max_results=500,
                                  order_by=["attributes.start_time ASC"], page_token=token)
        for run in page:
            tags = run.data.tags
            if tags.get("optuna.study") == study_name and tags.get("optuna.storage") == storage:
                return run.info.run_id
        token = page.token
        if not token:
            return None


class SearchTracker:
    """MLflow for ``dpap search``: one parent run per study (reused on resume), one nested
    child run per trial, logged by an :class:`~dpap.tracking.MlflowCallback` like any
    training run (same metric names, steps = epochs). A trial's run ends FINISHED, KILLED
    (pruned) or FAILED (:data:`STATUS_OF_TRIAL`), with the Optuna state in the tag
    ``optuna.state``. Works through ``MlflowClient`` only, so worker processes share nothing
    but the store; a tracking error never stops a trial (one warning, then the search goes
    on)."""

    def __init__(self, tracking_uri: str, parent_run_id: str, experiment_id: str):
        self.uri = tracking_uri
        self.client = open_store(tracking_uri)
        self.parent_run_id = parent_run_id
        self.experiment_id = experiment_id
        self._warned = False

    @classmethod
    def for_study(cls, tracking_uri: str, study, params: Mapping[str, Any], storage: str) -> "SearchTracker":
        """The study's one parent run: the one recorded in
        ``study.user_attrs["mlflow_parent_run_id"]`` when this store has it, else the one
        tagged with the study's name and ``storage`` (``optuna.study``, ``optuna.storage``;
        oldest first), else a new one with ``params`` (the search settings).

        Several processes of one study must call this one at a time (``dpap search`` holds
        the study's lock file), so they share one parent run; its id is recorded in the
        study for the next."""
        client = open_store(tracking_uri)
        exp_id = get_or_create_experiment(client, SEARCH_EXPERIMENT, tracking_uri)
        run_id = study.user_attrs.get("mlflow_parent_run_id")
        if run_id is not None:
            try:
                if client.get_run(run_id).info.lifecycle_stage == "deleted":
                    run_id = None
            except MlflowException:
                run_id = None  # another tracking store: find or start its parent
        if run_id is None:
            run_id = find_parent_run(client, exp_id, study.study_name, storage)
        if run_id is None:
            tags = {"dpap.kind": "search", "optuna.study": study.study_name, "optuna.storage": storage}
            commit = git_commit()
            if commit:
                tags["git.commit"] = commit
            run = client.create_run(exp_id, run_name=study.study_name, tags=tags)
            run_id = run.info.run_id
            client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        if study.user_attrs.get("mlflow_parent_run_id") != run_id:
            study.set_user_attr("mlflow_parent_run_id", run_id)
        if client.get_run(run_id).info.status != "RUNNING":
            client.update_run(run_id, status="RUNNING")
        return cls(tracking_uri, run_id, exp_id)

    def summarised(self, key: str) -> bool:
        """Whether the parent run already ended with the summary of the study state ``key``
        (:data:`SUMMARY_TAG`; written by another process of the study that finished at the
        same time): :meth:`finish` would log the same values again."""
        run = self._safe(self.client.get_run, self.parent_run_id)
        return run is not None and run.info.status == "FINISHED" and run.data.tags.get(SUMMARY_TAG) == key

    def _safe(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - tracking must not kill a trial
            if not self._warned:
                print(f"warning: MLflow logging failed ({type(exc).__name__}: {exc}); the search goes on", file=sys.stderr, flush=True)
                self._warned = True
            return None

    def trial_callback(self, trial, overrides: Mapping[str, Any], data_hash: str = "", epochs: int = 0) -> Optional[MlflowCallback]:
        """The :func:`dpap.training.loop.fit` callback that logs one trial as a child run; the
        run id goes to the trial's user attribute ``mlflow_run_id`` as soon as it exists.
        None when the store cannot be opened now (e.g. locked by another program for
        longer than :func:`~dpap.tracking.lock_timeout`): one warning, and the trial runs
        untracked."""
        params = {"optuna.trial_number": trial.number, **{f"search.{k}": v for k, v in overrides.items()}}
        if "retry_of" in trial.user_attrs:
            params["optuna.retry_of"] = trial.user_attrs["retry_of"]
        tags = {"optuna.trial": str(trial.number), "optuna.study": trial.study.study_name, "dpap.kind": "search-trial"}
        cb = self._safe(
            MlflowCallback,
            experiment=SEARCH_EXPERIMENT, tracking_uri=self.uri, run_name=f"trial-{trial.number}", parent_run_id=self.parent_run_id,
            tags=tags, params=params, data_hash=data_hash, images_every=max(1, epochs), log_model=False, resume=False,
            on_start=lambda run_id: trial.set_user_attr("mlflow_run_id", run_id),
            on_error=lambda exc: self._safe(_raise, exc),
        )
        return cb

    def end_trial(self, cb: MlflowCallback, run, trial, state: str, final: Mapping[str, float], reason: Optional[str] = None) -> None:
        """End a trial's run: final values at its last epoch, status by Optuna ``state``
        (COMPLETE, PRUNED or FAIL), the state and ``reason`` as tags. A trial that failed
        before its first epoch gets a run too, so every trial has one."""

        def end():
            tags = {"optuna.state": state}
            if reason:
                tags["reason"] = reason
            status = STATUS_OF_TRIAL[state]
            if run is not None and cb.run_id is not None:
                cb.finish(run, status=status, final=final, tags=tags)
                return
            created = self.client.create_run(self.experiment_id, run_name=cb.run_name, tags={**cb.tags, "mlflow.parentRunId": self.parent_run_id})
            run_id = created.info.run_id
            self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in cb.params.items()], tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])
            self.client.set_terminated(run_id, status)
            trial.set_user_attr("mlflow_run_id", run_id)

        self._safe(end)

    def kill_trial(self, run_id: Optional[str], reason: str) -> None:
        """A trial left running by a dead worker: its run ends KILLED."""
        if run_id is None:
            return

        def kill():
            self.client.set_tag(run_id, "optuna.state", "FAIL")
            self.client.set_tag(run_id, "reason", reason)
            self.client.set_terminated(run_id, "KILLED")

        self._safe(kill)

    def finish(self, summary: Mapping[str, Any], artifacts: Sequence[Path], step: int = 0, figures: Optional[Mapping[str, Any]] = None, tags: Optional[Mapping[str, str]] = None) -> None:
        """The parent run's summary metrics (``search/…`` at ``step``: the trials run),
        ``artifacts`` (files), ``figures`` (name -> plotly or matplotlib figure: written as
        HTML and/or PNG under ``figures/``) and ``tags``; then it ends FINISHED."""

        def fin():
            now = int(time.time() * 1000)
            metrics = [Metric(f"search/{k}", float(v), now, step) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None]
            self.client.log_batch(self.parent_run_id, metrics=metrics, tags=[RunTag(k, str(v)[:5000]) for k, v in (tags or {}).items()])
            for a in artifacts:
                if Path(a).exists():
                    self.client.log_artifact(self.parent_run_id, str(a))
            with tempfile.TemporaryDirectory() as tmp:
                for name, fig in (figures or {}).items():
                    if hasattr(fig, "write_html"):  # plotly
                        fig.write_html(Path(tmp) / f"{name}.html", include_plotlyjs=True)
                    if hasattr(fig, "savefig"):  # matplotlib
                        fig.savefig(Path(tmp) / f"{name}.png", dpi=90, bbox_inches="tight")
                if any(Path(tmp).iterdir()):
                    self.client.log_artifacts(self.parent_run_id, tmp, "figures")
            self.client.set_terminated(self.parent_run_id, "FINISHED")

        self._safe(fin)
