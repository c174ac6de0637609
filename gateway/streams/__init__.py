"""Per-sensor streams between the decoder and the encoder: ESPHome's sensor filters (`filters`),
linked into a chain per sensor (`chain`), run for a device by `device` and timed by `link`.

Nothing is imported here: the filters are pure and sit below the config (each filter's config
model builds its filter), while the chain and the device streams sit above it.
"""
