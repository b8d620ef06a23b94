"""How `dpap search` scales with workers on PostgreSQL: 1, 2 and 4 workers on one study.

Starts PostgreSQL with tools/postgres.sh in a temporary folder (loopback, a free port;
stopped at the end) and measures two things, each for 1, 2 and 4 worker processes:

1. **Tiny real trials.** N ``dpap search`` processes (``--workers 1`` each, as N machines
   would run them) on a fresh database, ``--trials-per-worker`` × N trials: digits (300
   samples per split), ``8C3-AP2-32FC-10FC``, T=4, ``--epochs`` 5, batch 100, one torch
   thread per worker, no MLflow: a few tenths of a second each. Trials per minute in the
   steady state, from the storage's own timestamps: the trials that ended after every
   worker's first trial (which carries the process's start-up and torch's warm-up, ~2 s)
   over the time from then to the last end; the median trial; and the median gap between
   a worker's trial and its next one (the study's lock, the lost-trial check, the budget
   count, ``study.ask()``).
2. **The storage alone.** N processes run a worker's storage calls for each trial (lock,
   lost-trial check, budget count, ``ask``, ``worker`` attribute, heartbeat, sampling the
   4 knobs, one report, 6 user attributes, the constraint, ``tell``) with no training:
   milliseconds per trial, of which the part held under the study's lock (serial across
   the whole cluster: it caps the study at 1000 / lock-ms trials per second), and the
   most connections the workers held to the database at once. The same for the journal
   file, for comparison (one machine only).
3. **Trials that take time but no CPU.** The loop of part 2 with a ``--sleep`` s pause in
   place of training (``--sleep-trials`` per worker), on PostgreSQL: trials per minute
   with 1, 2, 4 workers when the cores are not the limit, as on a cluster where each
   worker has its own; the speed-up shows what the storage and the study's lock cost.

    python benchmarks/search_scaling.py [--workers 1,2,4] [--trials-per-worker 6]
        [--storage-trials 60] [--sleep 1.0] [--sleep-trials 8] [--out DIR]

The trials are tiny on purpose (a second or two): on a shared 2-core machine 4 workers
contend for 2 cores, so trials per minute cannot grow past 2 workers here; the storage
figures are what carries over to a cluster. Last line: ``RESULT trials_per_min_<N>=...
storage_ms_per_trial_<N>=... lock_ms_per_trial_<N>=... journal_ms_per_trial_<N>=...
pg_connections_<N>=... cpu_free_trials_per_min_<N>=...``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARAMS = """\
data: {{name: digits, processed_dir: {processed}}}
model: {{arch: 8C3-AP2-32FC-10FC, time_steps: 4}}
train: {{epochs: {epochs}, batch_size: 100, threads: 1}}
search:
  target: 0.5
  tolerance: 0.45
  trials: 1
  ranges:
    conv.protect: {{low: 1.0, high: 6.0}}
    epsilon: {{low: 0.6, high: 1.6}}
    fc.beta: {{low: 0.3, high: 1.0}}
    fc.eta: {{low: 5.0, high: 30.0, log: true}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
        self.env = dict(os.environ, DPAP_PG_DIR=str(folder / "pg"), DPAP_PG_PORT=str(_free_port()))
        self.script = str(ROOT / "tools" / "postgres.sh")
        r = subprocess.run([self.script, "start"], env=self.env, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(r.stderr.strip())

    def createdb(self, name: str) -> str:
        return subprocess.run([self.script, "createdb", name], env=self.env, capture_output=True, text=True, check=True).stdout.strip()

    def stop(self) -> None:
        subprocess.run([self.script, "stop"], env=self.env, capture_output=True)


# ----------------------------------------------------------------- 1. tiny real trials


def real_trials(url: str, params: Path, workers: int, trials: int, out: Path) -> dict:
    import optuna

    from dpap.search import make_storage

    cmd = [sys.executable, "-m", "dpap.cli", "search", "--params", str(params), "--storage", url, "--trials", str(trials),
           "--out", str(out), "--no-mlflow", "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore")
    t0 = time.perf_counter()
    with ConnectionCount(url) as count:
        procs = [subprocess.Popen(cmd, cwd=out.parent, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(workers)]
        for p in procs:
            _, err = p.communicate()
            if p.returncode not in (0, 1):
                raise SystemExit(f"dpap search exited {p.returncode}: {err[-2000:]}")
    wall = time.perf_counter() - t0
    trials_done = [t for t in optuna.load_study(study_name="dpap-search", storage=make_storage(url)).trials if t.state.is_finished()]
    firsts = {}
    for t in sorted(trials_done, key=lambda t: t.datetime_complete):
        firsts.setdefault(t.user_attrs["worker"]["pid"], t.datetime_complete)
    warm = max(firsts.values())  # every worker has finished its first (warm-up) trial
    steady = [t for t in trials_done if t.datetime_complete > warm]
    span = (max(t.datetime_complete for t in steady) - warm).total_seconds() if steady else float("nan")
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials_done]
    gaps = []
    by_worker: dict[int, list] = {}
    for t in trials_done:
        by_worker.setdefault(t.user_attrs["worker"]["pid"], []).append(t)
    for ts in by_worker.values():
        ts.sort(key=lambda t: t.datetime_start)
        gaps += [(b.datetime_start - a.datetime_complete).total_seconds() for a, b in zip(ts, ts[1:])]
    from optuna.trial import TrialState

    failed = sum(t.state == TrialState.FAIL for t in trials_done)
    return {"trials": len(trials_done), "failed": failed, "steady": len(steady), "connections": count.most, "per_min": 60 * len(steady) / span, "wall_s": wall, "trial_s": statistics.median(durations),
            "gap_ms": 1000 * statistics.median(gaps) if gaps else float("nan"), "workers_used": len(by_worker)}


# --------------------------------------------------------------- 2. the storage alone


def storage_worker(args: tuple) -> tuple[int, float, float, float]:
    """One worker's storage calls per trial, no training (see the module's text). Returns
    (trials, seconds in all, seconds waiting for the lock, seconds holding it)."""
    url, params, trials, out, index, sleep = args
    import warnings

    import optuna

    from dpap.config import load_params
    from dpap.search import CONSTRAINT, Heartbeat, TrialRecovery, budget_used, make_trial_pruner, make_sampler, open_storage, recover_lost_trials, retry_history, study_lock, suggest_overrides, trial_id
    from dpap.search.recovery import this_worker

    warnings.simplefilter("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = load_params(params, {"search.trials": trials})
    recovery = TrialRecovery(cfg.search.grace_period)
    storage = open_storage(cfg, url, recovery)
    lock = study_lock(url, out, "scaling")
    study = optuna.load_study(study_name="scaling", storage=storage, sampler=make_sampler(cfg, index * 7919), pruner=make_trial_pruner(cfg))
    n = 0
    wait = held = 0.0
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        with lock:
            t1 = time.perf_counter()
            recover_lost_trials(study, storage, recovery)
            if budget_used(study.get_trials(deepcopy=False)) >= trials:
                held += time.perf_counter() - t1
                wait += t1 - t0
                break
            trial = study.ask()
            tid = trial_id(storage, study.study_name, trial.number)
            trial.set_user_attr("worker", this_worker())
            retry_history(storage.get_trial(tid))
            beat = Heartbeat(storage, tid).start()
            t2 = time.perf_counter()
        wait += t1 - t0
        held += t2 - t1
        suggest_overrides(trial, cfg)
        if sleep:
            time.sleep(sleep)  # a trial that takes time but no CPU (part 3)
        trial.report(0.5, 0)
        for key in ("compression", "test_accuracy", "val_accuracy", "params_retained", "epochs_run", "feasible"):
            trial.set_user_attr(key, 0.5)
        trial.set_constraint(CONSTRAINT, -0.1)
        beat.stop()
        study.tell(trial, 0.5)
        n += 1
    return n, time.perf_counter() - start, wait, held


class ConnectionCount:
    """The most connections to ``url``'s database seen while running (PostgreSQL's
    ``pg_stat_activity``, polled every 50 ms from one connection of its own, not counted)."""

    def __init__(self, url: str):
        import threading

        import sqlalchemy

        self.engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        self.most = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        import sqlalchemy

        with self.engine.connect() as conn:
            while not self.stop.wait(0.05):
                n = conn.execute(sqlalchemy.text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
                conn.commit()
                self.most = max(self.most, int(n))

    def __enter__(self) -> "ConnectionCount":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def storage_only(url: str, params: Path, workers: int, trials: int, out: Path, sleep: float = 0.0) -> dict:
    import contextlib

    import optuna

    from dpap.search import is_postgres_url, make_storage

    optuna.create_study(study_name="scaling", storage=make_storage(url), direction="maximize")
    ctx = multiprocessing.get_context("spawn")
    with ConnectionCount(url) if is_postgres_url(url) else contextlib.nullcontext() as count:
        with ctx.Pool(workers) as pool:
            rows = pool.map(storage_worker, [(url, str(params), trials, str(out), i, sleep) for i in range(workers)])
    n = sum(r[0] for r in rows)
    busy = sum(r[1] for r in rows)
    return {"trials": n, "ms_per_trial": 1000 * busy / n, "lock_wait_ms": 1000 * sum(r[2] for r in rows) / n,
            "lock_held_ms": 1000 * sum(r[3] for r in rows) / n, "per_s": n / max(r[1] for r in rows),
            "connections": count.most if count is not None else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--trials-per-worker", type=int, default=8, help="tiny real trials per worker (part 1)")
    ap.add_argument("--epochs", type=int, default=5, help="epochs per real trial (part 1)")
    ap.add_argument("--storage-trials", type=int, default=60, help="storage-only trials per worker (part 2)")
    ap.add_argument("--sleep", type=float, default=1.0, help="seconds of a CPU-free trial (part 3)")
    ap.add_argument("--sleep-trials", type=int, default=8, help="CPU-free trials per worker (part 3)")
    ap.add_argument("--out", default=None, help="working folder (default: a temporary one, removed)")
    args = ap.parse_args(argv)
    counts = [int(w) for w in args.workers.split(",")]
    work = Path(args.out or tempfile.mkdtemp(prefix="dpap-scaling-"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)  # the server's user (postgres) must reach its folder below
    from dpap.config import DataConfig
    from dpap.data import download, preprocess

    real, store, journal, sleeping = {}, {}, {}, {}
    pg = None
    try:
        data = DataConfig(name="digits", raw_dir=str(work / "raw"), processed_dir=str(work / "processed"), limit=300)
        download(data)
        preprocess(data)
        params = work / "params.yaml"
        params.write_text(PARAMS.format(processed=work / "processed", epochs=args.epochs))
        pg = Postgres(work / "postgres")
        for n in counts:
            out = work / f"real-{n}" / "search"
            out.parent.mkdir(parents=True, exist_ok=True)
            real[n] = real_trials(pg.createdb(f"real_{n}"), params, n, args.trials_per_worker * n, out)
            print(f"real trials, {n} worker(s): {real[n]}", flush=True)
        for n in counts:
            store[n] = storage_only(pg.createdb(f"storage_{n}"), params, n, args.storage_trials * n, work)
            print(f"storage only, postgresql, {n} worker(s): {store[n]}", flush=True)
            jdir = work / f"journal-{n}"
            jdir.mkdir(exist_ok=True)
            journal[n] = storage_only(str(jdir / "optuna.journal"), params, n, args.storage_trials * n, jdir)
            print(f"storage only, journal, {n} worker(s): {journal[n]}", flush=True)
        for n in counts:
            sleeping[n] = storage_only(pg.createdb(f"sleep_{n}"), params, n, args.sleep_trials * n, work, sleep=args.sleep)
            sleeping[n]["per_min"] = 60 * sleeping[n]["per_s"]
            print(f"CPU-free {args.sleep} s trials, postgresql, {n} worker(s): {sleeping[n]}", flush=True)
    finally:
        if pg is not None:
            pg.stop()
        if args.out is None:
            shutil.rmtree(work, ignore_errors=True)
    cpu = os.cpu_count()
    print(f"\ntiny real trials on PostgreSQL ({cpu} CPU cores here, shared)")
    print(f"{'workers':>7} {'trials':>6} {'failed':>6} {'steady':>6} {'trials/min':>10} {'speed-up':>8} {'median trial s':>14} {'median gap ms':>13} {'wall s':>7} {'connections':>11}")
    for n in counts:
        r = real[n]
        print(f"{n:7d} {r['trials']:6d} {r['failed']:6d} {r['steady']:6d} {r['per_min']:10.1f} {r['per_min'] / real[counts[0]]['per_min']:8.2f} {r['trial_s']:14.2f} {r['gap_ms']:13.0f} {r['wall_s']:7.1f} {r['connections']:11d}")
    print("\nthe storage alone, per trial (no training)")
    print(f"{'workers':>7} {'storage':>10} {'ms/trial':>8} {'lock wait ms':>12} {'lock held ms':>12} {'trials/s':>8} {'connections':>11}")
    for n in counts:
        for name, r in (("postgresql", store[n]), ("journal", journal[n])):
            conns = "-" if r["connections"] is None else str(r["connections"])
            print(f"{n:7d} {name:>10} {r['ms_per_trial']:8.1f} {r['lock_wait_ms']:12.1f} {r['lock_held_ms']:12.1f} {r['per_s']:8.1f} {conns:>11}")
    print(f"\ntrials of {args.sleep:g} s that use no CPU (part 3), PostgreSQL")
    print(f"{'workers':>7} {'trials':>6} {'trials/min':>10} {'speed-up':>8} {'ideal':>6} {'s per trial, per worker':>24}")
    for n in counts:
        r = sleeping[n]
        print(f"{n:7d} {r['trials']:6d} {r['per_min']:10.1f} {r['per_min'] / sleeping[counts[0]]['per_min']:8.2f} {n / counts[0]:6.1f} {r['ms_per_trial'] / 1000:24.3f}")
    keys = [f"trials_per_min_{n}={real[n]['per_min']:.1f}" for n in counts]
    keys += [f"storage_ms_per_trial_{n}={store[n]['ms_per_trial']:.1f}" for n in counts]
    keys += [f"lock_ms_per_trial_{n}={store[n]['lock_held_ms']:.1f}" for n in counts]
    keys += [f"journal_ms_per_trial_{n}={journal[n]['ms_per_trial']:.1f}" for n in counts]
    keys += [f"pg_connections_{n}={store[n]['connections']}" for n in counts]
    keys += [f"cpu_free_trials_per_min_{n}={sleeping[n]['per_min']:.1f}" for n in counts]
    print("RESULT " + " ".join(keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
