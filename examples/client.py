#!/usr/bin/env python3
"""Call `rgshield serve` and print each input's class and probabilities (standard library only).

Start a server first, e.g.

    rgshield train --data digits --out runs/d3
    rgshield serve --model runs/d3 --output probabilities

then

    python3 examples/client.py                      # the first 5 embedded digits
    python3 examples/client.py --rows 20 --check    # 20 digits, and check every answer

By default the inputs are rows of the embedded digits (data/digits.csv.gz: 64 pixels 0-16 and the
label), binarised as rgshield does (pixel > 7 -> 1). `--csv FILE` reads other rows (plain or .gz;
values in [0, 1], or raw values with --binarize T; the last column is a label with --label-last).

The API (docs/guide/serve.md): GET /v1/model describes the model; POST /v1/predict takes
{"inputs": [[x_1, ..., x_n], ...]} and answers {"outputs": [[...], ...], "classes": [...]}.
A server run with `--output scores` (its default) answers per-class scores whose sum is near but
not at 1; the client then divides each answer by its sum before printing and says so.
"""

import argparse
import csv
import gzip
import io
import json
import os
import sys
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
DIGITS = os.path.join(HERE, "..", "data", "digits.csv.gz")


def call(url, path, body=None):
    """GET (no body) or POST JSON to url+path; return the decoded JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url.rstrip("/") + path, data=data)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        # The server answers every error with {"error": "..."}.
        try:
            msg = json.load(e).get("error", "")
        except ValueError:
            msg = ""
        sys.exit(f"client: {path}: HTTP {e.code}: {msg}")
    except urllib.error.URLError as e:
        sys.exit(f"client: cannot reach {url}: {e.reason}")


def read_rows(path, label_last, binarize, rows):
    """Up to `rows` rows of floats from a CSV (gzip when it ends in .gz), with their labels."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        sys.exit(f"client: cannot read {path}: {e.strerror}")
    if path.endswith(".gz"):
        raw = gzip.decompress(raw)
    inputs, labels = [], []
    for rec in csv.reader(io.StringIO(raw.decode())):
        if not rec:
            continue
        try:
            vals = [float(v) for v in rec]
        except ValueError as e:
            sys.exit(f"client: {path}, row {len(inputs) + 1}: {e}")
        if label_last:
            labels.append(int(vals.pop()))
        if binarize is not None:
            vals = [1.0 if v > binarize else 0.0 for v in vals]
        inputs.append(vals)
        if len(inputs) == rows:
            break
    return inputs, labels


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080", help="the server's address")
    ap.add_argument("--csv", help="rows to send (default: the embedded digits, binarised > 7)")
    ap.add_argument("--label-last", action="store_true", help="the CSV's last column is a label")
    ap.add_argument("--binarize", type=float, help="send value > T as 1, else 0")
    ap.add_argument("--rows", type=int, default=5, help="how many rows to send (default 5)")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless every answer has one probability per class, summing to 1, "
                         "and its class is the most probable one")
    ap.add_argument("--min-accuracy", type=float, default=0.0,
                    help="with labels: exit 1 if fewer of the classes than this share equal them")
    a = ap.parse_args()
    if a.rows < 1:
        sys.exit("client: --rows must be at least 1")
    if a.csv is None:
        a.csv, a.label_last, a.binarize = DIGITS, True, 7.0

    info = call(a.url, "/v1/model")
    names = info["class_names"]
    n_in = info["widths"][0]
    inputs, labels = read_rows(a.csv, a.label_last, a.binarize, a.rows)
    bad = [i for i, x in enumerate(inputs) if len(x) != n_in]
    if bad:
        sys.exit(f"client: row {bad[0]} has {len(inputs[bad[0]])} values; the model takes {n_in}")

    ans = call(a.url, "/v1/predict", {"inputs": inputs})
    scores = info.get("output") != "probabilities"
    print(f"model {info['widths']} on {info.get('dataset')}, {len(inputs)} inputs; "
          + ("scores divided by their sum" if scores else "probabilities as served"))
    problems, right = [], 0
    for i, (out, cls) in enumerate(zip(ans["outputs"], ans["classes"])):
        total = sum(out)
        probs = [v / total for v in out] if scores and total > 0 else out
        label = f" (label {names[labels[i]]})" if labels else ""
        if labels and cls == labels[i]:
            right += 1
        shown = ", ".join(f"{names[j]}: {p:.3f}" for j, p in enumerate(probs))
        print(f"input {i}{label}: class {names[cls]}; probabilities {shown}")
        if len(probs) != len(names):
            problems.append(f"input {i}: {len(probs)} values for {len(names)} classes")
        if abs(sum(probs) - 1.0) > 1e-4 or min(probs) < 0.0:
            problems.append(f"input {i}: probabilities sum to {sum(probs)}")
        if probs[cls] < max(probs):
            problems.append(f"input {i}: class {cls} is not the most probable")
    if len(ans["classes"]) != len(inputs):
        problems.append(f"{len(ans['classes'])} answers for {len(inputs)} inputs")
    if labels:
        print(f"{right} of {len(inputs)} classes equal the labels")
        if right < a.min_accuracy * len(inputs):
            problems.append(f"accuracy {right}/{len(inputs)} below {a.min_accuracy}")
    if a.check or a.min_accuracy > 0:
        for p in problems:
            print(f"check failed: {p}", file=sys.stderr)
        if problems:
            sys.exit(1)
        print("check passed")


if __name__ == "__main__":
    main()
