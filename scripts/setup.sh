#!/usr/bin/env bash
# Set up shortwatch on a fresh machine: a virtualenv in .venv with the package installed.
#   bash scripts/setup.sh          runtime only (enough for the demo and the daemon)
#   bash scripts/setup.sh --test   also the test and lint tools
# Needs Python >= 3.11. Installs Debian's python3-venv when venv is missing (as root).
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[ "${1:-}" = "--test" ] && extras="[test]"

PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "shortwatch needs Python >= 3.11 (found: $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
if ! "$PY" -m venv --help >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq python3-venv
    else
        echo "python venv module missing: install python3-venv" >&2
        exit 1
    fi
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras}"
echo "shortwatch installed in .venv ($(.venv/bin/shortwatch --version))"
