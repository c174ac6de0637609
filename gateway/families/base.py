"""What a device family is (`Family`) and what it is given to make links (`FamilyContext`)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from gateway.config import Config, Device, DeviceBase
from gateway.controls import Control, from_specs
from gateway.linknames import link_name
from gateway.models import Reading, SensorClasses, Submit

if TYPE_CHECKING:
    from gateway.metrics import Metrics
    from gateway.supervisor import Link

T = TypeVar("T")
Out = Callable[[str], None]


@dataclass(slots=True)
class FamilyContext:
    """What the lifecycle gives the families: where readings go, the metrics, and a place for
    state shared by a family's links (the BLE adapters, the Modbus buses), made on first use
    and kept across reloads."""

    submit: Submit
    metrics: Metrics
    #: Where readings of unconfigured devices go (BLE `unknown_devices: publish`): bounded as
    #: one account, past streams and status (`Intake.submit_unknown`); default: `submit`.
    submit_unknown: Submit | None = None
    #: What decoders said each sensor is (BLE parser libraries), for Home Assistant.
    sensor_classes: SensorClasses = field(default_factory=dict)
    #: A part asks for the process to exit with this status (systemd restarts it).
    request_exit: Callable[[str, int], None] = lambda reason, code: None
    _shared: dict[str, object] = field(default_factory=dict)

    def shared(self, key: str, make: Callable[[], T]) -> T:
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]  # type: ignore[return-value]  # made by `make` above

    def peek(self, key: str) -> object | None:
        """Shared state if it was made (reading it must not load a family's libraries)."""
        return self._shared.get(key)


class Family:
    """A device family. The defaults serve a family of one link per device; a family with
    shared links (BLE scanners) or knowledge of its decoders overrides more."""

    name: str = ""
    models: tuple[type[DeviceBase], ...] = ()

    def devices(self, cfg: Config) -> list[Any]:
        return [d for d in cfg.devices if isinstance(d, self.models)]

    def link_specs(self, cfg: Config) -> dict[str, object]:
        """Link name -> what it is made of: a link whose spec changed is restarted on reload."""
        return {link_name(d): d for d in self.devices(cfg)}

    def links(self, cfg: Config, names: Collection[str], ctx: FamilyContext) -> list[Link]:
        """The links among `names` that this family makes for `cfg`."""
        return [self.device_link(d, ctx) for d in self.devices(cfg) if link_name(d) in names]

    def device_link(self, device: Any, ctx: FamilyContext) -> Link:
        raise NotImplementedError

    def status_document(self, ctx: FamilyContext, view: Any, now: float) -> object:
        """This family's section of `/status` (only families with a `status_key`)."""
        return None

    status_key: str | None = None

    # -- what other parts ask of a device, per family -----------------------------------------
    def known_sensors(self, device: Device) -> dict[str, str | None]:
        """Sensor -> unit, for the sensors the decoder says the device has (Home Assistant)."""
        return {}

    def has_sensor(self, device: Device, sensor: str) -> bool:
        """Whether the device can have this sensor (a control's state): configured, or named by
        its decoder."""
        return sensor in device.sensors or sensor in self.known_sensors(device)

    def controls(self, device: Device) -> dict[str, Control]:
        """The device's controls (Home Assistant's switches, numbers, selects, buttons): its
        `controls:` entries, by default."""
        return from_specs(getattr(device, "controls", {}))

    def default_unit(self, device: Device, sensor: str) -> str | None:
        """A sensor's unit when neither the config nor `known_sensors` gives one."""
        return None

    def sample_frames(
        self, device: Device, data: bytes, characteristic: str | None, out: Out
    ) -> Iterator[list[Reading]] | None:
        """`gateway decode`: the readings of a sample, frame by frame; None: not frames."""
        return None

    def sample_bytes(self, device: Device, line: str) -> bytes:
        """`gateway decode --line`: the line as the device sends it."""
        return line.encode()
