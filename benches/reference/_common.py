"""Shared helpers for the `rgshield bench perf` reference scripts.

Reports which BLAS numpy uses and with how many threads (via threadpoolctl,
which is installed together with scikit-learn), optionally limits the BLAS
thread count, and reads the peak resident set size of this process.
"""

import json
import resource
import sys

import numpy as np

try:
    import threadpoolctl
except ImportError:  # numpy-only interpreter: still usable, just less informative
    threadpoolctl = None


def blas_info():
    """(short BLAS description, number of BLAS threads or None)."""
    if threadpoolctl is not None:
        libs = [lib for lib in threadpoolctl.threadpool_info()
                if lib.get("user_api") == "blas"]
        # scipy (pulled in by scikit-learn) may load a second BLAS; the GEMMs
        # here go through numpy's, so prefer the one shipped with numpy.
        libs.sort(key=lambda lib: "numpy" not in (lib.get("filepath") or ""))
        if libs:
            lib = libs[0]
            name = lib.get("internal_api", "blas")
            version = lib.get("version") or "?"
            arch = lib.get("architecture")
            text = f"{name} {version}" + (f" ({arch})" if arch else "")
            return text, lib.get("num_threads")
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '?')}", None
    except Exception:
        return "unknown", None


def limit_threads(threads):
    """Limit BLAS/OpenMP threads for the rest of the process (None: leave as is).

    Returns the threadpoolctl controller, which must be kept alive."""
    if threads is None:
        return None
    if threadpoolctl is None:
        sys.exit("--threads needs threadpoolctl (pip install threadpoolctl)")
    return threadpoolctl.threadpool_limits(limits=threads)


def max_rss_bytes():
    """Peak resident set size of this process in bytes (ru_maxrss is KiB on Linux)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss) if sys.platform == "darwin" else int(rss) * 1024


def emit(record):
    """Write the result as one JSON object on the last line of stdout."""
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()
