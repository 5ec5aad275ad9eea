#!/usr/bin/env bash
# Creates (idempotently) the Python venv the end-to-end tests use for grpcio, websockets and h2.
# Location: $SKIFF_VENV, else <cargo target dir>/venv (the harness looks in the same place).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
workspace="$(dirname "$here")"
target="${CARGO_TARGET_DIR:-$workspace/target}"
case "$target" in /*) ;; *) target="$workspace/$target" ;; esac
venv="${SKIFF_VENV:-$target/venv}"
requirements="$here/python/requirements.txt"
python="${PYTHON:-python3}"

stamp="$venv/.skiff-requirements"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && cmp -s "$requirements" "$stamp"; then
    echo "venv up to date: $venv"
    exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "creating venv $venv"
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --disable-pip-version-check --quiet -r "$requirements"
"$venv/bin/python" -c 'import grpc, websockets, h2'
cp "$requirements" "$stamp"
echo "venv ready: $venv"
