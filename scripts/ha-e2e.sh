#!/usr/bin/env bash
# The gateway against a real Home Assistant, end to end (issue 23): see scripts/ha_e2e.py.
# Once, it installs Home Assistant into a venv under ~/.cache/iot-gateway/ha-e2e/ (Python 3.13
# from pyenv, or HA_PYTHON); then every run starts mosquitto, Home Assistant and the gateway on
# loopback and prints one line per scenario, pass or fail, with its figures.
#   scripts/ha-e2e.sh [--setup-only] [--keep DIR] [--json FILE]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-$root/.venv/bin/python}" "$root/scripts/ha_e2e.py" "$@"
