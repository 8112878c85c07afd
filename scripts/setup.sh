#!/usr/bin/env bash
# Set up shortwatch on a fresh machine: a virtualenv in .venv with the package installed.
#   bash scripts/setup.sh          runtime only (enough for the demo and the daemon)
#   bash scripts/setup.sh --test   also the test and lint tools, and the real servers the tests
#                                  start (mosquitto, socat, influxd, victoria-metrics, alertmanager)
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
# The integration tests start real servers on loopback; install the Debian packages that are missing.
if [ -n "$extras" ]; then
    need=()
    command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto mosquitto-clients)
    command -v socat >/dev/null || need+=(socat)
    command -v influxd >/dev/null || need+=(influxdb)
    command -v victoria-metrics >/dev/null || need+=(victoria-metrics)
    command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)
    if [ ${#need[@]} -gt 0 ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "installing test servers: ${need[*]}"
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
        else
            echo "missing test servers (${need[*]}): install them (apt-get install ${need[*]}); their tests are skipped" >&2
        fi
    fi
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras}"
echo "shortwatch installed in .venv ($(.venv/bin/shortwatch --version))"
