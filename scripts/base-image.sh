#!/usr/bin/env bash
# The base image of the container test (tests/test_container.py), built here: no container
# registry is reachable in CI, so `python:3.11-slim` is stood in for by Debian 12 with its own
# Python 3.11 (mmdebstrap, from the Debian mirror), imported into podman's storage under the
# official name. podman keeps it there across runs: it is built once per machine (30 s to 3 min,
# depending on the mirror) and this script returns at once when it exists.
# Needs root, podman and mmdebstrap. Run by scripts/setup.sh, and by the test when it is missing.
set -euo pipefail

BASE=docker.io/library/python:3.11-slim
# What the official image has and the Dockerfile uses: python, venv (ensurepip), useradd.
PACKAGES=python3,python3-venv,python-is-python3,ca-certificates,passwd

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CONTAINERS_CONF=$PWD/tests/containers.conf

if podman image exists "$BASE"; then
    exit 0
fi
printf '==> building the base image %s, once per machine (30 s to 3 min)\n' "$BASE" >&2
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mmdebstrap --quiet --variant=apt --include="$PACKAGES" bookworm "$WORK/rootfs.tar"
podman import --quiet --change 'CMD ["python3"]' "$WORK/rootfs.tar" "$BASE" >/dev/null
