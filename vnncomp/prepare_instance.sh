#!/usr/bin/env bash
# VNN-COMP interface: prepare_instance.sh v1 CATEGORY ONNX_FILE VNNLIB_FILE
# Checks the arguments and that the model and the property load and fit each other (the
# competition does not count this time against the instance's timeout), which also fills the
# on-disk caches (Numba kernels, parsed properties) the run then uses. Exit 0 when ready.
set -u
if [ "$#" -ne 4 ]; then
    echo "usage: $0 v1 CATEGORY ONNX_FILE VNNLIB_FILE" >&2
    exit 1
fi
VERSION=$1 CATEGORY=$2 ONNX=$3 VNNLIB=$4
if [ "$VERSION" != "v1" ]; then
    echo "prepare_instance.sh: expected interface version v1, got '$VERSION'" >&2
    exit 1
fi
# the command: $VERIFIER if set, else `verifier` on the PATH, else this checkout's module
if [ -n "${VERIFIER:-}" ]; then read -r -a CMD <<< "$VERIFIER"
elif command -v verifier > /dev/null; then CMD=(verifier)
else  # this checkout, without installing it: its .venv's python if there is one
    ROOT="$(cd "$(dirname "$0")/.." && pwd)"
    PY=python3; [ -x "$ROOT/.venv/bin/python" ] && PY="$ROOT/.venv/bin/python"
    CMD=("$PY" -m verifier.cli)
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
echo "preparing $CATEGORY: $ONNX $VNNLIB" >&2
# `verifier check` imports the model, reads the property and compares with onnxruntime;
# a model or property it cannot read makes this fail (exit 2), as the competition expects.
"${CMD[@]}" check "$ONNX" "$VNNLIB" --samples 2 > /dev/null || exit $?
exit 0
