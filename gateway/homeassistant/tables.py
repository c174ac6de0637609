"""Home Assistant's sensor tables, as plain data (the checks built on them are in `checks.py`).

Copied from Home Assistant Core 2026.11.0 (home-assistant/core, tag 2026.11.0, as published on
PyPI as `homeassistant-2026.11.0`), Apache License 2.0, Copyright the Home Assistant authors:

- `homeassistant/components/sensor/const.py`: `SensorDeviceClass`, `SensorStateClass`,
  `NON_NUMERIC_DEVICE_CLASSES`, `DEVICE_CLASS_UNITS`, `DEVICE_CLASS_STATE_CLASSES`,
  `STATE_CLASS_UNITS`, `AMBIGUOUS_UNITS`, with the unit enums of `homeassistant/const.py`
  turned into the strings Home Assistant compares (`UnitOfTemperature.CELSIUS` -> "°C");
- `homeassistant/components/binary_sensor/const.py`: `BinarySensorDeviceClass`.

Copied rather than imported: Home Assistant is a large application, not a library, and the
gateway runs where it is not installed. To refresh: unpack a newer wheel (`pip download
--no-deps --python-version 3.14 --only-binary=:all: homeassistant==X`, then unzip it) and run
`HA_SOURCE=<unpacked dir> pytest tests/test_ha_discovery.py -k home_assistant_source`: that test
loads Home Assistant's modules from the unpacked source and fails on every difference, naming
it; copy the differences here and update the version above.

Micro units: since 2025 Home Assistant writes them with the Greek mu (U+03BC, "μg/m³") and
accepts the micro sign (U+00B5, "µg/m³", what the gateway's BLE decoders write) by mapping it
through `AMBIGUOUS_UNITS` before it checks a unit. `checks.check_sensor` does the same.
"""

from __future__ import annotations

from typing import Final

# -- Home Assistant's tables (generated from the source named above; keep them data only) ------

#: `SensorDeviceClass` and `BinarySensorDeviceClass`: the names Home Assistant knows.
# fmt: off
SENSOR_DEVICE_CLASSES: Final[frozenset[str]] = frozenset({
    "absolute_humidity", "apparent_power", "aqi", "area", "atmospheric_pressure", "battery",
    "blood_glucose_concentration", "carbon_dioxide", "carbon_monoxide", "conductivity", "current",
    "data_rate", "data_size", "date", "distance", "duration", "energy", "energy_distance",
    "energy_storage", "enum", "frequency", "gas", "humidity", "illuminance", "irradiance",
    "moisture", "monetary", "nitrogen_dioxide", "nitrogen_monoxide", "nitrous_oxide", "ozone", "ph",
    "pm1", "pm10", "pm25", "pm4", "power", "power_factor", "precipitation",
    "precipitation_intensity", "pressure", "radon", "reactive_energy", "reactive_power",
    "signal_strength", "sound_pressure", "speed", "sulphur_dioxide", "temperature",
    "temperature_delta", "timestamp", "uptime", "volatile_organic_compounds",
    "volatile_organic_compounds_parts", "voltage", "volume", "volume_flow_rate", "volume_storage",
    "water", "weight", "wind_direction", "wind_speed",
})

BINARY_SENSOR_DEVICE_CLASSES: Final[frozenset[str]] = frozenset({
    "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door", "garage_door",
    "gas", "glass_break", "heat", "light", "lock", "moisture", "motion", "moving", "occupancy",
    "opening", "plug", "power", "presence", "problem", "running", "safety", "smoke", "sound",
    "tamper", "update", "vibration", "window",
})
# fmt: on

#: `SensorStateClass`.
STATE_CLASSES: Final[frozenset[str]] = frozenset(
    {"measurement", "measurement_angle", "total", "total_increasing"}
)

#: Device classes whose state is not a number (and so has no unit).
NON_NUMERIC_DEVICE_CLASSES: Final[frozenset[str]] = frozenset(
    {"date", "enum", "timestamp", "uptime"}
)

