"""`or`: filters side by side, a sample passing when any of them passes it."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.streams.filters.base import Filter, Sample, same_value


class Or:
    """Pass a sample when any branch passes it. Every branch sees every sample; per sample fed,
    the first output of the first branch that has one leaves (ESPHome's phi node). On `tick`,
    the outputs of the due branches leave, a sample emitted by several branches once."""

    __slots__ = ("branches", "timed")
    name = "or"

    def __init__(self, branches: Sequence[Filter]) -> None:
        if not branches:
            raise ValueError("or needs at least one filter")
        self.branches = tuple(branches)
        self.timed = any(branch.timed for branch in self.branches)

    def feed(self, sample: Sample, now: float) -> list[Sample]:
        passed: list[Sample] = []
        for branch in self.branches:
            out = branch.feed(sample, now)
            if out and not passed:
                passed = out[:1]
        return passed

    def deadline(self) -> float | None:
        due = [d for branch in self.branches if (d := branch.deadline()) is not None]
        return min(due, default=None)

    def tick(self, now: float, wall: float) -> list[Sample]:
        emitted: list[Sample] = []
        for branch in self.branches:
            due = branch.deadline()
            if due is None or due > now:
                continue
            for sample in branch.tick(now, wall):
                if not any(
                    s.ts == sample.ts and same_value(s.value, sample.value) for s in emitted
                ):
                    emitted.append(sample)
        return emitted
