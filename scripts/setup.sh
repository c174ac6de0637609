#!/usr/bin/env bash
# Prepare this checkout for the demo and the tests. Idempotent: run it as often as you like.
#
#  1. System programs the demo and the tests use (mosquitto, mosquitto_sub/_pub, socat,
#     dbus-daemon, rabbitmq-server as a second MQTT broker, chromium and chromium-driver for
#     the status page's browser test, podman and mmdebstrap for the container test,
#     systemd-nspawn for the unit's test under a real systemd). On Debian/Ubuntu the missing ones
#     are installed with apt-get (as root, or through sudo); elsewhere we say what is missing.
#  2. A virtual environment in .venv (Python >= 3.11; set PYTHON=/path/to/python3.x to choose),
#     with the package installed in editable mode plus its test extras, the docs extra (MkDocs
#     and its Material theme, for `mkdocs build --strict`), the modbus extra (pymodbus) and the
#     BLE parser libraries (the `ble-parsers` extra), so that their tests run rather than skip. pip runs again only when pyproject.toml changed since the last
#     successful install.
#  Between the two, as root: the container test's base image (scripts/base-image.sh), built once
#  per machine and kept in podman's storage.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
VENV=$ROOT/.venv
STAMP=$VENV/.setup-stamp

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# -- 1. system packages -------------------------------------------------------------------------
# apt package -> a program it provides (checked on systems without dpkg).
declare -A APT_PACKAGES=(
    [mosquitto]=mosquitto
    [mosquitto-clients]=mosquitto_sub
    [socat]=socat
    [dbus-daemon]=dbus-daemon
    # A second broker (its MQTT plugin) for the tests, which start their own nodes on free
    # loopback ports. Where policy-rc.d allows it, Debian also starts a system service (AMQP and
    # epmd on all interfaces) that the tests do not use: `systemctl disable --now rabbitmq-server`.
    [rabbitmq-server]=rabbitmq-server
    # A real browser for the status page's test (tests/test_statuspage_browser.py): Debian's
    # chromium and its WebDriver, driven by selenium (a test extra) by path, headless.
    [chromium]=chromium
    [chromium-driver]=chromedriver
    # The Dockerfile, built and run (tests/test_container.py, as root): podman with runc (through
    # tests/containers.conf: crun refuses hybrid cgroups), and mmdebstrap to build the base image
    # locally, since no container registry is reachable (scripts/base-image.sh). As root, podman
    # needs neither uidmap nor fuse-overlayfs nor slirp4netns (the test uses the host's network).
    [podman]=podman
    [runc]=runc
    [mmdebstrap]=mmdebstrap
    # The unit under a real systemd (tests/test_systemd_nspawn.py, as root): systemd-nspawn boots
    # this machine's /usr, and the unit runs the gateway with the system's /usr/bin/python3 (the
    # same minor version as the venv's) and the venv's packages; the test reads `ps` inside.
    [systemd-container]=systemd-nspawn
    [python3]=python3
    [procps]=ps
    # An independent Modbus client: tests/test_modbus_net_e2e.py compares its reads with ours.
    [mbpoll]=mbpoll
)

have_program() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

dpkg_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run: $* (run this script as root, or install sudo)"
    fi
}

