"""The pruning frontier: accuracy against compression for every method, same net, seed and recipe.

For each method (``dpap sdsnn gmp gradr deepr random``) and each compression target
(0.5, 0.7, 0.9), one training run aimed at the target, plus the unpruned run. A method is
aimed by its one knob:

* ``gmp``, ``random`` (``pruning.<m>.target``, the per-layer sparsity) and ``deepr``
  (``pruning.deepr.density``): solved from the network's geometry before training (the
  compression a knob value gives is counted by the pruner on the untrained network:
  exact for GMP and random, Deep R's fixed counts at its first step);
* ``dpap`` (``pruning.dpap.epsilon``), ``sdsnn`` (``pruning.sdsnn.fc_rate_gain``) and
  ``gradr`` (``pruning.gradr.alpha``): calibrated by training: probe runs at three knob
  values, then up to ``--rounds`` rounds in which each target not yet within
  ``--tolerance`` gets a run at the knob interpolated (logit of compression, linear or
  log knob) from every run so far. Each target then takes the run whose compression came
  closest.

The table and the figure show the compression each run *reached*. Grad R and Deep R get
``pruning.<m>.lr = train.lr`` (their penalty is scaled by the learning rate).

Settings: ``--quick`` (scikit-learn's digits, params.yaml's network and recipe, few
epochs: minutes on 2 cores), ``fashion-mnist-10k`` (the default: a 10k-sample training
subset of Fashion-MNIST, from Debian's ``dataset-fashion-mnist`` when present, the
``mnist-snn`` preset's network and recipe, 30 epochs: hours on 2 cores) and
``fashion-mnist`` (all 60k; the default with ``--device cuda``).

Every run checkpoints each epoch and writes its record under ``--out`` (the runs'
``runs/<tag>.json``), so a stopped benchmark resumes where it stopped and a finished run is
never trained again (unless its configuration changed). Outputs in ``--out``: the table
(``frontier.txt``), the figure (``frontier.png``: accuracy against compression reached, one
line per method, every calibration run as a faint dot, the unpruned accuracy dashed),
``frontier.csv`` / ``frontier.json`` (one row per point) and ``plots/<method>.csv``
(``compression,accuracy``: ``dvc plots show plots/*.csv -x compression -y accuracy``
draws one line per method). MLflow (unless ``--no-mlflow`` or MLflow is missing): one
parent run (experiment ``dpap-frontier``, reused when the benchmark resumes) with the
table, figure and files, and a child run per trained point (logged epoch by epoch by
:class:`dpap.tracking.MlflowCallback`; the frontier's points tagged ``frontier.point``).

    python benchmarks/frontier.py --quick [--jobs 2]
    python benchmarks/frontier.py [--setting fashion-mnist-10k] [--methods dpap,gmp] [--targets 0.5,0.7,0.9]
        [--epochs N] [--rounds 3] [--tolerance 0.03] [--jobs 2] [--device cpu|cuda] [-S KEY=VALUE] [--out DIR]

Last line: ``RESULT unpruned=<acc> dpap@0.5=<acc>/<compression> ...`` (every method at
every target, in the order above).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

METHODS = ("dpap", "sdsnn", "gmp", "gradr", "deepr", "random")
TARGETS = (0.5, 0.7, 0.9)
EXPERIMENT = "dpap-frontier"
QUICK_EPOCHS = 16


@dataclass(frozen=True)
class Knob:
    """How a method is aimed: ``key`` in params, its range, whether it is searched on a log
    scale, whether compression grows with it, and either the probe values (calibrated by
    training) or ``geometric`` (solved on the untrained network)."""

    key: str
    low: float
    high: float
    log: bool = False
    grows: bool = True
    probes: tuple[float, ...] = ()
    geometric: bool = False


KNOBS = {
    "dpap": Knob("pruning.dpap.epsilon", 0.2, 2.0, probes=(0.8, 1.2, 1.6)),
    "sdsnn": Knob("pruning.sdsnn.fc_rate_gain", 0.05, 4.0, log=True, probes=(0.3, 0.9, 1.5)),
    "gradr": Knob("pruning.gradr.alpha", 1e-4, 1000.0, log=True, probes=(0.03, 0.3, 3.0)),
    "gmp": Knob("pruning.gmp.target", 0.0, 0.999, geometric=True),
    "random": Knob("pruning.random.target", 0.0, 0.999, geometric=True),
    "deepr": Knob("pruning.deepr.density", 0.001, 1.0, grows=False, geometric=True),
}

SETTINGS = {
    "digits": {},
    "fashion-mnist-10k": {"preset": "mnist-snn", "data.name": "fashion-mnist", "data.limit": 10000,
                          "data.processed_dir": "data/processed-10k", "train.epochs": 30, "train.baseline_accuracy": None},
    "fashion-mnist": {"preset": "mnist-snn", "data.name": "fashion-mnist", "train.epochs": 30, "train.baseline_accuracy": None},
}


# ------------------------------------------------------------------ configuration


def make_config(setting: str, params: Path, extra: dict, epochs: int | None = None, device: str | None = None):
    """The run's :class:`~dpap.config.Config`: the setting's preset and overrides, then ``extra``."""
    from pruning_dynamics import spec_config

    extra = {**extra, **({"train.epochs": epochs} if epochs else {}), **({"train.device": device} if device else {})}
    return spec_config(SETTINGS[setting], params, extra)


def method_overrides(method: str, value: float | None, base) -> dict:
    """Params overrides of ``method``'s run at knob ``value`` (``method="unpruned"``: none)."""
    if method == "unpruned":
        return {"pruning.enabled": False}
    out = {"pruning.enabled": True, "pruning.method": method, KNOBS[method].key: value}
    if method in ("gradr", "deepr"):
        out[f"pruning.{method}.lr"] = base.train.lr
    return out


