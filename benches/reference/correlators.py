"""numpy reference for the order-2 operator correlators of `rgshield bench perf`.

Measures the cost of the Rust correlator estimator, done the way a numpy user
would do it best (vectorised, BLAS-backed, float64):

Input: HI and LO, uint8 arrays of shape (S, w) with 0/1 entries -- the binary
states of two adjacent layers k (HI) and k-1 (LO), S samples each.

Operator basis (same order as the Rust estimator): for a layer of width w the
m = w + w(w-1)/2 monomials are first the singles [0], [1], ..., [w-1], then the
pairs [i, j] for i in 0..w, j in i+1..w (row-major over i < j).  The operator
value phi_a(s) is the product of the units in the monomial, so for 0/1 states
the pair column [i, j] is s_i * s_j.

Estimates (float64, unbiased normalisation):
    C_kk   = Cov(phi(hi), phi(hi))    (m x m)
    C_k,k-1 = Cov(phi(hi), phi(lo))   (m x m)
    Cov(x, y) = (sum x y^T - sum x sum y^T / S) / (S - 1)
computed as centred GEMMs: F = phi(hi), G = phi(lo) (S x m float64 each),
Fc = F - mean(F), Gc = G - mean(G), C_kk = Fc^T Fc / (S-1),
C_kl = Fc^T Gc / (S-1) -- mathematically identical to the formula above and
the numerically preferable form (np.cov computes the same with extra copies).

Timed phases, each the fastest of --reps repetitions (time.perf_counter):
  evaluate   -- allocating and building F and G from the uint8 states (singles
                copied, pair columns [i, i+1..w) filled by one vectorised
                product per i written in place -- several times faster than
                fancy indexing with np.triu_indices, same result);
  covariance -- centring F and G in place plus the two GEMMs.
The .npy loading and input validation are not timed.  Peak memory is the
process's ru_maxrss (F and G dominate: 2 * S * m * 8 bytes).

With --save-dir DIR the results are written as float64 DIR/ckk.npy and
DIR/ckl.npy so the Rust side can compare its matrices to within 1e-12.

Output: one JSON object on the last line of stdout, see README.md.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.dont_write_bytecode = True  # keep benches/reference free of __pycache__
from _common import blas_info, emit, limit_threads, max_rss_bytes


def operator_matrix(states, out=None):
    """phi(states) as an (S, m) float64 matrix in the Rust basis order."""
    s, w = states.shape
    m = w + w * (w - 1) // 2
    if out is None:
        out = np.empty((s, m), dtype=np.float64)
    x = out[:, :w]
    x[...] = states  # singles (uint8 -> float64)
    off = w
    for i in range(w - 1):
        n = w - 1 - i
        # pairs [i, i+1], ..., [i, w-1]: column i times columns i+1..w-1
        np.multiply(x[:, i:i + 1], x[:, i + 1:], out=out[:, off:off + n])
        off += n
    return out


def covariances(f, g):
    """Centre f and g in place; return (Cov(f, f), Cov(f, g)) in float64."""
    s = f.shape[0]
    f -= f.mean(axis=0)
    g -= g.mean(axis=0)
    ckk = f.T @ f
    ckk /= s - 1
    ckl = f.T @ g
    ckl /= s - 1
    return ckk, ckl


def load_states(path, name):
    a = np.load(path)
    if a.ndim != 2:
        sys.exit(f"{name}: expected a 2-D (S, w) array, got shape {a.shape}")
    if a.dtype != np.uint8:
        if not (np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_):
            sys.exit(f"{name}: expected uint8 0/1 states, got dtype {a.dtype}")
        a = a.astype(np.uint8)
    if a.size and a.max() > 1:
        sys.exit(f"{name}: values must be 0 or 1")
    return np.ascontiguousarray(a)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hi", required=True, help="uint8 (S, w) states of layer k")
    p.add_argument("--lo", required=True, help="uint8 (S, w) states of layer k-1")
    p.add_argument("--reps", type=int, default=2, help="repetitions; fastest is reported")
    p.add_argument("--save-dir", help="write ckk.npy and ckl.npy (float64) here")
    p.add_argument("--threads", type=int, help="limit BLAS threads (default: BLAS default)")
    args = p.parse_args()
    if args.reps < 1:
        sys.exit("--reps must be >= 1")

    hi = load_states(args.hi, "--hi")
    lo = load_states(args.lo, "--lo")
    if hi.shape != lo.shape:
        sys.exit(f"--hi {hi.shape} and --lo {lo.shape} must have the same shape")
    s, w = hi.shape
    if s < 2:
        sys.exit("need at least 2 samples")
    m = w + w * (w - 1) // 2

    _limiter = limit_threads(args.threads)
    blas, threads = blas_info()

    best_eval = best_cov = float("inf")
    for _ in range(args.reps):
        f = g = None  # free the previous repetition's matrices first
        t0 = time.perf_counter()
        f = operator_matrix(hi)
        g = operator_matrix(lo)
        t1 = time.perf_counter()
        ckk, ckl = covariances(f, g)
        t2 = time.perf_counter()
        best_eval = min(best_eval, t1 - t0)
        best_cov = min(best_cov, t2 - t1)

    if args.save_dir:
        os.makedirs(args.save_dir, exist_ok=True)
        np.save(os.path.join(args.save_dir, "ckk.npy"), ckk)
        np.save(os.path.join(args.save_dir, "ckl.npy"), ckl)

    emit({
        "tool": "numpy",
        "numpy": np.__version__,
        "blas": blas,
        "threads": threads,
        "samples": s,
        "width": w,
        "operators": m,
        "reps": args.reps,
        "evaluate_seconds": best_eval,
        "covariance_seconds": best_cov,
        "total_seconds": best_eval + best_cov,
        "max_rss_bytes": max_rss_bytes(),
    })


if __name__ == "__main__":
    main()