install_system_packages() {
    local missing=("$@")
    if [ ${#missing[@]} -eq 0 ]; then
        return
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        die "missing system packages: ${missing[*]} (install them with your package manager)"
    fi
    say "installing system packages: ${missing[*]}"
    # One `apt-get update`, and only because something is missing.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

missing_packages() {
    local pkg
    for pkg in "${!APT_PACKAGES[@]}"; do
        if command -v dpkg-query >/dev/null 2>&1; then
            dpkg_installed "$pkg" || echo "$pkg"
        else
            have_program "${APT_PACKAGES[$pkg]}" || echo "$pkg"
        fi
    done
}

# -- 2. Python ----------------------------------------------------------------------------------
python_ok() {
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

find_python() {
    local candidate
    if [ -n "${PYTHON:-}" ]; then
        python_ok "$PYTHON" || die "PYTHON=$PYTHON is not Python >= 3.11"
        echo "$PYTHON"
        return
    fi
    for candidate in python3 python3.13 python3.12 python3.11; do
        if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then
            command -v "$candidate"
            return
        fi
    done
    local found
    found=$(python3 --version 2>&1 || echo "no python3")
    die "Python >= 3.11 is required (found: $found). Install python3.11 or newer, or set PYTHON."
}

venv_ok() {
    [ -x "$VENV/bin/python" ] && python_ok "$VENV/bin/python" && "$VENV/bin/python" -m pip --version \
        >/dev/null 2>&1
}

stamp() {
    { "$VENV/bin/python" --version; cat "$ROOT/pyproject.toml"; } | sha256sum | cut -d' ' -f1
}

container_base_image() {
    if [ "$(id -u)" -ne 0 ] || ! have_program podman || ! have_program mmdebstrap; then
        say "no container base image (tests/test_container.py needs root, podman and mmdebstrap)"
        return
    fi
    "$ROOT/scripts/base-image.sh"
}

# Home Assistant's own tables, to compare ours with (tests/test_ha_discovery.py, HA_SOURCE): the
# few source files it reads, out of the wheel of the release tables.py was copied from. The wheel
# (67 MB) is downloaded once per machine into the user's cache; scripts/test.sh sets HA_SOURCE.
HA_TABLES_VERSION=2026.11.0
HA_SOURCE_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/iot-gateway/homeassistant-$HA_TABLES_VERSION
HA_SOURCE_FILES=(
    homeassistant/const.py
    homeassistant/generated/entity_platforms.py
    homeassistant/components/sensor/const.py
    homeassistant/components/binary_sensor/const.py
    homeassistant/components/mqtt/abbreviations.py
    homeassistant/components/mqtt/const.py
)

home_assistant_source() {
    # Complete when it has every file the test reads now (a file added to the list fetches again).
    local name complete=1
    for name in "${HA_SOURCE_FILES[@]}"; do
        [ -f "$HA_SOURCE_DIR/$name" ] || complete=0
    done
    [ -f "$HA_SOURCE_DIR/.complete" ] && [ "$complete" = 1 ] && return
    say "fetching Home Assistant $HA_TABLES_VERSION's tables into $HA_SOURCE_DIR"
    local wheels
    wheels=$(mktemp -d)
    # Its wheel asks for a newer Python than ours: only a few files are read, never imported.
    "$VENV/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
        --only-binary=:all: --ignore-requires-python -d "$wheels" \
        "homeassistant==$HA_TABLES_VERSION"
    mkdir -p "$HA_SOURCE_DIR"
    "$VENV/bin/python" - "$wheels"/homeassistant-*.whl "$HA_SOURCE_DIR" "${HA_SOURCE_FILES[@]}" <<'PY'
import sys
import zipfile

wheel, target, *names = sys.argv[1:]
with zipfile.ZipFile(wheel) as archive:
    for name in names:
        archive.extract(name, target)
PY
    rm -rf "$wheels"
    touch "$HA_SOURCE_DIR/.complete"
}

main() {
    local missing python
    mapfile -t missing < <(missing_packages | sort)
    python=$(find_python)
    # Debian's python3 needs python3-venv for `python -m venv` (ensurepip).
    if ! venv_ok && ! "$python" -c 'import ensurepip' >/dev/null 2>&1; then
        command -v apt-get >/dev/null 2>&1 \
            || die "$python cannot create virtual environments (ensurepip is missing)"
        missing+=("python3-venv")
    fi
    install_system_packages "${missing[@]}"
    container_base_image

    if ! venv_ok; then
        say "creating $VENV with $python ($("$python" --version 2>&1))"
        rm -rf "$VENV"
        "$python" -m venv "$VENV"
    fi
    if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp)" ] && [ -x "$VENV/bin/gateway" ]; then
        say "environment up to date ($VENV)"
    else
        say "installing the gateway and its test tools into $VENV"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[test,docs,modbus,ble-parsers]"
        stamp >"$STAMP"
        say "ready: $("$VENV/bin/gateway" --version)"
    fi
    home_assistant_source
    echo "$HA_SOURCE_DIR" >"$VENV/.ha-source"
    real_home_assistant
}

# A real Home Assistant for tests/test_homeassistant_real.py (issue 23): installed once per
# machine into a Python 3.13 venv under the user's cache (about a minute), by the script that
# runs it. Python 3.13 comes from pyenv (these machines have it) or python3.13 on the PATH.
real_home_assistant() {
    if ! { command -v pyenv >/dev/null 2>&1 && pyenv prefix 3.13.0 >/dev/null 2>&1; } \
        && ! command -v python3.13 >/dev/null 2>&1 && [ -z "${HA_PYTHON:-}" ]; then
        say "no Python 3.13: tests/test_homeassistant_real.py cannot run a real Home Assistant"
        return
    fi
    "$ROOT/scripts/ha-e2e.sh" --setup-only
}

main "$@"