#: Device class -> the units Home Assistant accepts with it (None: no unit). A device class
#: not listed takes any unit.
# fmt: off
DEVICE_CLASS_UNITS: Final[dict[str, frozenset[str | None]]] = {
    "absolute_humidity": frozenset({"g/m³", "mg/m³"}),
    "apparent_power": frozenset({"kVA", "mVA", "VA"}),
    "aqi": frozenset({None}),
    "area": frozenset({"ac", "cm²", "ft²", "ha", "in²", "km²", "mi²", "mm²", "m²", "yd²"}),
    "atmospheric_pressure": frozenset({
        "atm", "bar", "cbar", "hPa", "inHg", "inH₂O", "kPa", "mbar", "mmHg", "mPa", "Pa", "psi",
    }),
    "battery": frozenset({"%"}),
    "blood_glucose_concentration": frozenset({"mg/dL", "mmol/L"}),
    "carbon_dioxide": frozenset({"ppm"}),
    "carbon_monoxide": frozenset({"μg/m³", "mg/m³", "ppb", "ppm"}),
    "conductivity": frozenset({"mS/cm", "S/cm", "μS/cm"}),
    "current": frozenset({"A", "μA", "mA"}),
    "data_rate": frozenset({
        "B/s", "bit/s", "GB/s", "Gbit/s", "GiB/s", "kB/s", "kbit/s", "KiB/s", "MB/s", "Mbit/s",
        "MiB/s",
    }),
    "data_size": frozenset({
        "B", "bit", "EB", "EiB", "GB", "Gbit", "GiB", "kB", "kbit", "KiB", "MB", "Mbit", "MiB",
        "PB", "PiB", "TB", "TiB", "YB", "YiB", "ZB", "ZiB",
    }),
    "distance": frozenset({"cm", "ft", "in", "km", "m", "mi", "mm", "nmi", "yd"}),
    "duration": frozenset({"d", "h", "min", "ms", "s", "μs"}),
    "energy": frozenset({
        "cal", "Gcal", "GJ", "GWh", "J", "kcal", "kJ", "kWh", "Mcal", "MJ", "MWh", "mWh", "thm",
        "TWh", "Wh",
    }),
    "energy_distance": frozenset({"km/kWh", "kWh/100km", "mi/kWh", "Wh/km"}),
    "energy_storage": frozenset({
        "cal", "Gcal", "GJ", "GWh", "J", "kcal", "kJ", "kWh", "Mcal", "MJ", "MWh", "mWh", "thm",
        "TWh", "Wh",
    }),
    "frequency": frozenset({"GHz", "Hz", "kHz", "MHz", "mHz"}),
    "gas": frozenset({"CCF", "ft³", "L", "MCF", "m³"}),
    "humidity": frozenset({"%"}),
    "illuminance": frozenset({"lx"}),
    "irradiance": frozenset({"BTU/(h⋅ft²)", "W/m²"}),
    "moisture": frozenset({"%"}),
    "nitrogen_dioxide": frozenset({"μg/m³", "ppb", "ppm"}),
    "nitrogen_monoxide": frozenset({"μg/m³", "ppb"}),
    "nitrous_oxide": frozenset({"μg/m³"}),
    "ozone": frozenset({"μg/m³", "ppb", "ppm"}),
    "ph": frozenset({None}),
    "pm1": frozenset({"μg/m³"}),
    "pm10": frozenset({"μg/m³"}),
    "pm25": frozenset({"μg/m³"}),
    "pm4": frozenset({"μg/m³"}),
    "power": frozenset({"GW", "kW", "MW", "mW", "TW", "W"}),
    "power_factor": frozenset({"%", None}),
    "precipitation": frozenset({"cm", "in", "mm"}),
    "precipitation_intensity": frozenset({"in/d", "in/h", "mm/d", "mm/h"}),
    "pressure": frozenset({
        "atm", "bar", "cbar", "hPa", "inHg", "inH₂O", "kPa", "mbar", "mmHg", "mPa", "Pa", "psi",
    }),
    "radon": frozenset({"Bq/m³", "pCi/L"}),
    "reactive_energy": frozenset({"kvarh", "varh"}),
    "reactive_power": frozenset({"kvar", "mvar", "var"}),
    "signal_strength": frozenset({"dB", "dBm"}),
    "sound_pressure": frozenset({"dB", "dBA"}),
    "speed": frozenset({
        "Beaufort", "ft/s", "in/d", "in/h", "in/s", "km/h", "kn", "m/min", "m/s", "mm/d", "mm/h",
        "mm/s", "mph",
    }),
    "sulphur_dioxide": frozenset({"μg/m³", "ppb"}),
    "temperature": frozenset({"°C", "°F", "K"}),
    "temperature_delta": frozenset({"°C", "°F", "K"}),
    "volatile_organic_compounds": frozenset({"μg/m³", "mg/m³"}),
    "volatile_organic_compounds_parts": frozenset({"ppb", "ppm"}),
    "voltage": frozenset({"kV", "MV", "mV", "V", "μV"}),
    "volume": frozenset({"CCF", "fl. oz.", "ft³", "gal", "L", "MCF", "mL", "m³"}),
    "volume_flow_rate": frozenset({
        "ft³/min", "gal/d", "gal/h", "gal/min", "L/h", "L/min", "L/s", "mL/s", "m³/h", "m³/min",
        "m³/s",
    }),
    "volume_storage": frozenset({"CCF", "fl. oz.", "ft³", "gal", "L", "MCF", "mL", "m³"}),
    "water": frozenset({"CCF", "ft³", "gal", "L", "MCF", "m³"}),
    "weight": frozenset({"g", "μg", "kg", "lb", "mg", "oz", "st"}),
    "wind_direction": frozenset({"°"}),
    "wind_speed": frozenset({
        "Beaufort", "ft/s", "in/s", "km/h", "kn", "m/min", "m/s", "mm/s", "mph",
    }),
}
# fmt: on