def tag_of(method: str, value: float | None) -> str:
    return "unpruned" if method == "unpruned" else f"{method}-{KNOBS[method].key.rpartition('.')[2]}{value:.6g}"


def rounded(value: float) -> float:
    """Knob values are kept to 6 significant digits, so a run's tag names its value exactly."""
    return float(f"{value:.6g}")


# --------------------------------------------------------------- geometric solving


def geometric_value(method: str, target: float, base, input_shape, num_classes) -> float:
    """The knob value of ``method`` (gmp, random: per-layer sparsity; deepr: density) whose
    compression on the untrained network is closest to ``target`` (bisection: compression
    is monotone in the knob)."""
    import torch

    from dpap.pruning.compression import compression_of
    from dpap.pruning.registry import make_pruner
    from dpap.training.setup import make_network

    knob = KNOBS[method]
    settings = getattr(base.pruning, method)
    name = knob.key.rpartition(".")[2]

    def compression(value: float) -> float:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(base.train.seed)
            net = make_network(base, input_shape, num_classes)
        pruner = make_pruner(net, method, settings.model_copy(update={name: value}), epochs=base.train.epochs)
        if method == "deepr":  # its counts are set at attachment
            return compression_of(net, pruner).compression
        pruner.end_epoch(pruner.method.end)  # straight to the target sparsity
        return compression_of(net, pruner).compression

    lo, hi = knob.low, knob.high
    best = None
    for _ in range(40):
        mid = (lo + hi) / 2
        c = compression(mid)
        if best is None or abs(c - target) < abs(best[1] - target):
            best = (mid, c)
        if (c < target) == knob.grows:
            lo = mid
        else:
            hi = mid
    return rounded(best[0])


# ------------------------------------------------------------------- calibration


def _logit(c: float) -> float:
    c = min(max(c, 1e-3), 1 - 1e-3)
    return math.log(c / (1 - c))


