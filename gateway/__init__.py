"""IoT device gateway: supervised serial and BLE links bridged to MQTT."""

__version__ = "0.2.0"
