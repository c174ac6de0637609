#!/usr/bin/env bash
# The demo, end to end on this machine, no hardware needed:
#
#   simulated serial device (pty) -> gateway run -c config/demo.yaml -> private mosquitto
#   -> mosquitto_sub -v, which shows the readings here.
#
# Everything runs on loopback from .demo/ (config, logs, pty link); the system's own mosquitto
# service, if any, is not touched. Stops by itself after DEMO_SECONDS (default 20; 0 = until
# Ctrl-C), then shuts everything down in order: the gateway first (so it can publish `offline`),
# then the simulator, the subscriber and the broker.
#
#   DEMO_SECONDS=8 ./scripts/demo.sh       # a short run
#   DEMO_RATE=10 ./scripts/demo.sh         # lines per second from the simulated device
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
RUN=$ROOT/.demo
BIN=$ROOT/.venv/bin
DEMO_SECONDS=${DEMO_SECONDS:-20}
DEMO_RATE=${DEMO_RATE:-2}

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

[[ $DEMO_SECONDS =~ ^[0-9]+$ ]] || die "DEMO_SECONDS must be a whole number of seconds"
[[ $DEMO_RATE =~ ^[0-9]+([.][0-9]+)?$ ]] || die "DEMO_RATE must be a number (lines per second)"

./scripts/setup.sh

MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$MOSQUITTO" ] || die "mosquitto not found (scripts/setup.sh should have installed it)"

# -- process bookkeeping ------------------------------------------------------------------------
# Each program runs in its own session (setsid) so that Ctrl-C reaches only this script, which
# then stops them in the right order.
declare -A PIDS=()
STOPPED_RC=0

start() { # start NAME LOGFILE COMMAND...
    local name=$1 log=$2
    shift 2
    setsid "$@" >"$log" 2>&1 </dev/null &
    PIDS[$name]=$!
}

alive() { [ -n "${PIDS[$1]:-}" ] && kill -0 "${PIDS[$1]}" 2>/dev/null; }

stop() { # stop NAME [GRACE_SECONDS]: SIGTERM, wait, then SIGKILL; exit status in STOPPED_RC
    local name=$1 grace=${2:-3} pid=${PIDS[$1]:-} i
    STOPPED_RC=0
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < grace * 10; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            say "$name did not stop within ${grace}s: killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || STOPPED_RC=$?
    unset "PIDS[$name]"
}

wait_for() { # wait_for SECONDS WHAT NAME COMMAND...: poll until COMMAND succeeds
    local seconds=$1 what=$2 name=$3 i
    shift 3
    for ((i = 0; i < seconds * 10; i++)); do
        "$@" && return 0
        alive "$name" || die "$name exited while waiting for $what (see $RUN/$name.log)"
        sleep 0.1
    done
    die "timed out waiting for $what (see $RUN/$name.log)"
}

port_open() { (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
    "$BIN/python" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

finish() {
    local status=$? gw_rc readings meter name
    trap - EXIT INT TERM
    set +e
    echo >&2
    if alive gateway; then
        say "stopping the gateway (SIGTERM)"
        stop gateway 15
        sleep 0.3 # let the subscriber print the gateway's `offline` status
    else
        stop gateway
    fi
    gw_rc=$STOPPED_RC
    for name in simulator modbus subscriber display broker; do
        stop "$name"
    done
    readings=$(grep -c '^gateway/boiler/' "$RUN/readings.log" 2>/dev/null)
    meter=$(grep -c '^gateway/meter/' "$RUN/readings.log" 2>/dev/null)
    say "received ${readings:-0} readings from the serial device and ${meter:-0} from the" \
        "Modbus meter; the gateway exited with code $gw_rc; logs in .demo/"
    if [ "$status" -eq 0 ] && { [ "$gw_rc" != 0 ] || [ "${readings:-0}" -eq 0 ] || [ "${meter:-0}" -eq 0 ]; }; then
        say "demo FAILED: see .demo/gateway.log"
        status=1
    fi
    exit "$status"
}

# -- run ----------------------------------------------------------------------------------------
mkdir -p "$RUN"
rm -f "$RUN"/*.log "$RUN/ttySIM" "$RUN/ttyMODBUS"
: >"$RUN/readings.log"
: >"$RUN/gateway.log"
trap finish EXIT
trap 'exit 0' INT # Ctrl-C is the normal way to end an open-ended demo
trap 'exit 143' TERM

PORT=$(free_port)
cat >"$RUN/mosquitto.conf" <<EOF
# Private broker for the demo (written by scripts/demo.sh).
listener $PORT 127.0.0.1
allow_anonymous true
persistence false
log_dest stderr
EOF
say "starting a private mosquitto on 127.0.0.1:$PORT"
start broker "$RUN/broker.log" "$MOSQUITTO" -c "$RUN/mosquitto.conf"
wait_for 10 "mosquitto to listen on port $PORT" broker port_open "$PORT"

say "starting a simulated serial device on .demo/ttySIM ($DEMO_RATE lines/s)"
start simulator "$RUN/simulator.log" \
    "$BIN/gateway" simulate serial --profile kv --link "$RUN/ttySIM" --rate "$DEMO_RATE"
wait_for 10 "the simulated device" simulator test -L "$RUN/ttySIM"
say "starting a simulated Modbus RTU meter on .demo/ttyMODBUS (pymodbus's server)"
start modbus "$RUN/modbus.log" "$BIN/gateway" simulate modbus --link "$RUN/ttyMODBUS"
wait_for 10 "the simulated meter" modbus test -L "$RUN/ttyMODBUS"

start subscriber "$RUN/readings.log" mosquitto_sub -h 127.0.0.1 -p "$PORT" -v -t 'gateway/#'
# Show what the subscriber prints, and the gateway's log, as they come.
tail -q -n +1 -F "$RUN/readings.log" "$RUN/gateway.log" 2>/dev/null &
PIDS[display]=$!

if [ "$DEMO_SECONDS" -eq 0 ]; then
    say "starting: gateway run -c config/demo.yaml (Ctrl-C stops the demo)"
else
    say "starting: gateway run -c config/demo.yaml for ${DEMO_SECONDS}s (Ctrl-C stops earlier)"
fi
export DEMO_MQTT_PORT=$PORT DEMO_TTY=$RUN/ttySIM DEMO_MODBUS_TTY=$RUN/ttyMODBUS
export DEMO_METRICS_PORT=${DEMO_METRICS_PORT:-0}
start gateway "$RUN/gateway.log" "$BIN/gateway" run -c config/demo.yaml

SECONDS=0
while [ "$DEMO_SECONDS" -eq 0 ] || [ "$SECONDS" -lt "$DEMO_SECONDS" ]; do
    alive gateway || die "the gateway exited early (see .demo/gateway.log)"
    sleep 0.2
done
