#!/usr/bin/env bash
# Prepare a python interpreter with numpy and scikit-learn for the
# `rgshield bench perf` reference scripts in this directory.
#
# Usage: benches/reference/setup.sh
#
# Prints, as the last line of stdout, the absolute path of a python
# interpreter that can `import numpy, sklearn`:
#   * the system python3, if it already has both packages;
#   * otherwise benches/reference/.venv/bin/python, creating that venv and
#     installing numpy and scikit-learn into it with pip if needed.
# Idempotent: a second run reuses the venv. All diagnostics go to stderr.
set -euo pipefail

die() { echo "setup.sh: error: $*" >&2; exit 1; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
vpy="$venv/bin/python"

py3="$(command -v python3 || true)"
[ -n "$py3" ] || die "python3 not found on PATH; install Python 3 (>= 3.8) first"

if "$py3" -c 'import numpy, sklearn' >/dev/null 2>&1; then
    echo "setup.sh: using $py3 (numpy and scikit-learn already importable)" >&2
    echo "$py3"
    exit 0
fi

if [ -x "$vpy" ] && "$vpy" -c 'import numpy, sklearn' >/dev/null 2>&1; then
    echo "setup.sh: reusing venv $venv" >&2
    echo "$vpy"
    exit 0
fi

if [ ! -x "$vpy" ]; then
    echo "setup.sh: creating venv $venv" >&2
    "$py3" -m venv "$venv" >&2 || die "could not create venv at $venv (is the python3 venv module installed? e.g. apt-get install python3-venv)"
fi

echo "setup.sh: installing numpy and scikit-learn into $venv" >&2
"$vpy" -m pip install -q --disable-pip-version-check numpy scikit-learn >&2 \
    || die "pip install numpy scikit-learn failed (is PyPI reachable?)"

"$vpy" -c 'import numpy, sklearn' >/dev/null 2>&1 \
    || die "numpy/scikit-learn still not importable from $vpy after install"

"$vpy" -c 'import numpy, sklearn, sys; print("setup.sh: numpy", numpy.__version__, "scikit-learn", sklearn.__version__, file=sys.stderr)' >&2
echo "$vpy"
