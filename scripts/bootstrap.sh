#!/usr/bin/env bash
# Sets up everything objmig needs on a fresh Debian machine: system packages, a virtualenv,
# and the package itself in editable mode with its dev extras. Safe to re-run: each step
# checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

. scripts/apt.sh

# PostgreSQL server binaries back the embedded ledger database (initdb + pg_ctl).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  echo "bootstrap: installing PostgreSQL server binaries"
  apt_install postgresql
fi

if ! "$PYTHON" -m venv --help >/dev/null 2>&1; then
  echo "bootstrap: installing python3-venv"
  apt_install python3-venv
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi

stamp="$VENV/.objmig-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[dev]'
  touch "$stamp"
fi
