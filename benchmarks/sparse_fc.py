"""Is a sparse kernel faster than the dense one for a pruned FC layer? (issue #11, item 2:
"use a sparse kernel if and only if it measures faster").

The paper's MNIST SNN's hidden FC layer after compaction at 50 % of its channels and
neurons pruned (150 × 980; input: T·N = 4·100 rows of spikes), its surviving synapses at
several densities (random masks). For each density: the dense ``x @ Wᵀ`` (what training
runs, masked zeros included), and ``torch.sparse.mm`` with the weight in CSR and in COO
form; forward (inference) and forward + backward with respect to the input and the
weight values (training), medians over interleaved rounds, process CPU time.

Last line: ``RESULT sparse_faster_below_density=<the highest density at which the
fastest sparse form beats dense in training; 0 if none>``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch


def timed(fn, rounds: int) -> float:
    fn()
    ts = []
    for _ in range(rounds):
        t0 = time.process_time()
        fn()
        ts.append(time.process_time() - t0)
    return statistics.median(ts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=400, help="T·N input rows")
    ap.add_argument("--out", type=int, default=150)
    ap.add_argument("--inp", type=int, default=980)
    ap.add_argument("--densities", default="0.5,0.3,0.1,0.03,0.01")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)  # sparse support is beta; invariant checks off
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(args.rows, args.inp, generator=g) < 0.2).float()
    print(f"torch {torch.__version__}, {args.threads} thread(s), FC {args.out}x{args.inp}, {args.rows} input rows, CPU time, medians of {args.rounds}")
    print(f"{'density':>8} | {'dense fwd':>9} {'csr fwd':>9} {'coo fwd':>9} | {'dense f+b':>9} {'csr f+b':>9} {'coo f+b':>9}   (ms)")
    best = 0.0
    for d in (float(v) for v in args.densities.split(",")):
        w = torch.randn(args.out, args.inp, generator=g) * (torch.rand(args.out, args.inp, generator=g) < d)
        csr, coo = w.to_sparse_csr(), w.to_sparse_coo().coalesce()

        def dense_fwd():
            with torch.no_grad():
                x @ w.t()

        def sparse_fwd(s):
            with torch.no_grad():
                torch.sparse.mm(s, x.t())

        def dense_train():
            wd, xi = w.clone().requires_grad_(), x.clone().requires_grad_()
            (xi @ wd.t()).sum().backward()

        def sparse_train(s):
            values = s.values().clone().requires_grad_()
            if s.layout == torch.sparse_csr:
                ws = torch.sparse_csr_tensor(s.crow_indices(), s.col_indices(), values, s.shape)
            else:
                ws = torch.sparse_coo_tensor(s.indices(), values, s.shape, is_coalesced=True)
            xi = x.clone().requires_grad_()
            torch.sparse.mm(ws, xi.t()).sum().backward()

        row = [timed(dense_fwd, args.rounds), timed(lambda: sparse_fwd(csr), args.rounds), timed(lambda: sparse_fwd(coo), args.rounds)]
        train = [timed(dense_train, args.rounds)]
        for s in (csr, coo):
            try:
                train.append(timed(lambda: sparse_train(s), args.rounds))
            except (RuntimeError, NotImplementedError):  # no backward for this layout
                train.append(float("nan"))
        print(f"{d:>8.2f} | " + " ".join(f"{t * 1e3:>9.2f}" for t in row) + " | " + " ".join(f"{t * 1e3:>9.2f}" for t in train))
        sparse_best = min((t for t in train[1:] if t == t), default=float("inf"))
        if sparse_best < train[0] and d > best:
            best = d
    print(f"RESULT sparse_faster_below_density={best:g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
