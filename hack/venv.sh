#!/usr/bin/env bash
# Creates .venv and installs lossgate with its test extra (from PyPI), once per pyproject change.
set -euo pipefail
VENV="${VENV:-.venv}"
stamp="$VENV/.installed"
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then exit 0; fi
echo "==> creating $VENV and installing lossgate[test] from PyPI"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q -U pip
"$VENV/bin/python" -m pip install -q -e '.[test,demo,bench]'
touch "$stamp"
