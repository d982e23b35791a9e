#!/usr/bin/env bash
# VNN-COMP interface: run_instance.sh v1 CATEGORY ONNX_FILE VNNLIB_FILE RESULTS_FILE TIMEOUT
# Runs `verifier verify`, which writes RESULTS_FILE: sat (with the counterexample), unsat,
# unknown, timeout or error. Exits with the verifier's status (0 for any answer). The command is
# $VERIFIER if set, else `verifier` on the PATH, else this checkout's module.
set -u
if [ "$#" -ne 6 ]; then
    echo "usage: $0 v1 CATEGORY ONNX_FILE VNNLIB_FILE RESULTS_FILE TIMEOUT" >&2
    exit 1
fi
VERSION=$1 CATEGORY=$2 ONNX=$3 VNNLIB=$4 RESULTS=$5 TIMEOUT=$6
if [ "$VERSION" != "v1" ]; then
    echo "run_instance.sh: expected interface version v1, got '$VERSION'" >&2
    exit 1
fi
if [ -n "${VERIFIER:-}" ]; then read -r -a CMD <<< "$VERIFIER"
elif command -v verifier > /dev/null; then CMD=(verifier)
else  # this checkout, without installing it: its .venv's python if there is one
    ROOT="$(cd "$(dirname "$0")/.." && pwd)"
    PY=python3; [ -x "$ROOT/.venv/bin/python" ] && PY="$ROOT/.venv/bin/python"
    CMD=("$PY" -m verifier.cli)
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
echo "running $CATEGORY: $ONNX $VNNLIB (timeout $TIMEOUT s)" >&2
rm -f "$RESULTS"
"${CMD[@]}" verify "$ONNX" "$VNNLIB" --timeout "$TIMEOUT" --results "$RESULTS"
STATUS=$?
# the verifier writes the results file itself, even for bad input; if it could not even start,
# say error rather than leave no answer
[ -s "$RESULTS" ] || echo error > "$RESULTS"
exit $STATUS
