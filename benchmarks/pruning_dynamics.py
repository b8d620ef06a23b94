"""How gradually, and in which layers, does the default DPAP run prune?

Runs the default ``params.yaml`` on two settings and prints, per epoch, compression, the
largest one-epoch jump so far, the share pruned per layer kind and test accuracy:

* ``digits``: params.yaml as it is (scikit-learn's digits, the default data set);
* ``fashion-mnist``: the ``mnist-snn`` preset's network and recipe (15C3-AP2-40C3-AP2-
  300FC-10FC, T = 4, Adam 1e-3, batch 100, cosine) on Fashion-MNIST (offline, from
  Debian's ``dataset-fashion-mnist``), 30 epochs,

each also without DPAP (the unpruned baseline, same seed). Writes a plot and the
histories to ``--out``; every run checkpoints each epoch there, so a killed benchmark
resumes where it stopped (``--fresh`` starts over).

    python benchmarks/pruning_dynamics.py [--settings digits,fashion-mnist] [--jobs 2]
        [--epochs N] [--no-baseline] [-S pruning.dpap.epsilon=1.2 ...] [--out DIR] [--fresh]

Fashion-MNIST takes about 1-2 minutes an epoch per run on 2 CPU cores (about 75 minutes
for the pruned run and the baseline with ``--jobs 2``); digits about 20 seconds a run.
Last line: ``RESULT max_epoch_jump=… first_prune_epoch=… conv_channels_pruned=…
fc_neurons_pruned=… fc_synapses_pruned=… compression=… accuracy=… baseline_accuracy=…``
for the Fashion-MNIST setting (the first setting run when it is left out), then the same
keys prefixed ``digits_`` for digits.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETTINGS = {
    "digits": {},
    "fashion-mnist": {"preset": "mnist-snn", "data.name": "fashion-mnist", "train.epochs": 30, "train.baseline_accuracy": None},
}


def spec_config(spec: dict, params: Path, extra: dict):
    """params.yaml with a setting's ``spec`` (its ``preset``, then its own keys) and ``extra``
    on top; the benchmarks' one way from a setting to a :class:`~dpap.config.Config`."""
    from dpap.config import load_params
    from dpap.config.params_file import flatten_dotted
    from dpap.config.presets import read_preset

    spec = dict(spec)
    overrides = {}
    preset = spec.pop("preset", None)
    if preset:
        overrides.update(flatten_dotted(read_preset(preset, ROOT)))
    overrides.update(spec)
    overrides.update(extra)
    return load_params(params, overrides=overrides)


def setting_config(name: str, params: Path, extra: dict, epochs: int | None, pruned: bool):
    extra = {**extra, **({"train.epochs": epochs} if epochs else {}), **({} if pruned else {"pruning.enabled": False})}
    return spec_config(SETTINGS[name], params, extra)


def processed_root(cfg) -> Path:
    """The setting's processed data set, downloaded (from the offline copy) and
    preprocessed first where it is missing. The mains call it once for every setting
    before they start jobs in parallel, so that the work is done once (two processes
    preparing the same data set at once each write their own temporary files)."""
    from dpap.data import download, preprocess

    root = Path(cfg.data.processed_dir) / cfg.data.name
    if not (root / "meta.json").exists():
        download(cfg.data, progress=False, log=lambda *a: None)
        preprocess(cfg.data, progress=False, log=lambda *a: None)
    return root


def train_and_record(cfg, data_dir: Path, out: Path, tag: str, progress: bool, **meta) -> list[dict]:
    """Train ``cfg`` on the processed data in ``data_dir``, checkpointed in
    ``out/checkpoints/<tag>.pt`` (a stopped run resumes); writes ``out/<tag>.json`` (``meta``,
    the config and the per-epoch history) and returns the history."""
    from dpap.data import load_processed
    from dpap.training.loop import fit

    run = fit(cfg, load_processed(data_dir), checkpoint=out / "checkpoints" / f"{tag}.pt", progress=progress)
    history = [asdict(m) for m in run.history]
    (out / f"{tag}.json").write_text(json.dumps({**meta, "config": cfg.to_dict(), "history": history}))
    return history


def run_one(job: dict) -> dict:
    """One training run (a worker process with ``job["threads"]`` threads)."""
    import torch

    if job["threads"]:
        torch.set_num_threads(job["threads"])
    cfg = setting_config(job["setting"], Path(job["params"]), job["extra"], job["epochs"], job["pruned"])
    tag = f"{job['setting']}-{'pruned' if job['pruned'] else 'baseline'}"
    print(f"[{tag}] {cfg.train.epochs} epochs of {cfg.model.arch} on {cfg.data.name}", flush=True)
    history = train_and_record(cfg, processed_root(cfg), Path(job["out"]), tag, job["progress"], setting=job["setting"], pruned=job["pruned"])
    return {"tag": tag, "history": history}


def table(setting: str, history: list[dict], baseline: list[dict] | None) -> str:
    from dpap.evaluation.dynamics import kind_shares

    lines = [f"\n{setting}: DPAP (gradual protocol) vs. unpruned baseline",
             f"{'epoch':>5} {'compression':>11} {'max jump':>8} {'conv ch.':>8} {'fc neur.':>8} {'fc syn.':>8} {'test acc':>8} {'baseline':>8}"]
    prev, top = 0.0, 0.0
    for i, m in enumerate(history):
        top = max(top, m["compression"] - prev)
        prev = m["compression"]
        k = kind_shares(m["layers"])
        base = f"{baseline[i]['test_accuracy']:8.4f}" if baseline and i < len(baseline) else f"{'':8}"
        lines.append(f"{m['epoch'] + 1:5d} {m['compression']:11.3f} {top:8.3f} {k.conv_channels_pruned:8.3f} {k.fc_neurons_pruned:8.3f} {k.fc_synapses_pruned:8.3f} {m['test_accuracy']:8.4f} {base}")
    return "\n".join(lines)


