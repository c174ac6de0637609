"""Configuration models (pydantic v2) and the loader that points errors at file:line:col.

Every timeout, limit and backoff default of the gateway lives in these models, documented in the
field descriptions (`gateway schema` prints them as JSON Schema). One module per part:
`base` (what every model shares), `devices` (what every device has: sensors, payload mode,
availability), `filters` (the sensor stream's filters), `mqtt` (the broker connection),
`sections` (gateway, outbox, log, metrics, homeassistant), `serial`, `modbus`, `ble` and
`synthetic` (the device families' models, each registered as a `type:`), `root` (the root
model, its `devices:` union built from the registered models), `loading` (YAML loading, error
locations, the checks inside the config).
Everything is importable from `gateway.config`.
"""

from __future__ import annotations

# First: the root imports the device models in the documentation's order, the order of the
# `devices:` union (each model registers itself when its module is imported).
from gateway.config.root import Config, Device

# isort: split
from gateway.config.base import (
    TOPIC_LEVEL_RE,
    BackoffConfig,
    BatchConfig,
    HexBytes,
    Model,
    SensorName,
    TopicLevel,
    hex_bytes,
)
from gateway.config.ble import (
    AD_DATA_MAX,
    AD_TYPES,
    GATT_FORMATS,
    AdapterName,
    AdvertStructSpec,
    BleAdapterSpec,
    BleAdvertDevice,
    BleGattDevice,
    BleSection,
    GattPollSpec,
    GattValueSpec,
    GattWriteSpec,
    MacAddress,
    PassivePattern,
    ScanningMode,
    StructSpec,
    Uuid,
    check_struct,
)
from gateway.config.devices import (
    DEVICE_MODELS,
    AvailabilityConfig,
    DeviceBase,
    SensorSpec,
    device_model,
)
from gateway.config.loading import json_schema, load_config
from gateway.config.modbus import ModbusDevice, RegisterSpec
from gateway.config.mqtt import MqttSection, MqttServer, TlsConfig, default_client_id, parse_server
from gateway.config.sections import (
    GatewaySection,
    HomeAssistantSection,
    LogSection,
    MetricsAuth,
    MetricsSection,
    OutboxConfig,
)
from gateway.config.serial import (
    BinaryFraming,
    CsvDecoder,
    Decoder,
    DelimiterFraming,
    Endian,
    FixedFraming,
    Framing,
    PollConfig,
    RegexDecoder,
    SerialCommand,
    SerialDevice,
    SerialMatch,
    SerialPortOptions,
    StructDecoder,
    StructField,
    UsbId,
)
from gateway.config.synthetic import SyntheticDevice

__all__ = [
    "AD_DATA_MAX",
    "AD_TYPES",
    "DEVICE_MODELS",
    "GATT_FORMATS",
    "TOPIC_LEVEL_RE",
    "AdapterName",
    "AdvertStructSpec",
    "AvailabilityConfig",
    "BackoffConfig",
    "BatchConfig",
    "BinaryFraming",
    "BleAdapterSpec",
    "BleAdvertDevice",
    "BleGattDevice",
    "BleSection",
    "Config",
    "CsvDecoder",
    "Decoder",
    "DelimiterFraming",
    "Device",
    "DeviceBase",
    "Endian",
    "FixedFraming",
    "Framing",
    "GatewaySection",
    "GattPollSpec",
    "GattValueSpec",
    "GattWriteSpec",
    "HexBytes",
    "HomeAssistantSection",
    "LogSection",
    "MacAddress",
    "MetricsAuth",
    "MetricsSection",
    "ModbusDevice",
    "Model",
    "MqttSection",
    "MqttServer",
    "OutboxConfig",
    "PassivePattern",
    "PollConfig",
    "RegexDecoder",
    "RegisterSpec",
    "ScanningMode",
    "SensorName",
    "SensorSpec",
    "SerialCommand",
    "SerialDevice",
    "SerialMatch",
    "SerialPortOptions",
    "StructDecoder",
    "StructField",
    "StructSpec",
    "SyntheticDevice",
    "TlsConfig",
    "TopicLevel",
    "UsbId",
    "Uuid",
    "check_struct",
    "default_client_id",
    "device_model",
    "hex_bytes",
    "json_schema",
    "load_config",
    "parse_server",
]
