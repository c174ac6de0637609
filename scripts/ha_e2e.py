#!/usr/bin/env python3
"""The gateway against a real Home Assistant, end to end (issue 23, "Proof").

Run by `scripts/ha-e2e.sh`. Everything on loopback:

1. Once, cached under the user's cache dir (`~/.cache/iot-gateway/ha-e2e/<version>/`, not in
   the repository): a Python 3.13 venv with `homeassistant==<version>` installed with Home
   Assistant's own `package_constraints.txt`, plus the requirements of the integrations the
   minimal config loads, so Home Assistant installs nothing at run time (`--skip-pip`).
2. A private mosquitto, Home Assistant on a free port with a minimal config (no
   `default_config`), its owner user and token made through the onboarding API, MQTT set up
   through its config flow as a user would.
3. The gateway (`python -m gateway run`) with the issue's example config: a Modbus slave played
   by pymodbus's own server over a socat pty (coil relay, holding setpoint, holding mode), and a
   serial `heater` on a pty with `power`/`reset` commands and `availability: {timeout: ...}`.
4. Scenarios, each reported pass/fail with its figures; a failure does not stop the others.
   Checks go through Home Assistant's REST API (`/api/states`, `/api/services/...`) and its
   websocket (the entity registry), and at the devices (the simulator's registers, the bytes
   that reach the heater's pty).

If the gateway refuses the controls of the issue's config (they are not built yet), the
control scenarios fail with the reason and the defect scenarios run on the config without the
control keys.

Usage: scripts/ha-e2e.sh [--setup-only] [--keep DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
)  # the daemon (`python -m gateway`) runs from this checkout

from helpers import (  # noqa: E402 - the tests' real parts: mosquitto, socat ptys, the daemon
    FAST_BACKOFF,
    Broker,
    Daemon,
    SerialPair,
    Subscriber,
    gateway_config,
    serial_device,
)

from gateway.modbus.simulator import ModbusSimulator  # noqa: E402

HA_VERSION = os.environ.get("HA_VERSION", "2026.2.3")
#: The integrations the minimal config loads (with their dependencies): their requirements are
#: installed up front, so Home Assistant never installs at run time.
INTEGRATIONS = (
    "homeassistant", "http", "api", "config", "onboarding", "logger", "system_log",
    "persistent_notification", "mqtt", "sensor", "binary_sensor", "switch", "number",
    "select", "button", "frontend",  # (without the frontend: recovery mode)
)  # fmt: skip
AVAILABILITY_TIMEOUT = 3.0  # the heater's availability.timeout (seconds) in the e2e config
SHOWN_WITHIN = 2.0  # the issue's bound: a first reading is shown this soon after its line
UNIT = 1  # the Modbus slave's unit id
COIL, SETPOINT, MODE = 3, 0x10, 0x11  # the contract's addresses


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "iot-gateway" / "ha-e2e" / HA_VERSION


def log(text: str) -> None:
    print(f"[ha-e2e {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- 1. Home Assistant in its own venv, once --------------------------------------------------


def python313() -> str:
    """Home Assistant 2026 needs Python 3.13 (3.13.0 with `--ignore-requires-python`)."""
    if found := os.environ.get("HA_PYTHON"):
        return found
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        prefix = subprocess.run(
            ["pyenv", "prefix", "3.13.0"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if prefix:
            return f"{prefix}/bin/python"
    if found := shutil.which("python3.13"):
        return found
    raise SystemExit("no Python 3.13: install it (pyenv install 3.13.0) or set HA_PYTHON")


def setup() -> Path:
    """The venv's python, installing it first if needed (a few minutes of CPU, once)."""
    home = cache_dir()
    venv = home / "venv"
    python = venv / "bin" / "python"
    stamp = home / "ready"
    if stamp.exists() and python.exists():
        return python
    home.mkdir(parents=True, exist_ok=True)
    log(f"installing Home Assistant {HA_VERSION} into {venv} (once; a few minutes)")
    if not python.exists():
        subprocess.run([python313(), "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "-q", "--disable-pip-version-check"]
    wheels = home / "wheels"
    subprocess.run(
        [*pip, "download", "--no-deps", "--ignore-requires-python", "-d", str(wheels),
         f"homeassistant=={HA_VERSION}"],
        check=True,
    )  # fmt: skip
    wheel = next(wheels.glob(f"homeassistant-{HA_VERSION}-*.whl"))
    constraints = home / "constraints.txt"
    with zipfile.ZipFile(wheel) as zf:  # Home Assistant's own pins: no resolver backtracking
        constraints.write_bytes(zf.read("homeassistant/package_constraints.txt"))
    # 2026.2 asks for Python >= 3.13.2; 3.13.0 runs it (the runner skips its version check).
    subprocess.run(
        [*pip, "install", "--ignore-requires-python", "-c", str(constraints), str(wheel)],
        check=True,
    )
    requirements = integration_requirements(python)
    if requirements:
        subprocess.run([*pip, "install", "-c", str(constraints), *requirements], check=True)
    stamp.write_text(f"{HA_VERSION}\n{' '.join(requirements)}\n")
    return python


def integration_requirements(python: Path) -> list[str]:
    """The `requirements` of INTEGRATIONS and their dependencies, from their manifests."""
    code = (
        "import json, pathlib, sys, homeassistant.components as c\n"
        "base = pathlib.Path(c.__path__[0]); todo = sys.argv[1:]; seen = set(); reqs = set()\n"
        "while todo:\n"
        "    name = todo.pop()\n"
        "    if name in seen: continue\n"
        "    seen.add(name)\n"
        "    manifest = json.loads((base / name / 'manifest.json').read_text())\n"
        "    reqs.update(manifest.get('requirements', []))\n"
        "    todo += manifest.get('dependencies', [])\n"
        "print('\\n'.join(sorted(reqs)))\n"
    )
    out = subprocess.run(
        [str(python), "-c", code, *INTEGRATIONS], capture_output=True, text=True, check=True
    ).stdout
    return out.split()


# -- 2. mosquitto, Home Assistant, its user and its MQTT ---------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        if result := check():
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


class HomeAssistant:
    """`hass -c DIR --skip-pip` on 127.0.0.1:PORT, with a fresh config dir."""

    def __init__(self, python: Path, workdir: Path) -> None:
        self.python = python
        self.config_dir = workdir / "ha-config"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "ha.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""

    def start(self) -> None:
        (self.config_dir / "configuration.yaml").write_text(
            "homeassistant:\n  name: e2e\n  latitude: 0\n  longitude: 0\n  elevation: 0\n"
            "  unit_system: metric\n  time_zone: UTC\n  country: DE\n  currency: EUR\n"
            f"http:\n  server_host: [127.0.0.1]\n  server_port: {self.port}\n"
            "api:\nconfig:\nonboarding:\n"
            "logger:\n  default: warning\n  logs:\n    homeassistant.components.mqtt: debug\n"
        )
        runner = self.config_dir.parent / "run_hass.py"
        runner.write_text(
            "import sys\nimport homeassistant.__main__ as m\n"
            "m.validate_python = lambda: None  # 3.13.0 runs what asks for 3.13.2\n"
            "sys.argv = ['hass', '-c', sys.argv[1], '--skip-pip']\nsys.exit(m.main())\n"
        )
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(self.python), str(runner), str(self.config_dir)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        started = time.monotonic()
        wait_for(self._up, 120.0, "Home Assistant's HTTP API", every=0.5)
        log(f"Home Assistant {HA_VERSION} up in {time.monotonic() - started:.1f}s on {self.base}")

    def _up(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"Home Assistant exited ({self.proc.returncode}): {self.log_path}")
        try:
            self.request("GET", "/api/onboarding", auth=False)
        except (OSError, urllib.error.URLError):
            return False
        return True

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        form: dict[str, str] | None = None,
        auth: bool = True,
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if auth else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        # (http on loopback only: self.base is ours)
        req = urllib.request.Request(self.base + path, data, headers, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=10) as reply:  # noqa: S310
                text = reply.read().decode()
                status = reply.status
        except urllib.error.HTTPError as exc:
            text, status = exc.read().decode(errors="replace"), exc.code
        try:
            return status, json.loads(text) if text else None
        except ValueError:
            return status, text

    def onboard(self) -> None:
        """The owner user through the onboarding API, and an access token for it."""
        client_id = self.base + "/"
        status, reply = self.request(
            "POST",
            "/api/onboarding/users",
            {"client_id": client_id, "name": "E2E", "username": "e2e", "password": "e2e-pass",
             "language": "en"},
            auth=False,
        )  # fmt: skip
        if status != 200:
            raise RuntimeError(f"onboarding refused the user: {status} {reply}")
        status, tokens = self.request(
            "POST",
            "/auth/token",
            form={"grant_type": "authorization_code", "code": reply["auth_code"],
                  "client_id": client_id},
            auth=False,
        )  # fmt: skip
        if status != 200:
            raise RuntimeError(f"no token: {status} {tokens}")
        self.token = tokens["access_token"]

    def setup_mqtt(self, broker: Broker) -> None:
        """MQTT as a config entry, through the config flow as a user would."""
        status, flow = self.request("POST", "/api/config/config_entries/flow", {"handler": "mqtt"})
        if flow.get("type") == "menu":
            status, flow = self.request(
                "POST", f"/api/config/config_entries/flow/{flow['flow_id']}",
                {"next_step_id": "broker"},
            )  # fmt: skip
        status, flow = self.request(
            "POST", f"/api/config/config_entries/flow/{flow['flow_id']}",
            {"broker": broker.host, "port": broker.port},
        )  # fmt: skip
        if flow.get("type") != "create_entry":
            raise RuntimeError(f"the MQTT config flow did not create an entry: {status} {flow}")
        wait_for(
            lambda: any(
                e["domain"] == "mqtt" and e["state"] == "loaded"
                for e in self.request("GET", "/api/config/config_entries/entry")[1]
            ),
            30.0,
            "the MQTT entry to load",
        )

    def state(self, entity_id: str) -> dict[str, Any] | None:
        status, body = self.request("GET", f"/api/states/{entity_id}")
        return body if status == 200 else None

    def call(self, domain: str, service: str, data: dict[str, Any]) -> tuple[int, Any]:
        return self.request("POST", f"/api/services/{domain}/{service}", data)

    def entity_registry(self) -> list[dict[str, Any]]:
        return asyncio.run(self._ws("config/entity_registry/list"))

    async def _ws(self, command: str) -> Any:
        import aiohttp  # noqa: PLC0415 - the gateway's own dependency

        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(self.base + "/api/websocket") as ws,
        ):
            await ws.receive_json()  # auth_required
            await ws.send_json({"type": "auth", "access_token": self.token})
            if (await ws.receive_json()).get("type") != "auth_ok":
                raise RuntimeError("websocket auth refused")
            await ws.send_json({"id": 1, "type": command})
            return (await ws.receive_json())["result"]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# -- 3. the devices and the gateway -----------------------------------------------------------


class SimulatorThread:
    """pymodbus's own server, in a thread with its own event loop, so that the harness may block
    (waiting on Home Assistant) without the slave missing a poll. `sim.values` is live."""

    def __init__(self, pair: SerialPair) -> None:
        units = {UNIT: {"coil": {COIL: 0}, "holding": {SETPOINT: 200, MODE: 0}}}
        self.sim = ModbusSimulator(pair.peer, units, parity="N")
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._run, name="modbus-simulator", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._task = self._loop.create_task(self.sim.serve(), name="modbus-simulator")
        with contextlib.suppress(asyncio.CancelledError):
            self._loop.run_until_complete(self._task)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(5)

    def cell(self, function: str, address: int) -> int | None:
        return self.sim.values[UNIT].get(function, {}).get(address)


class PeerReader:
    """Everything the gateway writes to a serial device (the bytes at the pty's other end)."""

    def __init__(self, pair: SerialPair) -> None:
        self._fd = os.open(pair.peer, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        self.data = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peer-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            with contextlib.suppress(BlockingIOError):
                while chunk := os.read(self._fd, 4096):
                    self.data += chunk

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        os.close(self._fd)


def contract_devices(modbus: SerialPair, heater: SerialPair) -> list[dict[str, Any]]:
    """The issue's example config (Modbus and serial parts), on the test's ptys."""
    meter = {
        "id": "meter1",
        "type": "modbus",
        "port": modbus.dev,
        "parity": "N",
        "unit_id": UNIT,
        "poll_interval": 1.0,
        "timeout": 0.3,
        "retries": 0,
        "backoff": dict(FAST_BACKOFF),
        "registers": [
            {"name": "relay", "address": COIL, "function": "coil",
             "homeassistant": {"platform": "switch"}},
            {"name": "setpoint", "address": SETPOINT, "function": "holding",
             "data_type": "int16", "scale": 0.1, "unit": "°C",
             "homeassistant": {"platform": "number", "min": 5, "max": 30, "step": 0.5,
                               "mode": "box"}},
            {"name": "mode", "address": MODE, "function": "holding", "data_type": "uint16",
             "options": {0: "off", 1: "eco", 2: "comfort"},
             "homeassistant": {"platform": "select"}},
        ],
    }  # fmt: skip
    heater_device = serial_device(
        "heater",
        heater,
        sensors={
            # No expire_after: unavailable in Home Assistant only through the gateway's
            # availability topic (what defect 1 is about), not through HA's own timer.
            "temp": {"unit": "°C", "device_class": "temperature",
                     "homeassistant": {"expire_after": None}},
        },
        availability={"timeout": AVAILABILITY_TIMEOUT},
        commands={"power": "PWR {payload}", "reset": "RST"},
        controls={
            "power": {"platform": "switch", "payload_on": "1", "payload_off": "0",
                      "state": "power"},
            "reset": {"platform": "button"},
        },
    )  # fmt: skip
    return [meter, heater_device]


def without_controls(devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The config less what only controls need (for a gateway that has no controls yet)."""
    out = copy.deepcopy(devices)
    for device in out:
        device.pop("controls", None)
        for register in device.get("registers", []):
            register.pop("options", None)
            ha = register.get("homeassistant", {})
            for key in ("platform", "min", "max", "step", "mode"):
                ha.pop(key, None)
            if not ha:
                register.pop("homeassistant", None)
    return out


def check_config(cfg: dict[str, Any], workdir: Path) -> str | None:
    """None if the gateway takes the config, else what it said."""
    import yaml  # noqa: PLC0415

    path = workdir / "check.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return None if done.returncode == 0 else (done.stderr or done.stdout).strip()


# -- 4. the scenarios ----------------------------------------------------------------------------


@dataclass
class Outcome:
    name: str
    ok: bool
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    ha: HomeAssistant
    broker: Broker
    daemon: Daemon
    sim: SimulatorThread
    heater: SerialPair
    peer: PeerReader
    subscriber: Subscriber
    controls: str | None  # why the gateway refused the controls (None: it took them)
    ids: dict[str, str] = field(default_factory=dict)  # unique_id -> entity_id
    outcomes: list[Outcome] = field(default_factory=list)

    def entity(self, unique_id: str, fallback: str) -> str:
        if not self.ids:
            self.ids = {
                e["unique_id"]: e["entity_id"]
                for e in self.ha.entity_registry()
                if e.get("platform") == "mqtt"
            }
        return self.ids.get(unique_id, fallback)

    def shown(self, entity_id: str, state: str, timeout: float) -> float:
        """Seconds until Home Assistant shows `state` (TimeoutError: never)."""
        started = time.monotonic()
        seen: list[str | None] = [None]

        def check() -> bool:
            found = self.ha.state(entity_id)
            seen[0] = None if found is None else found["state"]
            return seen[0] == state

        try:
            wait_for(check, timeout, f"{entity_id} = {state}", every=0.02)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc} (it shows {seen[0]!r})") from None
        return time.monotonic() - started

    def scenario(
        self, name: str, needs_controls: bool = False
    ) -> Callable[[Callable[[], Outcome]], None]:
        def run(body: Callable[[], Outcome]) -> None:
            log(f"scenario: {name}")
            if needs_controls and self.controls is not None:
                errors = self.controls.splitlines()
                outcome = Outcome(
                    name,
                    False,
                    f"the gateway refused the issue's controls config ({len(errors)} error(s), "
                    f"first: {errors[0] if errors else '?'})",
                )
            else:
                try:
                    outcome = body()
                except Exception as exc:  # each scenario reports; the rest go on
                    outcome = Outcome(name, False, f"{type(exc).__name__}: {exc}")
                outcome.name = name
            log(f"  {'PASS' if outcome.ok else 'FAIL'}: {outcome.detail}")
            self.outcomes.append(outcome)

        return run


def scenarios(run: Run, started_at: float) -> None:  # noqa: PLR0915 - one list of scenarios
    ha, sim, heater, sub = run.ha, run.sim, run.heater, run.subscriber
    temp = "sensor.heater_temp"

    @run.scenario("first reading at start shown within 2 s of its line (defect 2)")
    def _() -> Outcome:
        seconds = run.shown(temp, "20.5", 15.0)
        took = time.monotonic() - started_at
        entity = run.entity("gw1:heater:temp", temp)
        return Outcome(
            "",
            took <= SHOWN_WITHIN and entity == temp,
            f"{entity} showed 20.5 {took:.2f}s after the line (bound {SHOWN_WITHIN:g}s)",
            {"seconds": round(took, 3), "polled": round(seconds, 3), "entity_id": entity},
        )

    @run.scenario("offline after every silence, online with every reading after (defect 1)")
    def _() -> Outcome:
        rounds = []
        last_line = started_at
        for n in range(1, 4):
            run.shown(temp, "unavailable", AVAILABILITY_TIMEOUT + 10.0)
            silent = time.monotonic() - last_line
            last_line = time.monotonic()
            heater.write(f"temp={20 + n}\n".encode())
            back = run.shown(temp, f"{20 + n}", 10.0)
            rounds.append({"unavailable_after": round(silent, 2), "shown_after": round(back, 3)})
        states = [m.text for m in sub.on_topic("gateway/heater/availability")]
        ok = all(r["shown_after"] <= SHOWN_WITHIN for r in rounds)
        return Outcome(
            "",
            ok,
            f"3 silences of {AVAILABILITY_TIMEOUT:g}s: unavailable after "
            + ", ".join(f"{r['unavailable_after']}s" for r in rounds)
            + "; the next reading shown after "
            + ", ".join(f"{r['shown_after']}s" for r in rounds)
            + f"; availability topic: {' '.join(states[-6:])}",
            {"rounds": rounds, "availability": states},
        )

    def relay() -> str:
        return run.entity("gw1:meter1:relay", "switch.meter1_relay")

    def setpoint() -> str:
        return run.entity("gw1:meter1:setpoint", "number.meter1_setpoint")

    def mode() -> str:
        return run.entity("gw1:meter1:mode", "select.meter1_mode")

    @run.scenario("switch.turn_on on the Modbus coil: coil 1, switch on", needs_controls=True)
    def _() -> Outcome:
        started = time.monotonic()
        status, _ = ha.call("switch", "turn_on", {"entity_id": relay()})
        wait_for(lambda: sim.cell("coil", COIL) == 1, 10.0, "coil 1 at the simulator")
        at_device = time.monotonic() - started
        shown = run.shown(relay(), "on", 10.0)
        return Outcome(
            "",
            status == 200,
            f"HTTP {status}; coil 1 after {at_device:.2f}s, {relay()} on {shown:.2f}s later",
            {"coil_s": at_device, "shown_s": shown},
        )

    @run.scenario("number.set_value 21.5: holding 215, entity 21.5", needs_controls=True)
    def _() -> Outcome:
        status, _ = ha.call("number", "set_value", {"entity_id": setpoint(), "value": 21.5})
        wait_for(lambda: sim.cell("holding", SETPOINT) == 215, 10.0, "holding 215")
        shown = run.shown(setpoint(), "21.5", 10.0)
        return Outcome("", status == 200, f"HTTP {status}; register 215; entity 21.5 after "
                       f"{shown:.2f}s", {"shown_s": shown})  # fmt: skip

    @run.scenario("an out-of-range setpoint is refused", needs_controls=True)
    def _() -> Outcome:
        status, _ = ha.call("number", "set_value", {"entity_id": setpoint(), "value": 99})
        # Past Home Assistant (which checks min/max itself): straight to the command topic.
        before = len(sub.on_topic("gateway/meter1/set/setpoint/result"))
        publish(run.broker, "gateway/meter1/set/setpoint", b"99")
        result = wait_for(
            lambda: sub.on_topic("gateway/meter1/set/setpoint/result")[before:],
            10.0,
            "the gateway's answer",
        )[0].text
        register = sim.cell("holding", SETPOINT)
        ok = status >= 400 and result.startswith("error") and register == 215
        return Outcome("", ok, f"Home Assistant: HTTP {status}; the gateway: {result!r}; "
                       f"register still {register}")  # fmt: skip

    @run.scenario("select.select_option eco: register 1", needs_controls=True)
    def _() -> Outcome:
        status, _ = ha.call("select", "select_option", {"entity_id": mode(), "option": "eco"})
        wait_for(lambda: sim.cell("holding", MODE) == 1, 10.0, "holding 1")
        shown = run.shown(mode(), "eco", 10.0)
        return Outcome("", status == 200, f"HTTP {status}; register 1; entity eco after "
                       f"{shown:.2f}s")  # fmt: skip

    @run.scenario("button.press writes the serial command to the pty", needs_controls=True)
    def _() -> Outcome:
        heater.write(b"temp=25\n")  # online (a control of an unavailable device is refused)
        run.shown(temp, "25", 10.0)
        button = run.entity("gw1:heater:reset", "button.heater_reset")
        mark = len(run.peer.data)
        status, _ = ha.call("button", "press", {"entity_id": button})
        wait_for(lambda: b"RST" in run.peer.data[mark:], 10.0, "RST at the pty")
        return Outcome("", status == 200, f"HTTP {status}; the pty got "
                       f"{bytes(run.peer.data[mark:])!r}")  # fmt: skip

    @run.scenario("serial switch: PWR 1 written, state from the power sensor", needs_controls=True)
    def _() -> Outcome:
        heater.write(b"temp=25\n")
        power = run.entity("gw1:heater:power", "switch.heater_power")
        mark = len(run.peer.data)
        status, _ = ha.call("switch", "turn_on", {"entity_id": power})
        wait_for(lambda: b"PWR 1" in run.peer.data[mark:], 10.0, "PWR 1 at the pty")
        heater.write(b"power=1\n")  # the device says what it did
        shown = run.shown(power, "on", 10.0)
        return Outcome("", status == 200, f"HTTP {status}; PWR 1 at the pty; {power} on "
                       f"{shown:.2f}s after the device said so")  # fmt: skip

    @run.scenario(
        "Modbus slave silent: the write fails, the entity keeps the real state",
        needs_controls=True,
    )
    def _() -> Outcome:
        before = len(sub.on_topic("gateway/meter1/set/relay/result"))
        sim.sim.silent.add(UNIT)
        try:
            ha.call("switch", "turn_off", {"entity_id": relay()})
            result = wait_for(
                lambda: sub.on_topic("gateway/meter1/set/relay/result")[before:],
                15.0,
                "the write's result",
            )[0].text
            time.sleep(2.0)  # what Home Assistant shows once the optimistic moment is over
            shown = (ha.state(relay()) or {}).get("state")
        finally:
            sim.sim.silent.discard(UNIT)
        coil = sim.cell("coil", COIL)
        # Once the slave answers again, Home Assistant shows what the device holds: `on`.
        back = run.shown(relay(), "on", 15.0)
        ok = result.startswith("error") and coil == 1 and shown in ("on", "unavailable")
        return Outcome(
            "",
            ok,
            f"result {result!r}; coil still {coil}; {relay()} shows {shown} while the slave is "
            f"silent, on {back:.2f}s after it answers again",
        )


def publish(broker: Broker, topic: str, payload: bytes) -> None:
    from paho.mqtt.client import Client  # noqa: PLC0415
    from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415

    client = Client(CallbackAPIVersion.VERSION2, client_id=f"ha-e2e-{os.getpid()}")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(5.0)
    finally:
        client.disconnect()
        client.loop_stop()


# -- putting it together ---------------------------------------------------------------------


@contextlib.contextmanager
def workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="ha-e2e-") as tmp:
        yield Path(tmp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setup-only", action="store_true", help="install, then stop")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep the logs")
    parser.add_argument("--json", type=Path, help="also write the outcomes here")
    args = parser.parse_args(argv)
    python = setup()
    if args.setup_only:
        log(f"Home Assistant {HA_VERSION} ready: {python}")
        return 0
    with contextlib.ExitStack() as stack, workdir(args.keep) as work:
        outcomes = run_all(python, work, stack)
    for o in outcomes:
        print(f"{'PASS' if o.ok else 'FAIL'}  {o.name}: {o.detail}")
    passed = sum(o.ok for o in outcomes)
    print(f"{passed} passed, {len(outcomes) - passed} failed")
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=2, default=str))
    return 0 if passed == len(outcomes) else 1


def run_all(python: Path, work: Path, stack: contextlib.ExitStack) -> list[Outcome]:
    broker = Broker(work)
    broker.start()
    stack.callback(broker.close)
    ha = HomeAssistant(python, work)
    stack.callback(ha.stop)
    ha.start()
    ha.onboard()
    ha.setup_mqtt(broker)
    log("Home Assistant: owner made, MQTT set up through its config flow")
    modbus_pair, heater = SerialPair(work, "MB"), SerialPair(work, "HEATER")
    for pair in (modbus_pair, heater):
        pair.plug()
        stack.callback(pair.close)
    sim = SimulatorThread(modbus_pair)
    sim.start()
    stack.callback(sim.stop)
    peer = PeerReader(heater)
    stack.callback(peer.close)
    subscriber = Subscriber(broker, "#").connect()
    stack.callback(subscriber.close)
    devices = contract_devices(modbus_pair, heater)
    cfg = gateway_config(broker, devices)
    cfg["homeassistant"] = {"discovery": True}
    cfg["log"] = {"level": "INFO"}
    refused = check_config(cfg, work)
    if refused is not None:
        log(f"the gateway refused the controls; defects on the config without them:\n{refused}")
        cfg["devices"] = without_controls(devices)
        if (still := check_config(cfg, work)) is not None:
            raise SystemExit(f"the gateway refused even the config without controls:\n{still}")
    daemon = Daemon(work)
    stack.callback(lambda: daemon.signal(15) if daemon.alive else None)
    daemon.start(cfg)
    daemon.wait_log("serial:heater: opened", timeout=30.0)
    daemon.wait_log("mqtt: connected", timeout=30.0)
    started_at = time.monotonic()
    heater.write(b"temp=20.5\n")  # the first line, at once: what Home Assistant used to miss
    run = Run(ha, broker, daemon, sim, heater, peer, subscriber, refused)
    scenarios(run, started_at)
    with contextlib.suppress(Exception):
        daemon.signal(15)
        daemon.wait(10)
    log(f"logs: {work} (gateway.log, ha.log, mosquitto/)")
    return run.outcomes


if __name__ == "__main__":
    sys.exit(main())
