"""Real advertisements of devices that only the parser libraries (the `ble-parsers` extra)
decode, each taken from that library's own tests (the commits are those read, 2026):

- Govee H5075: Bluetooth-Devices/govee-ble tests/test_parser.py, GVH5075_SERVICE_INFO
  (commit 8bc3c0e3); its test reads 21.3 °C, 44.2 %, battery 100 %. Its address there is a
  macOS UUID; any MAC does here (the format does not carry one).
- Inkbird IBS-TH2: Bluetooth-Devices/inkbird-ble tests/test_parser.py, test_unknown_tps
  (commit 782c1e63); 21.2 °C, battery 13 %, model IBS-TH2/P01B (named `tps`).
- Qingping CGG1: Bluetooth-Devices/qingping-ble tests/test_parser.py, QINGPING_TEMP_RH_M_CGG1
  (commit 60a8f495); 21.6 °C, 44.3 %, battery 100 %.
- Xiaomi LYWSDCGQ: Bluetooth-Devices/xiaomi-ble tests/test_parser.py, test_Xiaomi_LYWSDCGQ
  (commit 509f516e); MiBeacon v2, 18.0 °C, 66.1 %, battery 59 %, 1.272 V. The MAC is in the
  frame and checked by the parser: it must stay 58:2D:34:3B:2E:BF.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.decoders.ble import Advert, uuid16


@dataclass(frozen=True)
class Capture:
    decoder: str
    address: str
    name: str
    manufacturer_data: dict[int, bytes] = field(default_factory=dict)
    service_data: dict[str, bytes] = field(default_factory=dict)
    service_uuids: tuple[str, ...] = ()
    values: dict[str, Any] = field(default_factory=dict)  # what the library's test reads

    def advert(self, rssi: int = -60) -> Advert:
        return Advert(
            self.address,
            name=self.name,
            rssi=rssi,
            manufacturer_data=self.manufacturer_data,
            service_data=self.service_data,
            service_uuids=self.service_uuids,
        )

    def fake_device(self) -> dict[str, Any]:
        """add_device() keyword arguments of the fake BlueZ."""
        return {
            "manufacturer_data": self.manufacturer_data,
            "service_data": self.service_data,
            "service_uuids": self.service_uuids,
        }


GOVEE_H5075 = Capture(
    "govee",
    "A4:C1:38:27:62:01",
    "GVH5075_2762",
    manufacturer_data={60552: b"\x00\x03A\xc2d\x00L\x00\x02\x15INTELLI_ROCKS_HWPu\xf2\xff\x0c"},
    service_uuids=(uuid16(0xEC88),),
    values={"temperature": 21.3, "humidity": 44.2, "battery": 100},
)
INKBIRD_IBS_TH2 = Capture(
    "inkbird",
    "49:21:09:09:65:49",
    "tps",
    manufacturer_data={2120: b"\x00\x00\x00\xc6n\r\x06"},
    service_uuids=(uuid16(0xFFF0),),
    values={"temperature": 21.2, "battery": 13},
)
QINGPING_CGG1 = Capture(
    "qingping",
    "AA:BB:CC:DD:EE:FF",
    "Qingping Temp RH M",
    service_data={uuid16(0xFDCD): b"\x08\x16\xa7%\x144-X\x01\x04\xd8\x00\xbb\x01\x02\x01d"},
    values={"temperature": 21.6, "humidity": 44.3, "battery": 100},
)
XIAOMI_LYWSDCGQ = Capture(
    "xiaomi",
    "58:2D:34:3B:2E:BF",
    "MJ_HT_V1",
    service_data={uuid16(0xFE95): b"P \xaa\x01\xa3\xbf.;4-X\r\x10\x04\xb4\x00\x95\x02\n\x10\x01;"},
    service_uuids=(uuid16(0xFE95),),
    values={"temperature": 18.0, "humidity": 66.1, "battery": 59, "voltage": 1.272},
)
CAPTURES = (GOVEE_H5075, INKBIRD_IBS_TH2, QINGPING_CGG1, XIAOMI_LYWSDCGQ)