#: Device class -> the state classes that make sense for it (empty: none).
DEVICE_CLASS_STATE_CLASSES: Final[dict[str, frozenset[str]]] = {
    "absolute_humidity": frozenset({"measurement"}),
    "apparent_power": frozenset({"measurement"}),
    "aqi": frozenset({"measurement"}),
    "area": frozenset({"measurement", "measurement_angle", "total", "total_increasing"}),
    "atmospheric_pressure": frozenset({"measurement"}),
    "battery": frozenset({"measurement"}),
    "blood_glucose_concentration": frozenset({"measurement"}),
    "carbon_dioxide": frozenset({"measurement"}),
    "carbon_monoxide": frozenset({"measurement"}),
    "conductivity": frozenset({"measurement"}),
    "current": frozenset({"measurement"}),
    "data_rate": frozenset({"measurement"}),
    "data_size": frozenset({"measurement", "measurement_angle", "total", "total_increasing"}),
    "date": frozenset(),
    "distance": frozenset({"measurement", "measurement_angle", "total", "total_increasing"}),
    "duration": frozenset({"measurement", "measurement_angle", "total", "total_increasing"}),
    "energy": frozenset({"total", "total_increasing"}),
    "energy_distance": frozenset({"measurement"}),
    "energy_storage": frozenset({"measurement"}),
    "enum": frozenset(),
    "frequency": frozenset({"measurement"}),
    "gas": frozenset({"total", "total_increasing"}),
    "humidity": frozenset({"measurement"}),
    "illuminance": frozenset({"measurement"}),
    "irradiance": frozenset({"measurement"}),
    "moisture": frozenset({"measurement"}),
    "monetary": frozenset({"total"}),
    "nitrogen_dioxide": frozenset({"measurement"}),
    "nitrogen_monoxide": frozenset({"measurement"}),
    "nitrous_oxide": frozenset({"measurement"}),
    "ozone": frozenset({"measurement"}),
    "ph": frozenset({"measurement"}),
    "pm1": frozenset({"measurement"}),
    "pm10": frozenset({"measurement"}),
    "pm25": frozenset({"measurement"}),
    "pm4": frozenset({"measurement"}),
    "power": frozenset({"measurement"}),
    "power_factor": frozenset({"measurement"}),
    "precipitation": frozenset({"measurement", "measurement_angle", "total", "total_increasing"}),
    "precipitation_intensity": frozenset({"measurement"}),
    "pressure": frozenset({"measurement"}),
    "radon": frozenset({"measurement"}),
    "reactive_energy": frozenset({"total", "total_increasing"}),
    "reactive_power": frozenset({"measurement"}),
    "signal_strength": frozenset({"measurement"}),
    "sound_pressure": frozenset({"measurement"}),
    "speed": frozenset({"measurement"}),
    "sulphur_dioxide": frozenset({"measurement"}),
    "temperature": frozenset({"measurement"}),
    "temperature_delta": frozenset({"measurement"}),
    "timestamp": frozenset(),
    "uptime": frozenset(),
    "volatile_organic_compounds": frozenset({"measurement"}),
    "volatile_organic_compounds_parts": frozenset({"measurement"}),
    "voltage": frozenset({"measurement"}),
    "volume": frozenset({"total", "total_increasing"}),
    "volume_flow_rate": frozenset({"measurement"}),
    "volume_storage": frozenset({"measurement"}),
    "water": frozenset({"total", "total_increasing"}),
    "weight": frozenset({"measurement", "total", "total_increasing"}),
    "wind_direction": frozenset({"measurement_angle"}),
    "wind_speed": frozenset({"measurement"}),
}

#: State class -> the only units it takes.
STATE_CLASS_UNITS: Final[dict[str, frozenset[str | None]]] = {
    "measurement_angle": frozenset({"°"}),
}

#: Spellings Home Assistant rewrites to its own before it checks a unit.
AMBIGUOUS_UNITS: Final[dict[str, str]] = {
    "VAr": "var",
    "VArh": "varh",
    "kVAr": "kvar",
    "kVArh": "kvarh",
    "mVAr": "mvar",
    "\u00b5S/cm": "μS/cm",
    "\u00b5Sv/h": "μSv/h",
    "\u00b5V": "μV",
    "\u00b5g": "μg",
    "\u00b5g/ft³": "μg/ft³",
    "\u00b5g/m³": "μg/m³",
    "\u00b5mol/s⋅m²": "μmol/s⋅m²",
    "\u00b5s": "μs",
}


# -- the gateway's own names for them ----------------------------------------------------------

#: Names decoders or users commonly give a value that are not Home Assistant's device class
#: names: `co2`, `pm2_5`, `rssi`; BTHome's `dew_point` (a temperature) and `mass` (Home
#: Assistant's `weight`), as Home Assistant's own BTHome integration classes them.
SENSOR_ALIASES: Final[dict[str, str]] = {
    "co2": "carbon_dioxide",
    "dew_point": "temperature",
    "mass": "weight",
    "pm2_5": "pm25",
    "rssi": "signal_strength",
}

#: BTHome's binary object names (gateway/decoders/ble/bthome.py) that differ from Home
#: Assistant's binary sensor device classes.
BINARY_ALIASES: Final[dict[str, str]] = {
    "battery_low": "battery",
    "gas_detected": "gas",
    "moisture_detected": "moisture",
    "power_state": "power",
}