def propose(knob: Knob, points: list[tuple[float, float]], target: float) -> float | None:
    """The knob value expected to give ``target`` from ``points`` (value, compression):
    interpolation in (knob or log knob, logit compression) between the two neighbouring
    runs that bracket the target; beyond the outermost run, its neighbour's slope
    extrapolated by at most a step (a quarter of the range, or ×4 on a log scale). None
    when that value was already run."""
    fwd = math.log if knob.log else (lambda v: v)
    inv = math.exp if knob.log else (lambda u: u)
    pts = sorted(points) if knob.grows else sorted((v, 1 - c) for v, c in points)
    t = target if knob.grows else 1 - target
    step = math.log(4.0) if knob.log else (knob.high - knob.low) / 4
    value = None
    for (v0, c0), (v1, c1) in zip(pts, pts[1:]):
        if c0 <= t < c1:
            share = (_logit(t) - _logit(c0)) / (_logit(c1) - _logit(c0)) if _logit(c1) != _logit(c0) else 0.5
            value = inv(fwd(v0) + share * (fwd(v1) - fwd(v0)))
            break
    if value is None and (t >= pts[-1][1] or t < pts[0][1]):
        up = t >= pts[-1][1]
        (vo, co), (vi, ci) = (pts[-1], pts[-2] if len(pts) > 1 else pts[-1]) if up else (pts[0], pts[1] if len(pts) > 1 else pts[0])
        guess = fwd(vo) + (step if up else -step)
        if vo != vi and _logit(co) != _logit(ci):
            slope = (fwd(vo) - fwd(vi)) / (_logit(co) - _logit(ci))
            if slope > 0:
                guess = fwd(vo) + max(-step, min(step, slope * (_logit(t) - _logit(co))))
        value = inv(guess)
    if value is None:  # not monotone: halfway between the nearest runs below and above
        below = max((p for p in pts if p[1] <= t), key=lambda p: p[1])
        above = min((p for p in pts if p[1] > t), key=lambda p: p[1])
        value = inv((fwd(below[0]) + fwd(above[0])) / 2)
    value = rounded(min(max(value, knob.low), knob.high))
    if any(abs(value - v) <= 1e-6 * max(1.0, abs(v)) for v, _ in points):
        return None
    return value


# ----------------------------------------------------------------------- one run


def _write_json(path: Path, obj) -> None:
    from dpap.runtime.outputs import atomic_write_text  # a temporary file of this process's own, then os.replace

    atomic_write_text(path, json.dumps(obj))


def config_record(cfg) -> dict:
    """``cfg`` as a dict; for a DPAP run with the protocol's defaults filled in (a ``null`` in
    params means "the protocol's value"), so a record made before those defaults changed is
    not reused."""
    from dpap.pruning.dpap.config import PROTOCOL_DEFAULTS

    out = cfg.to_dict()
    if cfg.pruning.enabled and cfg.pruning.method == "dpap":
        d = cfg.pruning.dpap
        out["resolved_dpap"] = {"conv": d.resolved("conv").model_dump(), "conv_kernels": d.resolved("conv", "kernels").model_dump(),
                                "fc": d.resolved("fc").model_dump(), "fc_input": d.resolved("fc", reads_input=True).model_dump(),
                                "conv_mode": d.conv_mode or PROTOCOL_DEFAULTS[d.protocol]["conv_mode"],
                                "start_epoch": d.resolved_start_epoch(), "normalization": d.resolved_normalization(),
                                "bounded": d.resolved_bounded(), "max_death_share": d.resolved_max_death_share(),
                                "end_fraction": d.resolved_end_fraction()}
    return out


def _with_new_settings(have: dict, want: dict) -> dict:
    """``have`` with the settings that ``want`` has and ``have`` lacks added where ``want``
    leaves them ``null`` (a setting added to params after the record was made, at the
    value that keeps the old behaviour; DPAP's protocol defaults are compared through
    ``resolved_dpap``)."""
    out = dict(have)
    for key, value in want.items():
        if key not in out and value is None:
            out[key] = None
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _with_new_settings(out[key], value)
    return out


