"""The root `Config`, and loading a YAML file into it with errors that say FILE:LINE:COL."""

from __future__ import annotations

import importlib.util
import logging
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
)

from gateway.config.base import Model
from gateway.config.ble import BleAdvertDevice, BleGattDevice, BleSection
from gateway.config.controls import check_controls
from gateway.config.modbus import ModbusDevice
from gateway.config.mqtt import MqttSection
from gateway.config.reserved import check_reserved
from gateway.config.sections import (
    GatewaySection,
    HomeAssistantSection,
    LogSection,
    MetricsAuth,
    MetricsSection,
    OutboxConfig,
)
from gateway.config.serial import SerialDevice
from gateway.config.synthetic import SyntheticDevice
from gateway.errors import ConfigError
from gateway.limits import SECRET_MAX_BYTES
from gateway.yamlsource import Located, Path_, Refused, dotted, load_yaml, read_small_file

log = logging.getLogger("gateway.config")

Device = Annotated[
    SerialDevice | ModbusDevice | BleAdvertDevice | BleGattDevice | SyntheticDevice,
    Field(discriminator="type"),
]


class Config(Model):
    gateway: GatewaySection
    mqtt: MqttSection = MqttSection()
    outbox: OutboxConfig = OutboxConfig()
    log: LogSection = LogSection()
    metrics: MetricsSection = MetricsSection()
    devices: list[Device] = Field(
        default_factory=list, description="The devices, each selected by its `type`."
    )
    ble: BleSection = BleSection()
    homeassistant: HomeAssistantSection = HomeAssistantSection()

    def device(self, device_id: str) -> Device | None:
        return next((d for d in self.devices if d.id == device_id), None)

    @property
    def topic_prefix(self) -> str:
        """`mqtt.topic_prefix` with `{gateway}` filled in: where every topic is built from."""
        return self.mqtt.prefix_for(self.gateway.id)


def _strip_tags(loc: tuple[int | str, ...], data: Any) -> Path_:
    """Drop the discriminator tags pydantic puts in error paths (`devices.0.serial.port`)."""
    out: list[str | int] = []
    node = data
    for part in loc:
        is_tag = isinstance(node, Mapping) and isinstance(part, str) and part not in node
        if is_tag and node.get("type") == part:
            continue
        out.append(part)
        node = (
            node.get(part)
            if isinstance(node, Mapping)
            else (
                node[part]
                if isinstance(node, list) and isinstance(part, int) and part < len(node)
                else None
            )
        )
    return tuple(out)


def _format_errors(exc: ValidationError, located: Located) -> list[str]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = _strip_tags(err["loc"], located.data)
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see `gateway schema`)"
        elif err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = (*loc, "type")
            if err["type"] == "union_tag_not_found":
                message = "missing `type:` (it selects the device model, e.g. `type: serial`)"
        problems.append(f"{located.where(loc)}: {dotted(loc)}: {message}")
    return problems


def _resolve_paths(cfg: Config, base: Path, located: Located) -> Config:
    """Make relative paths relative to the config file and read the secret files
    (`mqtt.password_file`, `metrics.auth.token_file` and `.password_file`)."""
    state_dir = cfg.gateway.state_dir
    if not state_dir.is_absolute():
        state_dir = (base / state_dir).resolve()
    _check_outbox_file(state_dir, cfg.outbox.file, located)
    mqtt = cfg.mqtt
    if mqtt.password_file is not None:
        secret, file = _read_secret(mqtt.password_file, base, ("mqtt", "password_file"), located)
        mqtt = mqtt.model_copy(update={"password": secret, "password_file": file})
    if mqtt.tls is not None:
        tls = mqtt.tls
        files = {
            name: (value if value.is_absolute() else base / value)
            for name in ("ca_file", "cert_file", "key_file")
            if (value := getattr(tls, name)) is not None
        }
        mqtt = mqtt.model_copy(update={"tls": tls.model_copy(update=files)})
    metrics = cfg.metrics
    if metrics.auth is not None:
        metrics = metrics.model_copy(update={"auth": _resolve_auth(metrics.auth, base, located)})
    return cfg.model_copy(
        update={
            "gateway": cfg.gateway.model_copy(update={"state_dir": state_dir}),
            "mqtt": mqtt,
            "metrics": metrics,
        }
    )


