"""Which sensor names are events (a button press), not measurements.

BTHome's button and dimmer objects (decoders/ble/bthome.py `_events`) are named as Home
Assistant names them: `button`, `button_2`, `dimmer`, `dimmer_1_steps`. Each value is news: a
sensor stream must not treat a repeated press as an unchanged value. (Here, not in the BLE
package, so that a serial-only gateway does not import the BLE decoders to ask.)
"""

from __future__ import annotations

import re

_EVENT_NAME = re.compile(r"(button|dimmer)(_\d+)?(_steps)?")


def is_event(sensor: str) -> bool:
    return _EVENT_NAME.fullmatch(sensor) is not None