def result_keys(history: list[dict], baseline: list[dict] | None, prefix: str = "") -> list[str]:
    from dpap.evaluation.dynamics import pruning_dynamics

    d = pruning_dynamics(history)
    values = {
        "max_epoch_jump": f"{d.max_epoch_jump:.3f}",
        "first_prune_epoch": str(d.first_prune_epoch) if d.first_prune_epoch is not None else "none",
        "conv_channels_pruned": f"{d.final.conv_channels_pruned:.3f}",
        "fc_neurons_pruned": f"{d.final.fc_neurons_pruned:.3f}",
        "fc_synapses_pruned": f"{d.final.fc_synapses_pruned:.3f}",
        "compression": f"{history[-1]['compression']:.3f}",
        "accuracy": f"{history[-1]['test_accuracy']:.4f}",
        "baseline_accuracy": f"{baseline[-1]['test_accuracy']:.4f}" if baseline else "none",
    }
    return [f"{prefix}{k}={v}" for k, v in values.items()]


def _ranges(numbers: list[int]) -> str:
    """``[1, 2, 3, 5, 7, 8]`` → ``"1-3, 5, 7-8"``."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(results)
    fig, axes = plt.subplots(1, len(settings), figsize=(5.6 * len(settings), 4.2), squeeze=False)
    for ax, s in zip(axes[0], settings):
        h = results[s].get("pruned")
        b = results[s].get("baseline")
        acc = ax.twinx()  # accuracy on its own, zoomed axis: on one 0-1 axis the two runs' curves merge
        lines = []
        if h:
            ep = [m["epoch"] + 1 for m in h]
            lines += ax.plot(ep, [m["compression"] for m in h], color="tab:red", label="compression (left)")
            lines += acc.plot(ep, [m["test_accuracy"] for m in h], color="tab:blue", label="test accuracy, DPAP (right)")
        if b:
            lines += acc.plot([m["epoch"] + 1 for m in b], [m["test_accuracy"] for m in b], color="tab:blue", linestyle="--",
                              alpha=0.7, label="test accuracy, unpruned (right)")
        late = [m["test_accuracy"] for r in (h or [], b or []) for m in r[len(r) // 10:]]  # past the first tenth of the epochs
        label = "test accuracy"
        if late:
            lo, hi = min(late), max(late)
            pad = max(0.005, 0.1 * (hi - lo))
            acc.set_ylim(lo - pad, hi + pad)
            below = sorted({m["epoch"] + 1 for r in (h or [], b or []) for m in r if m["test_accuracy"] < lo - pad})
            if below:  # the zoom leaves the first epochs' accuracy off the axis: say which
                label += f" ({'epoch' if len(below) == 1 else 'epochs'} {_ranges(below)} below the axis)"
        acc.set_ylabel(label, color="tab:blue")
        ax.set(title=s, xlabel="epoch", ylabel="compression", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(lines, [l.get_label() for l in lines], fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", default="digits,fashion-mnist", help="comma-separated: " + ", ".join(SETTINGS))
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--epochs", type=int, default=None, help="override every setting's epochs (quick looks)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unpruned runs")
    ap.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="extra params override, e.g. pruning.dpap.epsilon=1.2")
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes; threads split between them)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per run (0: cores / jobs)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pruning_dynamics"))
    ap.add_argument("--fresh", action="store_true", help="ignore checkpoints and results of an earlier run")
    args = ap.parse_args(argv)

    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        print(f"error: --settings: unknown {unknown[0]!r}; expected {', '.join(SETTINGS)}", file=sys.stderr)
        return 2
    import os

    from dpap.config import ConfigError
    from dpap.config.params_file import parse_overrides

    try:
        extra = parse_overrides(args.set, "-S")
        for s in settings:  # validate everything before hours of training
            setting_config(s, Path(args.params), extra, args.epochs, True)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if args.fresh:
        for p in list(out.glob("*.json")) + list((out / "checkpoints").glob("*.pt")):
            p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    from dpap.data import DataError

    try:
        for s in settings:  # once, before the jobs start
            processed_root(setting_config(s, Path(args.params), extra, args.epochs, True))
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    threads = args.threads or max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    jobs = [
        {"setting": s, "pruned": pruned, "params": args.params, "extra": extra, "epochs": args.epochs, "out": str(out),
         "threads": threads, "progress": args.jobs == 1 and sys.stderr.isatty()}
        for s in settings for pruned in ((True,) if args.no_baseline else (True, False))
    ]
    if args.jobs > 1:
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            done = pool.map(run_one, jobs, chunksize=1)
    else:
        done = [run_one(j) for j in jobs]
    results: dict[str, dict] = {s: {} for s in settings}
    for job, r in zip(jobs, done):
        results[job["setting"]]["pruned" if job["pruned"] else "baseline"] = r["history"]
    for s in settings:
        print(table(s, results[s]["pruned"], results[s].get("baseline")))
    plot(results, out / "pruning_dynamics.png")
    print(f"\nplot: {out / 'pruning_dynamics.png'}")
    main_setting = "fashion-mnist" if "fashion-mnist" in settings else settings[0]
    keys = result_keys(results[main_setting]["pruned"], results[main_setting].get("baseline"))
    for s in settings:
        if s != main_setting:
            keys += result_keys(results[s]["pruned"], results[s].get("baseline"), prefix=f"{s.replace('-', '_')}_")
    print("RESULT " + " ".join(keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
