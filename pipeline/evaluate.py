"""Evaluate stage: models/model.pt + test data -> metrics.json and plots/ (DVC plots).

    python pipeline/evaluate.py [--params params.yaml] [--no-mlflow]

Also logs the metrics (``eval/<name>``, at the run's last epoch) and plot files to the
model's MLflow run, and names that run in ``metrics.json`` (``mlflow.run_id``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import _cli

MODEL = Path("models/model.pt")
METRICS = Path("metrics.json")
PLOTS = Path("plots")


def main(argv=None) -> int:
    args = _cli.parser(__doc__.splitlines()[0]).parse_args(argv)
    from dpap.config import load_params

    cfg = load_params(args.params)  # validated before anything is touched

    from dpap.data import load_processed
    from dpap.evaluation import evaluate, load_model, write_metrics, write_plots
    from dpap.outputs import check_writable

    check_writable(METRICS, PLOTS / "accuracy.csv")  # before the evaluation, not after it
    model = load_model(MODEL)
    data = load_processed(Path(cfg.data.processed_dir) / cfg.data.name)
    metrics = evaluate(model, data.test, data.val, cfg.train.baseline_accuracy)
    plot_files = write_plots(model.history, PLOTS)
    run_id = model.mlflow_run_id
    if _cli.mlflow_enabled(args) and run_id:  # metrics.json names the MLflow run it came from
        from dpap.tracking import EXPERIMENT

        metrics["mlflow"] = {"run_id": run_id, "experiment": EXPERIMENT}
    write_metrics(metrics, METRICS)
    print(
        f"test accuracy {metrics['test_accuracy']:.4f}, compression {metrics['compression']:.3f}, "
        f"{metrics['params_retained']} of {metrics['params_dense']} parameters, "
        f"{metrics['synaptic_ops_per_sample']:.3g} synaptic ops/sample ({metrics['energy_nj_per_sample']:.3g} nJ) -> {METRICS}"
    )
    if _cli.mlflow_enabled(args) and run_id:
        from dpap.tracking import default_tracking_uri, log_evaluation

        files = [("evaluation", METRICS)] + [("evaluation/plots", p) for p in plot_files]
        if log_evaluation(run_id, metrics, files, step=len(model.history)):
            print(f"logged to mlflow run {run_id}")
        else:
            print(f"note: mlflow run {run_id} is not in {default_tracking_uri()}; metrics not logged there")
    return 0


if __name__ == "__main__":
    sys.exit(_cli.main_guard(main))
