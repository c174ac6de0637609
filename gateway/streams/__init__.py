"""Per-sensor streams between the decoder and the encoder: ESPHome's sensor filters (`filters`),
linked into a chain per sensor (`chain`), run for a device by `device` and timed by `link`."""

from gateway.streams.chain import Chain, Result, build_chain
from gateway.streams.filters import Filter, Sample

__all__ = ["Chain", "Filter", "Result", "Sample", "build_chain"]
