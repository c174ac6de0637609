"""Home Assistant MQTT discovery.

- `tables`: Home Assistant's own tables of sensor device classes, state classes and the units
  each device class accepts, copied as plain data; `checks`: the checks built on them.
- `identity`: the gateway, its devices and sensors as announced, and every id derived from them.
- `discovery`: pure functions from the gateway's devices to the retained discovery configs
  (topic -> JSON payload); `clearing`: the publishes that clear what is no longer announced.
- `devices`, `announcer`: what is announced for each configured device, and the session part
  that publishes it.
"""
