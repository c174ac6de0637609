"""Command line: `gateway run|check-config|schema|simulate`. Exit codes: 0 ok, 2 bad config."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gateway import __version__
from gateway.config import load_config
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

    sim = sub.add_parser("simulate", help="simulate devices for demos and tests")
    sim_sub = sim.add_subparsers(dest="kind", required=True)
    serial = sim_sub.add_parser("serial", help="a serial device on a pseudo-terminal")
    serial.add_argument("--profile", default="kv", choices=["kv", "json"])
    serial.add_argument("--link", type=Path, help="symlink to create for the device side")
    serial.add_argument("--rate", type=float, default=1.0, help="lines per second")
    serial.add_argument("--count", type=int, help="stop after N lines (default: run forever)")
    serial.add_argument("--seed", type=int, help="seed for repeatable values")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        from gateway.app import run  # noqa: PLC0415 - keep `check-config` and `schema` light

        return run(args.config)
    if args.command == "check-config":
        try:
            cfg = load_config(args.config)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return EXIT_CONFIG
        print(f"{args.config}: ok ({len(cfg.devices)} device(s))")
        return 0
    if args.command == "schema":
        from gateway.config import json_schema  # noqa: PLC0415

        print(json.dumps(json_schema(), indent=2))
        return 0
    if args.command == "simulate":
        from gateway.simulate import simulate_serial  # noqa: PLC0415

        return simulate_serial(args.profile, args.link, args.rate, args.count, args.seed)
    raise AssertionError(args.command)  # pragma: no cover
