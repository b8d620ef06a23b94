"""Train stage: params.yaml + processed data -> models/model.pt (and an MLflow run).

    python pipeline/train.py [--params params.yaml] [--no-mlflow] [--no-progress]

Checkpoints every epoch to ``checkpoints/train.pt``; a killed run resumes from it when
the stage runs again (same parameters), continuing the same MLflow run. Data-parallel:
``torchrun --nproc-per-node N pipeline/train.py`` (gloo on CPU, NCCL on GPU; rank 0 writes
the checkpoint, the model and the MLflow run; docs/pipeline.md "Data-parallel training"). Ctrl-C or SIGTERM
ends the MLflow run as KILLED (exit 130) and keeps the checkpoint. The checkpoint is
removed once the model file is written. A read-only ``models/`` or ``checkpoints/`` stops
the stage before training; a full disk stops it with one line naming the file, the
previous model and checkpoint intact (exit 1).
"""

from __future__ import annotations

import sys
from pathlib import Path

import _cli

MODEL = Path("models/model.pt")
CHECKPOINT = Path("checkpoints/train.pt")


def main(argv=None) -> int:
    args = _cli.parser(__doc__.splitlines()[0]).parse_args(argv)
    from dpap.config import load_params

    cfg = load_params(args.params)  # validated before anything is touched

    from dpap.data import load_processed
    from dpap.training.model_file import save_model
    from dpap.runtime.outputs import OutputError, check_writable
    from dpap.training.history import DivergedError
    from dpap.training.loop import fit

    from dpap.training.distributed import Distributed

    check_writable(MODEL, CHECKPOINT)  # a read-only models/ stops here, not after the last epoch
    data = load_processed(Path(cfg.data.processed_dir) / cfg.data.name)
    dist = Distributed.from_env()  # under torchrun: this rank's place; else None
    if dist is not None and not dist.is_main:
        fit(cfg, data, checkpoint=CHECKPOINT, progress=False, distributed=dist)  # rank 0 writes everything
        dist.close()
        return 0
    callbacks = []
    tracker = None
    if _cli.mlflow_enabled(args):
        from dpap.tracking import MlflowCallback

        tracker = MlflowCallback(data_hash=data.meta.get("hash", ""), data_dir=Path(cfg.data.processed_dir) / cfg.data.name)
        callbacks.append(tracker)
    try:
        run = fit(cfg, data, checkpoint=CHECKPOINT, callbacks=callbacks, progress=not args.no_progress, distributed=dist)
    except DivergedError:
        if tracker is not None and tracker.run_id is not None:
            tracker.client.set_terminated(tracker.run_id, status="FAILED")
        raise
    except (KeyboardInterrupt, OutputError):  # Ctrl-C, SIGTERM, a checkpoint the disk refused:
        _killed(tracker)  # KILLED; the next run resumes it (RUNNING again)
        raise
    if tracker is not None:
        tracker.start(run)  # a run resumed after its last epoch: continue its MLflow run
    try:
        save_model(MODEL, run, data.meta)
    except OutputError:  # e.g. a full disk: the checkpoint after the last epoch is kept
        _killed(tracker)
        raise
    if tracker is not None:
        tracker.finish(run, model_file=MODEL, example=data.test[0][:2])
    CHECKPOINT.unlink(missing_ok=True)
    if dist is not None:
        dist.close()
    last = run.history[-1]
    print(f"trained {len(run.history)} epochs: test accuracy {last.test_accuracy:.4f}, compression {last.compression:.3f} -> {MODEL}")
    if tracker is not None:
        print(f"mlflow run {tracker.run_id} ({tracker.tracking_uri})")
    return 0


def _killed(tracker) -> None:
    """End the MLflow run as KILLED (best effort: the store may sit on the same full disk)."""
    if tracker is not None and tracker.run_id is not None:
        try:
            tracker.client.set_terminated(tracker.run_id, status="KILLED")
        except Exception:  # noqa: BLE001 - the error being raised matters more
            pass


if __name__ == "__main__":
    sys.exit(_cli.main_guard(main))