def finished(path: Path, cfg) -> dict | None:
    """The record at ``path`` when its run finished with the configuration ``cfg``."""
    if path.exists():
        rec = json.loads(path.read_text())
        want = config_record(cfg)
        have = _with_new_settings(dict(rec.get("config") or {}), want)
        if "resolved_dpap" not in want:
            have.pop("resolved_dpap", None)
        if rec.get("done") and have == want:
            return rec
    return None


def run_one(job: dict) -> dict:
    """One training run (a worker process); its record is rewritten after every epoch and
    reused, untrained, when it is complete for the same configuration."""
    from dpap.data import load_processed
    from dpap.errors import DPAPError
    from dpap.training.history import Split
    from dpap.training.loop import TrainingRun
    from pruning_dynamics import processed_root

    cfg = make_config(job["setting"], Path(job["params"]), job["overrides"], job["epochs"], job["device"])
    out = Path(job["out"])
    tag = job["tag"]
    path = out / "runs" / f"{tag}.json"
    rec = finished(path, cfg)
    if rec is not None:
        return rec
    record = {"tag": tag, "method": job["method"], "value": job["value"], "config": config_record(cfg), "done": False,
              "status": "RUNNING", "error": None, "history": [], "mlflow_run_id": None}

    def save(run, m) -> None:
        record["history"] = [asdict(h) for h in run.history]
        record["device"] = str(run.device)
        _write_json(path, record)
        print(f"[{tag}] epoch {m.epoch + 1}: test {m.test_accuracy:.4f} compression {m.compression:.3f} ({m.seconds:.1f}s)", flush=True)

    data = load_processed(processed_root(cfg))
    meta = data.meta
    callbacks = []
    tracker = None
    if job["parent"]:
        from dpap.tracking import MlflowCallback

        tracker = MlflowCallback(experiment=EXPERIMENT, tracking_uri=job["tracking_uri"], run_name=tag, parent_run_id=job["parent"],
                                 tags={"frontier.method": job["method"], "frontier.knob": KNOBS[job["method"]].key if job["method"] in KNOBS else "",
                                       "frontier.value": str(job["value"]), "dpap.kind": "frontier-point"},
                                 data_hash=meta.get("hash", ""), images_every=0, log_model=False)
        callbacks.append(tracker)
    callbacks.append(save)
    print(f"[{tag}] {cfg.train.epochs} epochs of {cfg.model.arch} on {cfg.data.name}", flush=True)
    run = TrainingRun(cfg, Split(*data.train), Split(*data.test), meta["input_shape"], meta["num_classes"],
                      val=Split(*data.val) if data.val is not None else None, data_hash=meta.get("hash", ""),
                      checkpoint=out / "checkpoints" / f"{tag}.pt", callbacks=callbacks, progress=False)
    try:
        run.run()
        record["status"] = "FINISHED"
    except DPAPError as exc:  # diverged, or stuck at chance: the point is what it is
        record["status"], record["error"] = "FAILED", str(exc)
        print(f"[{tag}] failed: {exc}", flush=True)
    record["history"] = [asdict(h) for h in run.history]
    record["device"] = str(run.device)
    if tracker is not None:
        last = run.history[-1] if run.history else None
        tracker.finish(run, status=record["status"], final={"final/accuracy": last.test_accuracy, "final/compression": last.compression} if last else None)
        record["mlflow_run_id"] = tracker.run_id
    record["done"] = True
    _write_json(path, record)
    return record