def _resolve_auth(auth: MetricsAuth, base: Path, located: Located) -> MetricsAuth:
    """Read the token and password files of `metrics.auth`; an empty one is an error (an empty
    secret would let anyone in)."""
    update: dict[str, object] = {}
    for name in ("token", "password"):
        file: Path | None = getattr(auth, f"{name}_file")
        if file is None:
            continue
        where: Path_ = ("metrics", "auth", f"{name}_file")
        secret, update[f"{name}_file"] = _read_secret(file, base, where, located)
        if not secret.get_secret_value():
            raise ConfigError([f"{located.where(where)}: {dotted(where)}: {file} is empty"])
        update[name] = secret
    return auth.model_copy(update=update)


def _read_secret(file: Path, base: Path, loc: Path_, located: Located) -> tuple[SecretStr, Path]:
    """The content of a secret file (surrounding whitespace removed) and its absolute path.
    Only a regular file of at most SECRET_MAX_BYTES is read (a FIFO would hang the start, a
    device or a huge file would be read without end); one every user may read is a warning."""
    file = file if file.is_absolute() else base / file
    where = f"{located.where(loc)}: {dotted(loc)}"
    try:
        small = read_small_file(file, SECRET_MAX_BYTES)
        secret = small.data.decode("utf-8").strip()
    except OSError as exc:
        raise ConfigError([f"{where}: cannot read {file}: {exc.strerror or exc}"]) from exc
    except Refused as exc:
        raise ConfigError([f"{where}: cannot read {file}: {exc.reason}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{where}: cannot read {file}: not UTF-8 text"]) from exc
    if small.mode & stat.S_IROTH:
        log.warning(
            "%s: %s is readable by every user of this machine (chmod o-r %s)", where, file, file
        )
    return SecretStr(secret), file


def _check_unique_ids(cfg: Config, located: Located) -> list[str]:
    seen: dict[str, int] = {}
    problems = []
    for i, device in enumerate(cfg.devices):
        if device.id in seen:
            loc: Path_ = ("devices", i, "id")
            problems.append(
                f"{located.where(loc)}: {dotted(loc)}: duplicate device id {device.id!r} "
                f"(first used by devices[{seen[device.id]}])"
            )
        seen.setdefault(device.id, i)
    return problems


def _check_modbus_buses(cfg: Config, located: Located) -> list[str]:
    """Modbus devices on one port share it: the same line settings, a unit id each."""
    first: dict[tuple[object, ...], tuple[int, ModbusDevice]] = {}
    units: dict[tuple[object, ...], set[int]] = {}
    problems = []
    for i, device in enumerate(cfg.devices):
        if not isinstance(device, ModbusDevice):
            continue
        if not first and importlib.util.find_spec("pymodbus") is None:
            loc_: Path_ = ("devices", i, "type")
            problems.append(
                f"{located.where(loc_)}: {dotted(loc_)}: modbus devices need pymodbus: "
                "pip install 'iot-gateway[modbus]'"
            )
        j, other = first.setdefault(device.bus_key, (i, device))
        used = units.setdefault(device.bus_key, set())
        loc: Path_ | None = None
        if other.line_settings != device.line_settings:
            loc, problem = (
                ("devices", i, "baudrate"),
                f"shares its port with devices[{j}] ({other.id}): give both the same "
                "baudrate, bytesize, parity and stopbits",
            )
        elif device.unit_id in used:
            loc, problem = (
                ("devices", i, "unit_id"),
                f"unit_id {device.unit_id} is used by another device on this port",
            )
        used.add(device.unit_id)
        if loc is not None:
            problems.append(f"{located.where(loc)}: {dotted(loc)}: {problem}")
    return problems


