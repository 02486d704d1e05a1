#!/usr/bin/env python3
"""scikit-learn reference classifiers on the victims' binarised Fashion-MNIST split (issue 13).

Reads the IDX files that Debian's dataset-fashion-mnist installs, binarises every pixel as
rgshield does by default (value > 127 of 255 -> 1, else 0), trains on training images
[train_lo, train_hi) and reports the accuracy on the 10 000 test images of
MLPClassifier(256, 256) and LogisticRegression, one JSON object on the last line of stdout.

    python3 scripts/reference_classifiers.py [--dir /usr/share/datasets/fashion-mnist]
                                             [--train 0:20000] [--seeds 1,2,3]
"""

import argparse
import gzip
import json
import sys
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--train", default="0:20000")
    ap.add_argument("--seeds", default="1,2,3")
    a = ap.parse_args()
    lo, hi = (int(v) for v in a.train.split(":"))
    xtr = read_idx(f"{a.dir}/train-images-idx3-ubyte.gz").reshape(-1, 784)[lo:hi]
    ytr = read_idx(f"{a.dir}/train-labels-idx1-ubyte.gz")[lo:hi]
    xte = read_idx(f"{a.dir}/t10k-images-idx3-ubyte.gz").reshape(-1, 784)
    yte = read_idx(f"{a.dir}/t10k-labels-idx1-ubyte.gz")
    xtr = (xtr > 127).astype(np.float32)
    xte = (xte > 127).astype(np.float32)
    out = {"train_rows": [lo, hi], "test_rows": int(len(yte)), "binarise": "pixel > 127",
           "mlp_256_256": [], "logistic_regression": None}
    for seed in (int(s) for s in a.seeds.split(",")):
        t = time.perf_counter()
        mlp = MLPClassifier(hidden_layer_sizes=(256, 256), random_state=seed,
                            early_stopping=True, max_iter=200)
        mlp.fit(xtr, ytr)
        acc = float((mlp.predict(xte) == yte).mean())
        out["mlp_256_256"].append({"seed": seed, "test_accuracy": acc,
                                   "seconds": time.perf_counter() - t})
        print(f"MLPClassifier(256, 256) seed {seed}: {acc:.4f}", file=sys.stderr)
    t = time.perf_counter()
    lr = LogisticRegression(max_iter=1000)
    lr.fit(xtr, ytr)
    out["logistic_regression"] = {"test_accuracy": float((lr.predict(xte) == yte).mean()),
                                  "seconds": time.perf_counter() - t}
    print(f"LogisticRegression: {out['logistic_regression']['test_accuracy']:.4f}",
          file=sys.stderr)
    accs = [r["test_accuracy"] for r in out["mlp_256_256"]]
    out["mlp_256_256_mean"] = float(np.mean(accs))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
