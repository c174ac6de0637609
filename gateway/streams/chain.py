"""A sensor's filters linked in order, as ESPHome's `Filter::output` feeds the next filter.

`Chain.feed` runs one sample through the filters; `Chain.tick` runs the timed filters that are
due and sends what they emit through the filters after them. Both return a `Result`: the
samples that leave the chain and, for a metric per filter, the name of the filter at which each
stopped sample stopped. `build_chain` makes a chain from the config models
(`gateway.config.filters`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.config.filters import FilterSpec
from gateway.streams.filters import Filter, Sample


@dataclass(slots=True)
class Result:
    samples: list[Sample]  # what leaves the chain
    dropped_by: list[str]  # one filter name per sample that stopped (dropped or absorbed)


class Chain:
    def __init__(self, filters: Sequence[Filter]) -> None:
        self.filters = tuple(filters)
        self.timed = any(f.timed for f in self.filters)  # an `or` is timed if a branch is

    def feed(self, sample: Sample, now: float) -> Result:
        result = Result([], [])
        self._run(0, [sample], now, result)
        return result

    def deadline(self) -> float | None:
        """The earliest deadline of its filters (monotonic seconds), or None."""
        due = [d for f in self.filters if (d := f.deadline()) is not None]
        return min(due, default=None)

    def tick(self, now: float, wall: float) -> Result:
        """Run each filter whose deadline has come, in order; what it emits goes through the
        filters after it (which may become due in turn, and are checked after it)."""
        result = Result([], [])
        for i, f in enumerate(self.filters):
            due = f.deadline()
            if due is not None and due <= now and (out := f.tick(now, wall)):
                self._run(i + 1, out, now, result)
        return result

    def _run(self, start: int, samples: list[Sample], now: float, result: Result) -> None:
        for f in self.filters[start:] if start else self.filters:
            if len(samples) == 1:  # the common case: one value in, at most one out
                out = f.feed(samples[0], now)
                if not out:
                    result.dropped_by.append(f.name)
                    return
                samples = out
                continue
            passed: list[Sample] = []
            for sample in samples:
                out = f.feed(sample, now)
                if not out:
                    result.dropped_by.append(f.name)
                passed.extend(out)
            samples = passed
            if not samples:
                return
        result.samples.extend(samples)


def build_chain(specs: Sequence[FilterSpec]) -> Chain:
    """A chain with fresh state from the config's filters."""
    return Chain([build_filter(spec) for spec in specs])


def build_filter(spec: FilterSpec) -> Filter:
    """One filter, with fresh state, from its config model (each registered filter builds its
    own: `gateway.config.filters.registry`)."""
    return spec.build()
