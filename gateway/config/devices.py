"""What every device has: id, friendly name, payload mode, availability, and its sensors (unit,
type, Home Assistant classes, the filters of its sensor stream)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Literal, TypeVar, get_args

from pydantic import Field, JsonValue

from gateway.config.base import BackoffConfig, BatchConfig, Model, TopicLevel
from gateway.config.filters import FILTERS, FilterSpec
from gateway.limits import MAX_LEARNED
from gateway.registry import Registry
from gateway.yamlsource import Located, Path_


class SensorSpec(Model):
    unit: str | None = Field(None, description="Unit published with the value, e.g. °C.")
    type: Literal["float", "int", "str", "bool"] | None = Field(
        None, description="Coerce the decoded value to this type."
    )
    device_class: str | None = Field(
        None,
        description="Home Assistant device class (temperature, humidity, ...; binary_sensor "
        "classes for bool values); checked against Home Assistant's unit table.",
    )
    state_class: Literal["measurement", "measurement_angle", "total", "total_increasing"] | None = (
        Field(None, description="Home Assistant state class (long-term statistics).")
    )
    filters: list[FilterSpec] = Field(
        default_factory=list,
        description="The sensor stream: ESPHome's filters, applied in order between the decoder "
        f"and MQTT ({', '.join(FILTERS.names())}).",
    )
    homeassistant: dict[str, JsonValue] = Field(
        default_factory=dict,
        description="Merged into this sensor's Home Assistant discovery config; a null value "
        "removes a key (e.g. {name: Temperature, suggested_display_precision: 1}).",
    )


class AvailabilityConfig(Model):
    timeout: float | None = Field(
        None,
        gt=0,
        description="Offline when nothing was decoded for this many seconds (also Home "
        "Assistant's expire_after).",
    )


class DeviceBase(Model):
    if TYPE_CHECKING:  # each registered model's `type: Literal[...]` field (`device_model`)
        type: str

    id: TopicLevel = Field(
        description="Unique device id: the topic level of its readings (<prefix>/<id>/...)."
    )
    name: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="Friendly name (Home Assistant's device name); default: the id.",
    )
    manufacturer: str | None = Field(None, description="Shown in Home Assistant's device info.")
    model: str | None = Field(None, description="Shown in Home Assistant's device info.")
    payload: Literal["sensor", "device"] = Field(
        "sensor",
        description="sensor: one message per sensor to <prefix>/<device>/<sensor>. device: one "
        "JSON object per frame to <prefix>/<device>: every sensor's latest value, ts, seq.",
    )
    max_sensors: int = Field(
        64,
        ge=1,
        le=MAX_LEARNED,
        description="With payload: device, the most sensors the device's object holds besides "
        "those listed under `sensors:`; a new name beyond it (a decoder that names sensors from "
        "the data) is refused and counted in gateway_readings_dropped_total{reason="
        '"too_many_sensors"}.',
    )
    sensor_expire_after: float | None = Field(
        86400.0,
        gt=0,
        description="With payload: device, a sensor not seen for this many seconds leaves the "
        "object, making room for others; null keeps every name until a restart or reload.",
    )
    availability: AvailabilityConfig = Field(
        AvailabilityConfig(),
        description="`<prefix>/<device>/availability` is offline while the link is down, and "
        "with a timeout also when nothing was decoded for that long.",
    )
    sensors: dict[str, SensorSpec] = Field(
        default_factory=dict, description="Per-sensor unit and type."
    )
    backoff: BackoffConfig = BackoffConfig()
    batch: BatchConfig | None = Field(
        None,
        description="Publish this device's readings in batches (one JSON array per message to "
        "<prefix>/<device>/batch) instead of one message per reading.",
    )

    @property
    def display_name(self) -> str:
        return self.name or self.id

    @property
    def availability_timeout(self) -> float | None:
        """Seconds without a decoded value after which the device is offline."""
        return self.availability.timeout

    # -- what the checks and the streams ask of any device; a family's model overrides them,
    # -- so that no code outside the family switches on its type.
    def named_sensors(self) -> Iterator[tuple[str, Path_]]:
        """Every sensor name the config gives the device, with where it is written (relative
        to the device): where the family's own keys define it (a decoder's column, a register,
        a synthetic value) before its `sensors` entry."""
        for name in self.sensors:
            yield name, ("sensors", name)

    def sensor_entry(self, name: str) -> Path_ | None:
        """Where else than under `sensors:` a sensor's unit and classes are written (a Modbus
        register's entry), relative to the device; None: only there."""
        return None

    @classmethod
    def check_devices(
        cls, devices: Sequence[tuple[int, DeviceBase]], located: Located
    ) -> list[str]:
        """What the devices of this model, `(index, device)` in `devices:`, must agree on (Modbus
        devices sharing a port); problems as `FILE:LINE:COL: key.path: message`."""
        return []

    def republish_period(self) -> float:
        """Seconds after which an unchanged value goes out again without a filter saying so
        (Bluetooth adverts' `republish_after`); 0: every value passes straight through."""
        return 0.0


#: Every device model by its `type:`, registered where the model is written (`device_model`);
#: the root model's `devices:` union is built from it (`gateway.config.root`), and each device
#: family (`gateway.families`) names the models it makes links for.
DEVICE_MODELS: Registry[type[DeviceBase]] = Registry("device type")

D = TypeVar("D", bound=type[DeviceBase])


def device_model(model: D) -> D:
    """Register a device model under the one value its `type` field takes (a class
    decorator)."""
    registered: type[DeviceBase] = model
    (name,) = get_args(registered.model_fields["type"].annotation)
    DEVICE_MODELS.add(name, model)
    return model
