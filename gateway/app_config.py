"""The config as the application loads it: `gateway.config` validates the schema and runs the
checks inside the config; then come the checks that other packages own because they need more
than the config (ESPHome's final validate): Home Assistant's classes and units, the controls'
commands and state sensors. `gateway run`, `check-config`, `decode` and a reload
all load through here, so every check runs everywhere, with every problem in one list.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from gateway.config import Config
from gateway.config.loading import Check
from gateway.config.loading import load_config as load_and_check_config
from gateway.families.controls_check import check_controls
from gateway.homeassistant.config_check import check_sensor_classes

#: Each package's checks of a loaded config, in the order their problems are listed (after
#: those of the config's own checks).
FINAL_CHECKS: tuple[Check, ...] = (check_sensor_classes, check_controls)


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Load a config file and run every check on it; raise ConfigError listing each problem."""
    return load_and_check_config(path, env, checks=FINAL_CHECKS)