def summary(rec: dict) -> dict:
    h = rec["history"]
    last = h[-1] if h else {"test_accuracy": float("nan"), "compression": float("nan")}
    return {"tag": rec["tag"], "method": rec["method"], "value": rec["value"], "accuracy": last["test_accuracy"],
            "compression": last["compression"], "best_accuracy": max((m["test_accuracy"] for m in h), default=float("nan")),
            "epochs": len(h), "status": rec["status"], "error": rec.get("error"), "mlflow_run_id": rec.get("mlflow_run_id")}


def run_jobs(jobs: list[dict], n: int) -> list[dict]:
    """The records of ``jobs``: finished ones read back, the others trained, ``n`` at a time."""
    done = {}
    for j in jobs:
        cfg = make_config(j["setting"], Path(j["params"]), j["overrides"], j["epochs"], j["device"])
        rec = finished(Path(j["out"]) / "runs" / f"{j['tag']}.json", cfg)
        if rec is not None:
            done[j["tag"]] = rec
    todo = [j for j in jobs if j["tag"] not in done]
    if n > 1 and len(todo) > 1:
        with multiprocessing.get_context("spawn").Pool(min(n, len(todo))) as pool:
            trained = pool.map(run_one, todo, chunksize=1)
            pool.close()  # workers leave on their own (terminated ones would leak their semaphores)
            pool.join()
    else:
        trained = [run_one(j) for j in todo]
    done.update({r["tag"]: r for r in trained})
    return [done[j["tag"]] for j in jobs]


# ------------------------------------------------------------------------ outputs


def choose(points: list[dict], target: float) -> dict | None:
    """The run whose compression came closest to ``target`` (the more accurate on a tie)."""
    usable = [p for p in points if not math.isnan(p["compression"])]
    return min(usable, key=lambda p: (round(abs(p["compression"] - target), 6), -p["accuracy"])) if usable else None


def table(rows: list[dict], unpruned: dict, title: str) -> str:
    lines = [title, f"{'method':<9} {'target':>6} {'knob':<28} {'value':>9} {'compr.':>7} {'accuracy':>8} {'vs unpr.':>8} {'best':>7}  note"]
    base = unpruned["accuracy"]
    lines.append(f"{'unpruned':<9} {'-':>6} {'-':<28} {'-':>9} {unpruned['compression']:7.3f} {base:8.4f} {'':>8} {unpruned['best_accuracy']:7.4f}")
    for r in rows:
        note = "failed: " + (r["error"] or "")[:60] if r["status"] == "FAILED" else ("off target" if abs(r["compression"] - r["target"]) > r["tolerance"] else "")
        lines.append(f"{r['method']:<9} {r['target']:6.2f} {r['knob']:<28} {r['value']:9.4g} {r['compression']:7.3f} {r['accuracy']:8.4f} "
                     f"{100 * (r['accuracy'] - base):+8.2f} {r['best_accuracy']:7.4f}  {note}")
    return "\n".join(lines)


