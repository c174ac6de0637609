"""The root model `Config`, and `Device`: one of the registered device models, chosen by `type`.

The device models register themselves where they are written (`devices.device_model`); they
are imported here in the order of the documentation, which is the order of the union. A model
or a filter registered after these models were built (a plug-in, a test's toy) rebuilds them, so
that `devices:` and `filters:` take it at once.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field, GetCoreSchemaHandler
from pydantic_core import CoreSchema

# isort: off
# The device models, in the documentation's order (each registers itself on import).
from gateway.config import serial, modbus, ble, synthetic  # noqa: F401

# isort: on
from gateway.config.base import Model
from gateway.config.ble import BleSection
from gateway.config.devices import DEVICE_MODELS, DeviceBase, SensorSpec
from gateway.config.filters import FILTERS, OrSpec
from gateway.config.mqtt import MqttSection
from gateway.config.sections import (
    GatewaySection,
    HomeAssistantSection,
    LogSection,
    MetricsSection,
    OutboxConfig,
)


class _RegisteredDevices:
    """The union of the registered device models, routed by `type:` (built with the schema of
    the model that holds it)."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        members = DEVICE_MODELS.values()
        return handler.generate_schema(
            Annotated[Union[members], Field(discriminator="type")]  # noqa: UP007 - built at run time
        )


#: One item of `devices:` (statically a `DeviceBase`: narrow it with isinstance to its model).
Device = Annotated[DeviceBase, _RegisteredDevices()]


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


def _rebuild() -> None:
    """Build again every model that holds a registry's union, inner ones first."""
    OrSpec.model_rebuild(force=True)
    SensorSpec.model_rebuild(force=True)
    for model in DEVICE_MODELS.values():
        model.model_rebuild(force=True)
    Config.model_rebuild(force=True)


FILTERS.on_change(_rebuild)
DEVICE_MODELS.on_change(_rebuild)