def _sensor_loc(device: Device, i: int, name: str, key: str, located: Located) -> Path_:
    """Where a sensor's setting was written: under `sensors:`, or a Modbus register's entry."""
    loc: Path_ = ("devices", i, "sensors", name, key)
    if isinstance(device, ModbusDevice) and key not in _given(located, loc[:-1]):
        for j, reg in enumerate(device.registers):
            if name in reg.sensor_names:
                return ("devices", i, "registers", j, key)
    return loc


def _given(located: Located, loc: Path_) -> set[str]:
    """The keys written at `loc` in the YAML (none if there is nothing there)."""
    node: Any = located.data
    for part in loc:
        if isinstance(node, Mapping):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return set()
    return {str(k) for k in node} if isinstance(node, Mapping) else set()


def _check_sensors(cfg: Config, located: Located) -> list[str]:
    """What pydantic cannot see alone: Home Assistant's unit and state-class tables (checked
    with the decoder's unit where the config gives none), batches that Home Assistant could
    not read, device-mode keys that are not sensors."""
    from gateway.homeassistant.checks import check_sensor  # noqa: PLC0415
    from gateway.homeassistant.devices import default_unit, is_binary  # noqa: PLC0415

    problems = []
    for i, device in enumerate(cfg.devices):
        if cfg.homeassistant.discovery and device.batch is not None:
            loc: Path_ = ("devices", i, "batch")
            problems.append(
                f"{located.where(loc)}: {dotted(loc)}: Home Assistant cannot read batches; "
                "remove `batch` or set homeassistant.discovery: false"
            )
        for name, spec in device.sensors.items():
            if device.payload == "device" and name in ("ts", "seq"):
                loc = ("devices", i, "sensors", name)
                problems.append(
                    f"{located.where(loc)}: {dotted(loc)}: with payload: device, `{name}` is "
                    "the frame's own key; name the sensor differently"
                )
            if spec.device_class is None and spec.state_class is None:
                continue
            unit = spec.unit if spec.unit is not None else default_unit(device, name)
            if problem := check_sensor(
                spec.device_class, spec.state_class, unit, binary=is_binary(spec)
            ):
                key = "device_class" if spec.device_class is not None else "state_class"
                if "state_class" in problem and spec.state_class is not None:
                    key = "state_class"
                elif "unit" in problem and spec.unit is not None:
                    key = "unit"
                loc = _sensor_loc(device, i, name, key, located)
                problems.append(f"{located.where(loc)}: {dotted(loc)}: {problem}")
    return problems


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Load, interpolate and validate a config file; raise ConfigError listing every problem."""
    file = Path(path)
    located = load_yaml(file, env)
    if not isinstance(located.data, dict):
        raise ConfigError([f"{file}:1:1: the config must be a mapping with a `gateway:` section"])
    try:
        cfg = Config.model_validate(located.data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, located)) from exc
    if problems := (
        _check_unique_ids(cfg, located)
        + _check_modbus_buses(cfg, located)
        + _check_sensors(cfg, located)
        + check_reserved(
            cfg.devices, cfg.gateway.id, cfg.topic_prefix, cfg.mqtt.command_verb, located
        )
        + check_controls(cfg, located)
    ):
        raise ConfigError(problems)
    return _resolve_paths(cfg, file.resolve().parent, located)


def _check_outbox_file(state_dir: Path, file: str, located: Located) -> None:
    """`outbox.file` names a file inside `state_dir` (after `..` and symlinks), so that the
    outbox (and its -wal, -shm and set-aside files) never writes elsewhere."""
    root = state_dir.resolve()
    target = (state_dir / file).resolve()
    if target == root or not target.is_relative_to(root):
        loc: Path_ = ("outbox", "file")
        raise ConfigError(
            [
                f"{located.where(loc)}: {dotted(loc)}: must name a file inside "
                f"gateway.state_dir ({root}), not {target}"
            ]
        )


def json_schema() -> dict[str, Any]:
    return TypeAdapter(Config).json_schema()