def plot(rows: list[dict], all_points: dict, unpruned: dict, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    colors = dict(zip(METHODS, ("tab:red", "tab:purple", "tab:blue", "tab:green", "tab:orange", "tab:gray")))
    for method in METHODS:
        pts = sorted({r["tag"]: r for r in rows if r["method"] == method}.values(), key=lambda r: r["compression"])
        if not pts:
            continue
        c = colors[method]
        faint = [p for p in all_points.get(method, []) if not math.isnan(p["compression"])]
        ax.scatter([p["compression"] for p in faint], [p["accuracy"] for p in faint], color=c, alpha=0.25, s=14)
        ax.plot([p["compression"] for p in pts], [p["accuracy"] for p in pts], "o-", color=c, label=method)
    ax.axhline(unpruned["accuracy"], color="black", linestyle="--", linewidth=1, label=f"unpruned {unpruned['accuracy']:.4f}")
    for t in sorted({r["target"] for r in rows}):
        ax.axvline(t, color="black", alpha=0.1, linewidth=1)
    ax.set(xlabel="compression reached", ylabel="test accuracy", title=title, xlim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_files(rows, all_points, unpruned, out: Path) -> list[Path]:
    fields = ("method", "target", "knob", "value", "compression", "accuracy", "best_accuracy", "epochs", "status", "tag")
    csv = out / "frontier.csv"
    lines = [",".join(fields), ",".join(str(unpruned.get(f, "")) if f not in ("target", "knob", "value") else "" for f in fields)]
    lines += [",".join(str(r[f]) for f in fields) for r in rows]
    csv.write_text("\n".join(lines) + "\n")
    js = out / "frontier.json"
    _write_json(js, {"unpruned": unpruned, "points": rows, "runs": all_points})
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    written = [csv, js]
    for method in METHODS:
        pts = sorted({r["tag"]: r for r in rows if r["method"] == method}.values(), key=lambda r: r["compression"])
        if pts:
            p = plots / f"{method}.csv"
            p.write_text("compression,accuracy\n" + "".join(f"{r['compression']:.6f},{r['accuracy']:.6f}\n" for r in pts))
            written.append(p)
    p = plots / "unpruned.csv"
    p.write_text(f"compression,accuracy\n0.0,{unpruned['accuracy']:.6f}\n1.0,{unpruned['accuracy']:.6f}\n")
    return written + [p]


# ------------------------------------------------------------------------- MLflow


def mlflow_parent(out: Path, tracking_uri: str, title: str, params: dict) -> str | None:
    """The benchmark's parent run: the one recorded in ``out/mlflow.json`` when it is still
    in the store, else a new one."""
    from mlflow.entities import Param

    from dpap.tracking import get_or_create_experiment, git_commit, open_store

    client = open_store(tracking_uri)
    record = out / "mlflow.json"
    if record.exists():
        saved = json.loads(record.read_text())
        if saved.get("tracking_uri") == tracking_uri:
            try:
                client.get_run(saved["parent"])
                client.update_run(saved["parent"], status="RUNNING")
                return saved["parent"]
            except Exception:  # noqa: BLE001 - deleted or another store: start a new parent
                pass
    experiment_id = get_or_create_experiment(client, EXPERIMENT, tracking_uri)
    tags = {"dpap.kind": "frontier", "mlflow.source.name": "benchmarks/frontier.py", "mlflow.source.type": "LOCAL"}
    commit = git_commit()
    if commit:
        tags["git.commit"] = commit
    run_id = client.create_run(experiment_id, run_name=title, tags=tags).info.run_id
    client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    _write_json(record, {"tracking_uri": tracking_uri, "parent": run_id})
    return run_id


def mlflow_finish(tracking_uri: str, parent: str, rows: list[dict], unpruned: dict, files: list[Path]) -> None:
    """The frontier's numbers and files on the parent run; its points' child runs tagged."""
    from mlflow.entities import Metric

    from dpap.tracking import open_store

    client = open_store(tracking_uri)
    now = int(time.time() * 1000)
    metrics = [Metric("unpruned/accuracy", unpruned["accuracy"], now, 0)]
    for r in rows:
        key = f"{r['method']}_{round(100 * r['target'])}"
        metrics += [Metric(f"{key}/accuracy", r["accuracy"], now, 0), Metric(f"{key}/compression", r["compression"], now, 0)]
    client.log_batch(parent, metrics=metrics)
    for f in files:
        client.log_artifact(parent, str(f), "plots" if f.parent.name == "plots" else None)
    for r in rows + [unpruned]:
        if r.get("mlflow_run_id"):
            point = "unpruned" if r is unpruned else f"{r['method']}@{r['target']}"
            try:
                client.set_tag(r["mlflow_run_id"], "frontier.point", point)
            except Exception:  # noqa: BLE001 - a child logged in another store
                pass
    client.set_terminated(parent, "FINISHED")


# -------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"digits, {QUICK_EPOCHS} epochs, one calibration round: minutes on 2 cores")
    ap.add_argument("--setting", default=None, choices=sorted(SETTINGS),
                    help="data set and recipe (default: fashion-mnist-10k; with --device cuda: fashion-mnist)")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated: " + ", ".join(METHODS))
    ap.add_argument("--targets", default=",".join(str(t) for t in TARGETS))
    ap.add_argument("--epochs", type=int, default=None, help="override the setting's epochs")
    ap.add_argument("--rounds", type=int, default=None, help="calibration rounds after the probes (default 3; --quick 1)")
    ap.add_argument("--tolerance", type=float, default=None, help="a target is hit within this (default 0.03; --quick 0.05)")
    ap.add_argument("--device", default=None, help="train.device for every run (cpu, cuda, ...)")
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel (processes)")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="params override for every run")
    ap.add_argument("--out", default=None, help="default benchmarks/results/frontier/<setting>-<epochs>ep")
    ap.add_argument("--no-mlflow", action="store_true", help="skip MLflow (also when MLflow is not installed)")
    ap.add_argument("--tracking-uri", default=None, help="MLflow store (default: MLFLOW_TRACKING_URI, else ./mlflow.db)")
    args = ap.parse_args(argv)
    started = time.time()

    from dpap.config import ConfigError
    from dpap.config.params_file import parse_overrides
    from dpap.data import DataError, load_processed
    from pruning_dynamics import processed_root

    setting = args.setting or ("digits" if args.quick else "fashion-mnist" if (args.device or "").startswith("cuda") else "fashion-mnist-10k")
    epochs = args.epochs or (QUICK_EPOCHS if args.quick else None)
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    tolerance = args.tolerance if args.tolerance is not None else (0.05 if args.quick else 0.03)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    try:
        targets = [float(t) for t in args.targets.split(",") if t.strip()]
    except ValueError:
        targets = []
    if unknown or not targets or not all(0 < t < 1 for t in targets):
        print(f"error: --methods/--targets: methods from {', '.join(METHODS)}, targets in (0, 1); got {args.methods!r}, {args.targets!r}", file=sys.stderr)
        return 2
    try:
        extra = parse_overrides(args.set, "-S")
        base = make_config(setting, Path(args.params), extra, epochs, args.device)
        for m in methods:  # every run's params valid before hours of training
            make_config(setting, Path(args.params), {**extra, **method_overrides(m, KNOBS[m].low if not KNOBS[m].geometric else 0.5, base)}, epochs, args.device)
        data = load_processed(processed_root(base), verify=False)  # prepared once, before the jobs start
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    epochs = base.train.epochs
    out = Path(args.out or ROOT / "benchmarks" / "results" / "frontier" / f"{setting}-{epochs}ep")
    for d in (out, out / "runs", out / "checkpoints"):
        d.mkdir(parents=True, exist_ok=True)
    title = f"frontier: {setting}, {base.model.arch}, {epochs} epochs, seed {base.train.seed}"

    tracking_uri, parent = None, None
    if not args.no_mlflow:
        try:
            from dpap.tracking import default_tracking_uri

            tracking_uri = args.tracking_uri or default_tracking_uri()
            parent = mlflow_parent(out, tracking_uri, f"frontier-{setting}-{epochs}ep",
                                   {"setting": setting, "epochs": epochs, "arch": base.model.arch, "data.name": base.data.name,
                                    "data.limit": base.data.limit, "seed": base.train.seed, "targets": ",".join(map(str, targets)),
                                    "methods": ",".join(methods), "tolerance": tolerance, "rounds": rounds, "overrides": json.dumps(extra)})
        except ImportError:
            print("note: MLflow is not installed; the frontier is not logged to MLflow", flush=True)
        except Exception as exc:  # noqa: BLE001 - a store that cannot be used: say so, go on without it
            print(f"note: MLflow unavailable ({exc}); the frontier is not logged to MLflow", flush=True)
            parent = None

    common = {"setting": setting, "params": args.params, "epochs": epochs, "device": args.device, "out": str(out),
              "parent": parent, "tracking_uri": tracking_uri}

    def job(method: str, value: float | None) -> dict:
        return {**common, "method": method, "value": value, "tag": tag_of(method, value), "overrides": {**extra, **method_overrides(method, value, base)}}

    # round 0: the unpruned run, the directly aimed methods at each target, the probes
    meta = data.meta
    jobs = [job("unpruned", None)]
    aimed: dict[tuple[str, float], str] = {}
    for m in methods:
        knob = KNOBS[m]
        if knob.geometric:
            for t in targets:
                v = geometric_value(m, t, base, meta["input_shape"], meta["num_classes"])
                jobs.append(job(m, v))
                aimed[(m, t)] = jobs[-1]["tag"]
        else:
            jobs += [job(m, v) for v in knob.probes]
    jobs = list({j["tag"]: j for j in jobs}.values())
    print(f"{title}: {len(jobs)} runs in round 0, {args.jobs} at a time; results in {out}", flush=True)
    results = {r["tag"]: summary(r) for r in run_jobs(jobs, args.jobs)}

    def points(method: str) -> list[dict]:
        return [r for r in results.values() if r["method"] == method]

    for k in range(1, rounds + 1):
        jobs = []
        for m in methods:
            knob = KNOBS[m]
            if knob.geometric:
                continue
            seen = [(p["value"], p["compression"]) for p in points(m) if not math.isnan(p["compression"])]
            for t in targets:
                if not seen or any(abs(c - t) <= tolerance for _, c in seen):
                    continue
                v = propose(knob, seen, t)
                if v is not None:
                    jobs.append(job(m, v))
        jobs = [j for j in {j["tag"]: j for j in jobs}.values() if j["tag"] not in results]
        if not jobs:
            break
        print(f"calibration round {k}: {len(jobs)} runs ({', '.join(j['tag'] for j in jobs)})", flush=True)
        results.update({r["tag"]: summary(r) for r in run_jobs(jobs, args.jobs)})

    unpruned = results["unpruned"]
    rows = []
    for m in methods:
        for t in targets:
            p = results[aimed[(m, t)]] if (m, t) in aimed else choose(points(m), t)
            if p is None:
                continue
            rows.append({**p, "target": t, "knob": KNOBS[m].key, "tolerance": tolerance})
    all_points = {m: sorted(points(m), key=lambda p: p["value"]) for m in methods}
    text = table(rows, unpruned, title)
    print("\n" + text)
    (out / "frontier.txt").write_text(text + "\n")
    figure = out / "frontier.png"
    plot(rows, all_points, unpruned, title, figure)
    files = [out / "frontier.txt", figure] + write_files(rows, all_points, unpruned, out)
    print(f"\nfigure: {figure}\ntable: {out / 'frontier.txt'}; points: {out / 'frontier.csv'}, {out / 'frontier.json'}; DVC plots: {out / 'plots'}/*.csv")
    if parent is not None:
        try:
            mlflow_finish(tracking_uri, parent, rows, unpruned, files)
            print(f"MLflow: experiment {EXPERIMENT!r}, parent run {parent} ({tracking_uri})")
        except Exception as exc:  # noqa: BLE001 - the numbers above stand without it
            print(f"note: MLflow logging failed ({exc})", flush=True)
    trained = sum(1 for r in results.values())
    print(f"{trained} runs; wall time {time.time() - started:.0f} s")
    parts = [f"unpruned={unpruned['accuracy']:.4f}"]
    by = {(r["method"], r["target"]): r for r in rows}
    for m in METHODS:
        for t in targets:
            r = by.get((m, t))
            if r is not None:
                parts.append(f"{m}@{t:g}={r['accuracy']:.4f}/{r['compression']:.3f}")
    print("RESULT " + " ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
