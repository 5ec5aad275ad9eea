#!/usr/bin/env bash
# Creates (idempotently) the Python venv of the benchmark harness (matplotlib for the plots),
# the same way tests/setup-venv.sh makes the tests' venv, from bench/requirements.txt.
# Location: $SKIFF_BENCH_VENV, else <cargo target dir>/bench-venv. Prints the venv's path last.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
workspace="$(dirname "$here")"
target="${CARGO_TARGET_DIR:-$workspace/target}"
case "$target" in /*) ;; *) target="$workspace/$target" ;; esac
venv="${SKIFF_BENCH_VENV:-$target/bench-venv}"
requirements="$here/requirements.txt"
python="${PYTHON:-python3}"

stamp="$venv/.skiff-requirements"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && cmp -s "$requirements" "$stamp"; then
    echo "bench venv up to date: $venv" >&2
    echo "$venv"
    exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "creating venv $venv" >&2
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --disable-pip-version-check --quiet -r "$requirements" >&2
"$venv/bin/python" -c 'import matplotlib' >&2
cp "$requirements" "$stamp"
echo "bench venv ready: $venv" >&2
echo "$venv"
