"""Command line: `gateway run|check-config|decode|schema|scan|simulate|ports`.

Exit codes: 0 ok, 2 bad config."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import sys
from pathlib import Path

from gateway import __version__
from gateway.app_config import load_config
from gateway.config import json_schema
from gateway.errors import ConfigError

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway", description="Bridge serial and BLE sensors to MQTT, supervised."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", type=Path, required=True, help="YAML config file")

    check = sub.add_parser("check-config", help="validate a config file (exit 0 or 2)")
    check.add_argument("config", type=Path)

    sub.add_parser("schema", help="print the config's JSON Schema")

    scan = sub.add_parser("scan", help="list the Bluetooth LE devices heard, decoded")
    scan.add_argument("--adapter", default="hci0", help="adapter to scan with (default hci0)")
    scan.add_argument("--seconds", type=float, default=10.0, help="how long to listen")

    sim = sub.add_parser("simulate", help="simulate devices for demos and tests")
    sim_sub = sim.add_subparsers(dest="kind", required=True)
    serial = sim_sub.add_parser("serial", help="a serial device on a pseudo-terminal")
    serial.add_argument(
        "--profile",
        default="kv",
        choices=["kv", "json", "nmea", "meter"],
        help="kv: temperature/humidity lines; json: particulate sensor; nmea: GPS receiver; "
        "meter: binary energy meter that answers polls",
    )
    where = serial.add_mutually_exclusive_group()
    where.add_argument("--link", type=Path, help="symlink to create for the device side")
    where.add_argument("--port", type=Path, help="play on this existing tty instead of a new pty")
    serial.add_argument("--rate", type=float, default=1.0, help="reports per second")
    serial.add_argument(
        "--count", type=int, help="stop after N reports (meter: answers; default: run forever)"
    )
    serial.add_argument("--seed", type=int, help="seed for repeatable values")
    serial.add_argument(
        "--miss-every",
        type=int,
        default=0,
        metavar="N",
        help="meter: leave every N-th poll unanswered",
    )

    modbus = sim_sub.add_parser(
        "modbus", help="Modbus slaves: unit 1 an energy meter, unit 2 a thermometer"
    )
    where_mb = modbus.add_mutually_exclusive_group()
    where_mb.add_argument(
        "--link", type=Path, help="symlink for the gateway's side of a new socat pty pair"
    )
    where_mb.add_argument("--port", type=Path, help="serve on this existing tty instead")
    where_mb.add_argument("--tcp", type=int, metavar="PORT", help="serve Modbus TCP on PORT")
    where_mb.add_argument(
        "--rtu-over-tcp", type=int, metavar="PORT", help="serve RTU frames over TCP on PORT"
    )
    where_mb.add_argument("--udp", type=int, metavar="PORT", help="serve Modbus over UDP on PORT")
    modbus.add_argument(
        "--host", default="127.0.0.1", help="network: the address to listen on (loopback)"
    )
    modbus.add_argument("--baudrate", type=int, default=9600)
    modbus.add_argument(
        "--parity", default="N", choices=["N", "E", "O"], help="N (a pty refuses parity bits)"
    )

    decode = sub.add_parser(
        "decode", help="run one device's framer, decoder and filters on a sample (no hardware)"
    )
    decode.add_argument("-c", "--config", type=Path, required=True, help="YAML config file")
    decode.add_argument("--device", required=True, help="the device id")
    sample = decode.add_mutually_exclusive_group(required=True)
    sample.add_argument("--line", help="a serial line (the terminator is added)")
    sample.add_argument(
        "--hex", help="bytes: serial data, a BLE advert's AD structures, or a GATT value"
    )
    sample.add_argument("--file", type=Path, help="a file of bytes (serial data)")
    decode.add_argument(
        "--characteristic", help="ble_gatt: which characteristic the value is from (UUID)"
    )

    ports = sub.add_parser("ports", help="list serial ports with their USB ids and by-id names")
    ports.add_argument("--json", action="store_true", help="one JSON object per port")
    ports.add_argument(
        "--by-id-dir", type=Path, help="directory of stable names (default /dev/serial/by-id)"
    )
    return parser


def _simulate_modbus(args: argparse.Namespace) -> int:
    from gateway.modbus.simulator import (  # noqa: PLC0415 - the extra
        simulate_modbus,
        simulate_modbus_network,
    )

    for transport in ("tcp", "rtu_over_tcp", "udp"):
        if (port := getattr(args, transport)) is not None:
            return simulate_modbus_network(transport, args.host, port)
    return simulate_modbus(args.port, args.link, args.baudrate, args.parity)


def _decode(args: argparse.Namespace) -> int:
    from gateway.decode_cli import run_decode, sample_bytes  # noqa: PLC0415

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    try:
        data = args.line if args.line is not None else sample_bytes(args.hex, args.file)
    except (ValueError, OSError) as exc:
        print(f"cannot read the sample: {exc}", file=sys.stderr)
        return 1
    return run_decode(cfg, args.device, data, characteristic=args.characteristic)


def run(config_path: Path) -> int:
    """`gateway run`: load the config and run the daemon; exit code 2 for an unusable config."""
    from gateway.lifecycle import Gateway  # noqa: PLC0415 - keep `check-config` and `schema` light
    from gateway.logs import config_secrets, set_secrets, setup_logging  # noqa: PLC0415

    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    set_secrets(config_secrets(cfg))
    setup_logging(cfg.log.level, cfg.log.format)
    # A watchdog abort (SIGABRT) or a crash prints every thread's Python stack to stderr (the
    # journal): where the event loop was stuck.
    faulthandler.enable()
    return asyncio.run(Gateway(cfg, config_path).run())


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0911 - one return per command
    args = _parser().parse_args(argv)
    if args.command == "run":
        return run(args.config)
    if args.command == "check-config":
        try:
            cfg = load_config(args.config)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return EXIT_CONFIG
        print(f"{args.config}: ok ({len(cfg.devices)} device(s))")
        return 0
    if args.command == "decode":
        return _decode(args)
    if args.command == "schema":
        print(json.dumps(json_schema(), indent=2))
        return 0
    if args.command == "scan":
        from gateway.ble.scan import run_scan  # noqa: PLC0415 - bleak only when scanning

        return run_scan(args.adapter, args.seconds)
    if args.command == "simulate" and args.kind == "modbus":
        return _simulate_modbus(args)
    if args.command == "simulate":
        from gateway.simulate import simulate_serial  # noqa: PLC0415

        return simulate_serial(
            args.profile,
            args.link,
            args.rate,
            args.count,
            args.seed,
            port=args.port,
            miss_every=args.miss_every,
        )
    if args.command == "ports":
        from gateway.ports_cli import print_ports  # noqa: PLC0415

        return print_ports(args.by_id_dir, as_json=args.json)
    raise AssertionError(args.command)  # pragma: no cover
