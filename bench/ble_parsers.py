"""What the `ble-parsers` extra costs: peak RSS and start to first message of `gateway run`
with BLE advert devices, the core's own decoders against the parser libraries, in one run.

    fake BlueZ (private D-Bus bus, tests/fakebluez.py) -> gateway run -> private mosquitto
                                                                      -> mosquitto_sub

Scenarios (each a fresh gateway process, --runs times; medians printed):

- core: one device with a built-in decoder (pvvx): no parser library is imported;
- core bthome / ruuvi: our BTHome or Ruuvi decoder;
- extra govee: one device `decoder: govee` (govee-ble, habluetooth, ...);
- extra 4 libraries: Govee, Inkbird, Qingping and Xiaomi devices by name;
- extra auto: the same four with `decoder: auto` (every installed library is loaded).

The adverts are the real captures of tests/ble_captures.py, sent every 50 ms by the fake.
Start to first message: from starting the process to the first reading of a device at the
subscriber. Peak RSS: VmHWM after --settle seconds of running.

    .venv/bin/python bench/ble_parsers.py [--runs 3] [--settle 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from benchlib import PREFIX, REPO, Broker, MosquittoSubReader, missing_tools, peak_rss_mb, stop

sys.path.insert(0, str(REPO / "tests"))
from ble_captures import CAPTURES, GOVEE_H5075, Capture
from fakebluez import ThreadedFakeBlueZ, start_private_bus

from gateway.config.ble import INSTALL_HINT, LIBRARIES, installed_libraries
from gateway.decoders.ble import uuid16

PVVX = Capture(
    "pvvx", "A4:C1:38:12:34:56", "ATC_123456",
    service_data={uuid16(0x181A): bytes.fromhex("56341238c1a46b080c12860b5f1204")},
)  # fmt: skip
BTHOME = Capture(
    "bthome", "A4:C1:38:00:00:01", "bthome",
    service_data={uuid16(0xFCD2): bytes.fromhex("4002ca0903bf13")},
)  # fmt: skip
RUUVI = Capture(
    "ruuvi", "CB:B8:33:4C:88:4F", "Ruuvi 884F",
    manufacturer_data={0x0499: bytes.fromhex("0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F")},
)  # fmt: skip
SCENARIOS: dict[str, list[tuple[Capture, str]]] = {
    "core (pvvx)": [(PVVX, "pvvx")],
    "core (bthome)": [(BTHOME, "bthome")],
    "core (ruuvi)": [(RUUVI, "ruuvi")],
    "extra (govee)": [(GOVEE_H5075, "govee")],
    "extra (4 libraries)": [(c, c.decoder) for c in CAPTURES],
    "extra (auto x4)": [(c, "auto") for c in CAPTURES],
}


def write_config(
    path: Path, port: int, state: Path, devices: Sequence[tuple[Capture, str]]
) -> None:
    config: dict[str, Any] = {
        "gateway": {"id": "bench", "state_dir": str(state)},
        "mqtt": {"port": port, "topic_prefix": PREFIX},
        "log": {"level": "WARNING"},
        "ble": {"adapter": "hci0"},
        "devices": [
            {"id": f"dev{i}", "type": "ble_advert", "address": c.address, "decoder": decoder}
            for i, (c, decoder) in enumerate(devices)
        ],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def one_run(tmp: Path, broker: Broker, bus: str, devices: Sequence[tuple[Capture, str]],
            settle: float) -> tuple[float, float]:  # fmt: skip
    """(seconds to the first reading, peak RSS MB) of one gateway process."""
    first = threading.Event()
    probed = threading.Event()

    def on_chunk(chunk: bytes) -> None:
        for line in chunk.decode(errors="replace").splitlines():
            if line.startswith(f"{PREFIX}/probe"):
                probed.set()
            elif line.startswith(f"{PREFIX}/dev"):
                first.set()

    reader = MosquittoSubReader(broker.port, 1, on_chunk, (f"{PREFIX}/probe", "x"), probed)
    first.clear()  # retained values of the previous run arrived with the subscription
    config = tmp / "gateway.yaml"
    write_config(config, broker.port, tmp / "state", devices)
    env = {**os.environ, "PYTHONPATH": str(REPO), "DBUS_SYSTEM_BUS_ADDRESS": bus}
    started = time.monotonic()
    with (tmp / "gateway.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(config)],
            stdout=log, stderr=log, cwd=REPO, env=env,
        )  # fmt: skip
    try:
        if not first.wait(30):
            raise RuntimeError(f"no reading within 30 s: see {tmp / 'gateway.log'}")
        elapsed = time.monotonic() - started
        time.sleep(settle)
        rss = peak_rss_mb(proc.pid)
    finally:
        stop(proc, 10)
        reader.close()
    return elapsed, rss


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before reading RSS")
    args = parser.parse_args(argv)
    if missing := missing_tools():
        print(f"missing programs: {', '.join(missing)} (scripts/setup.sh)", file=sys.stderr)
        return 2
    extra = len(installed_libraries()) == len(LIBRARIES)
    if not extra:
        print(f"the ble-parsers extra is not installed: only the core runs ({INSTALL_HINT})")
    with tempfile.TemporaryDirectory(prefix="ble-parsers-bench-") as name:
        tmp = Path(name)
        bus_proc, bus = start_private_bus(tmp)
        fake = ThreadedFakeBlueZ(bus, adv_interval=0.05)
        try:
            captures = {c.address: c for c in [PVVX, BTHOME, RUUVI, *CAPTURES]}

            def add_all() -> None:
                for c in captures.values():
                    fake.fake.add_device(c.address, c.name, **c.fake_device())

            fake.call(add_all)
            with Broker(tmp) as broker:
                header = f"{'scenario':22} {'start to first message':>24} {'peak RSS':>10}"
                print(f"{header}  (median of {args.runs} runs)")
                for scenario, devices in SCENARIOS.items():
                    if scenario.startswith("extra") and not extra:
                        continue
                    results = [
                        one_run(tmp, broker, bus, devices, args.settle) for _ in range(args.runs)
                    ]
                    start = statistics.median(r[0] for r in results)
                    rss = statistics.median(r[1] for r in results)
                    print(f"{scenario:22} {start * 1000:21.0f} ms {rss:7.1f} MB", flush=True)
        finally:
            fake.close()
            bus_proc.terminate()
            bus_proc.wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
