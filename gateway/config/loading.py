"""Loading a YAML file into the root `Config`, with errors that say FILE:LINE:COL, and the
checks inside the config that pydantic cannot make alone."""

from __future__ import annotations

import logging
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import SecretStr, TypeAdapter, ValidationError

from gateway.config.devices import DEVICE_MODELS, DeviceBase
from gateway.config.reserved import check_reserved
from gateway.config.root import Config
from gateway.config.sections import MetricsAuth
from gateway.errors import ConfigError
from gateway.limits import SECRET_MAX_BYTES
from gateway.yamlsource import Located, Path_, Refused, dotted, load_yaml, read_small_file

log = logging.getLogger("gateway.config")


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


def _check_each_model(cfg: Config, located: Located) -> list[str]:
    """Each device model's check of its devices together (`DeviceBase.check_devices`)."""
    problems = []
    for model in DEVICE_MODELS.values():
        mine: list[tuple[int, DeviceBase]] = [
            (i, d) for i, d in enumerate(cfg.devices) if type(d) is model
        ]
        if mine:
            problems += model.check_devices(mine, located)
    return problems


def _check_sensor_keys(cfg: Config, located: Located) -> list[str]:
    """Batches that Home Assistant could not read, device-mode keys that are not sensors."""
    problems = []
    for i, device in enumerate(cfg.devices):
        if cfg.homeassistant.discovery and device.batch is not None:
            loc: Path_ = ("devices", i, "batch")
            problems.append(
                f"{located.where(loc)}: {dotted(loc)}: Home Assistant cannot read batches; "
                "remove `batch` or set homeassistant.discovery: false"
            )
        if device.payload != "device":
            continue
        for name in device.sensors:
            if name in ("ts", "seq"):
                loc = ("devices", i, "sensors", name)
                problems.append(
                    f"{located.where(loc)}: {dotted(loc)}: with payload: device, `{name}` is "
                    "the frame's own key; name the sensor differently"
                )
    return problems


def _check_reserved(cfg: Config, located: Located) -> list[str]:
    return check_reserved(
        cfg.devices, cfg.gateway.id, cfg.topic_prefix, cfg.mqtt.command_verb, located
    )


#: A check of a whole config that pydantic cannot make alone: every problem as
#: `FILE:LINE:COL: key.path: message`.
Check = Callable[["Config", Located], list[str]]

#: The checks inside the config, in the order their problems are listed. Checks that need more
#: than the config (Home Assistant's tables, a family's decoders) belong to those packages: the
#: application passes them to `load_config` (`gateway.app_config`).
CONFIG_CHECKS: tuple[Check, ...] = (
    _check_unique_ids,
    _check_each_model,
    _check_sensor_keys,
    _check_reserved,
)


def load_config(
    path: str | Path, env: Mapping[str, str] | None = None, *, checks: Sequence[Check] = ()
) -> Config:
    """Load, interpolate and validate a config file, then run the config's own checks and
    `checks` (the application's: ESPHome's final validate); raise ConfigError listing every
    problem."""
    file = Path(path)
    located = load_yaml(file, env)
    if not isinstance(located.data, dict):
        raise ConfigError([f"{file}:1:1: the config must be a mapping with a `gateway:` section"])
    try:
        cfg = Config.model_validate(located.data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, located)) from exc
    if problems := [p for check in (*CONFIG_CHECKS, *checks) for p in check(cfg, located)]:
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
