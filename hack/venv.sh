#!/usr/bin/env bash
# Creates .venv with the locked CI dependencies (requirements/ci.txt, from PyPI), then lossgate and
# the development tree (devtools/) as editable installs without resolving anything again. Re-runs
# when pyproject.toml, devtools/pyproject.toml or the lock changes.
set -euo pipefail
VENV="${VENV:-.venv}"
stamp="$VENV/.installed"
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt devtools/pyproject.toml ] \
  && [ "$stamp" -nt requirements/ci.txt ] \
  && [ "$stamp" -nt requirements/torch.txt ]; then exit 0; fi
echo "==> creating $VENV: requirements/ci.txt + torch.txt (locked), then lossgate and devtools/ (editable)"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q -U pip
# ci.txt and torch.txt (the `torch` extra: tests/training, bench/training_hooks.py) in one resolution.
"$VENV/bin/python" -m pip install -q -r requirements/ci.txt -r requirements/torch.txt
# PYTHONWARNINGS: setuptools reminds on every editable install that a folder named like the package
# may shadow it (true of any editable install; nothing to fix).
PYTHONWARNINGS=ignore "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e . -e ./devtools
touch "$stamp"
