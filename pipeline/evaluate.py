"""Evaluate stage: models/model.pt + test data -> metrics.json, plots/ (DVC plots) and models/export/.

    python pipeline/evaluate.py [--params params.yaml] [--no-mlflow]

``metrics.json`` holds our counts and NeuroBench's (``neurobench``). ``models/export/``
holds the network for other tools: ``model.nir`` (SNN) or ``model.onnx`` (DNN) and
``export.json`` (how to run it; or why the format cannot hold this network).
Also logs the metrics (``eval/<name>``, at the run's last epoch), the plot files and the
export to the model's MLflow run, and names that run in ``metrics.json`` (``mlflow.run_id``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import _cli

MODEL = Path("models/model.pt")
METRICS = Path("metrics.json")
PLOTS = Path("plots")
EXPORT = Path("models/export")


def main(argv=None) -> int:
    args = _cli.parser(__doc__.splitlines()[0]).parse_args(argv)
    from dpap.config import load_params

    cfg = load_params(args.params)  # validated before anything is touched

    from dpap.data import load_processed
    from dpap.evaluation.metrics import evaluate, write_metrics, write_plots
    from dpap.training.model_file import load_model
    from dpap.export import export_model
    from dpap.runtime.outputs import check_writable

    check_writable(METRICS, PLOTS / "accuracy.csv")  # before the evaluation, not after it
    model = load_model(MODEL)
    data = load_processed(Path(cfg.data.processed_dir) / cfg.data.name)
    metrics = evaluate(model, data.test, data.val, cfg.train.baseline_accuracy)
    plot_files = write_plots(model.history, PLOTS)
    exported = export_model(model, EXPORT, data_meta=data.meta)
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
    if exported.path is not None:
        print(f"exported {exported.format.upper()} -> {exported.path}")
    else:
        print(f"note: no {exported.format.upper()} export ({exported.reason}); see {exported.manifest}")
    if _cli.mlflow_enabled(args) and run_id:
        from dpap.tracking import default_tracking_uri, log_evaluation

        files = [("evaluation", METRICS)] + [("evaluation/plots", p) for p in plot_files] + [("export", p) for p in exported.files]
        if log_evaluation(run_id, metrics, files, step=len(model.history)):
            print(f"logged to mlflow run {run_id}")
        else:
            print(f"note: mlflow run {run_id} is not in {default_tracking_uri()}; metrics not logged there")
    return 0


if __name__ == "__main__":
    sys.exit(_cli.main_guard(main))
