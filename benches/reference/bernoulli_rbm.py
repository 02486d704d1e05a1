"""scikit-learn reference for the Bernoulli RBM training of `rgshield bench perf`.

Times sklearn.neural_network.BernoulliRBM(...).fit(X) on binarised images
(n x 784, 0/1 values, float32) as the reference for the Rust RBM trainer.

Input: --data X.npy, float32 (or uint8, converted to float32 while loading)
array of shape (n, 784) with 0/1 entries -- binarised Fashion-MNIST training
images written by the Rust side.

What sklearn's fit does: PCD-1 (persistent contrastive divergence, one Gibbs
step from persistent fantasy chains, one chain per batch row), plain SGD with
learning_rate scaled by 1/batch_size, no momentum and no weight decay; the
visible bias update uses the batch mean.  The Rust trainer uses CD-1; the
per-batch cost is the same: 2 up passes (p(h|v) of the data and of the
negative sample), 1 down pass (sampling v from the chain's h), and 2
outer-product GEMMs (v_pos^T h_pos and v_neg^T h_neg), all (batch x 784) by
(784 x hidden) matrix products in BLAS.  sklearn keeps float32 input in
float32 (since 0.23), so components_ is float32 and the GEMMs are SGEMMs;
the JSON reports the dtype actually used.

Timing: the fit only (time.perf_counter around rbm.fit(X)), and separately
the time to load (and convert) the .npy.  pseudo_likelihood is the mean of
rbm.score_samples(X[:1000]) -- a sanity number only (it is stochastic: one
random bit flipped per row), not a timing.

Output: one JSON object on the last line of stdout, see README.md.
"""

import argparse
import sys
import time
import warnings

import numpy as np
import sklearn
from sklearn.neural_network import BernoulliRBM

sys.dont_write_bytecode = True  # keep benches/reference free of __pycache__
from _common import blas_info, emit, limit_threads, max_rss_bytes


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="float32 or uint8 (n, 784) 0/1 array")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="limit BLAS threads (default: BLAS default)")
    args = p.parse_args()

    t0 = time.perf_counter()
    x = np.load(args.data)
    if x.dtype != np.float32:
        if x.dtype not in (np.uint8, np.bool_):
            sys.exit(f"--data: expected float32 or uint8, got dtype {x.dtype}")
        x = x.astype(np.float32)
    x = np.ascontiguousarray(x)
    load_seconds = time.perf_counter() - t0
    if x.ndim != 2:
        sys.exit(f"--data: expected a 2-D (n, 784) array, got shape {x.shape}")

    _limiter = limit_threads(args.threads)
    blas, threads = blas_info()

    rbm = BernoulliRBM(
        n_components=args.hidden,
        learning_rate=args.lr,
        batch_size=args.batch,
        n_iter=args.epochs,
        random_state=args.seed,
        verbose=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. overflow warnings in logistic
        t0 = time.perf_counter()
        rbm.fit(x)
        fit_seconds = time.perf_counter() - t0
        pseudo_likelihood = float(np.mean(rbm.score_samples(x[:1000])))

    dtype = str(rbm.components_.dtype)
    if dtype != "float32":
        print(f"bernoulli_rbm.py: warning: sklearn trained in {dtype}, not float32",
              file=sys.stderr)

    emit({
        "tool": "sklearn.BernoulliRBM",
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "blas": blas,
        "threads": threads,
        "rows": int(x.shape[0]),
        "n_visible": int(x.shape[1]),
        "hidden": args.hidden,
        "batch": args.batch,
        "lr": args.lr,
        "epochs": args.epochs,
        "seed": args.seed,
        "dtype": dtype,
        "load_seconds": load_seconds,
        "fit_seconds": fit_seconds,
        "seconds_per_epoch": fit_seconds / args.epochs,
        "max_rss_bytes": max_rss_bytes(),
        "pseudo_likelihood": pseudo_likelihood,
    })


if __name__ == "__main__":
    main()
