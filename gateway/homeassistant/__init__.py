"""Home Assistant MQTT discovery.

- `tables`: Home Assistant's own tables of sensor device classes, state classes and the units
  each device class accepts, copied as plain data, and the checks built on them.
- `discovery`: pure functions from the gateway's devices to the retained discovery configs
  (topic -> JSON payload) and to the publishes that clear what is no longer announced.
- `devices`, `announcer`: what is announced for each configured device, and the session part
  that publishes it.
"""
