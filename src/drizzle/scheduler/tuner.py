"""The group-size tuner: picks each group's size G from the overhead of earlier groups.

The rule is the Drizzle paper's (§3.4, Figure 11): the overhead of a group is the share
of its wall time spent on coordination rather than on running tasks, smoothed across
groups by an exponentially weighted moving average (EWMA); above the upper bound G is
multiplied (so the overhead falls fast), below the lower bound G is decreased by a
constant step (so the engine regains adaptability slowly), and in between G is kept.
One guard is added: G changes only when at least ``confirm`` of the last ``window``
groups (2 of 3 by default) were out of the band on the same side as the average, so
that one outlying group (a GC pause, a slow network round) changes nothing, however
large it is.

A group that ran fewer micro-batches than the tuner's G (the input ran out, or a
stage-shape change ended it) says nothing about G and is skipped.

Pure: no I/O, no clock, no asyncio. The caller measures and feeds ``GroupSample``s.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Literal

Measure = Literal["non_compute", "driver"]
Action = Literal["grow", "shrink", "keep", "skip"]


@dataclass(frozen=True, slots=True)
class TunerConfig:
    """How ``group_size="auto"`` picks G.

    Args:
        lower, upper: the target band of the smoothed overhead (fractions, 0.05 = 5 %).
        start: G of the first group.
        factor: G is multiplied by this (at least +1) when the overhead is above ``upper``.
        step: G is decreased by this when the overhead is below ``lower``.
        weight: EWMA weight of the newest sample (1: no smoothing).
        window, confirm: G changes only if at least ``confirm`` of the last ``window``
            samples are out of the band on the side of the smoothed overhead
            (``confirm=1``: the average alone decides).
        minimum, maximum: G never leaves ``[minimum, maximum]``.
        measure: what counts as coordination (read by the ``Context``, which measures):
            ``"non_compute"``: the group's wall time not explained by its tasks' compute
            time (the paper's "time spent in scheduling and other coordination vs. time
            spent on the workers executing tasks"); ``"driver"``: the driver-side work
            of ``GroupSummary.coordination_s`` (planning, placement, launch, results).
    """

    lower: float = 0.05
    upper: float = 0.10
    start: int = 2
    factor: float = 2.0
    step: int = 5
    weight: float = 0.3
    window: int = 3
    confirm: int = 2
    minimum: int = 1
    maximum: int = 1000
    measure: Measure = "non_compute"

    def __post_init__(self) -> None:
        for name in ("start", "step", "window", "confirm", "minimum", "maximum"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"TunerConfig.{name} must be a positive int, got {value!r}")
        if self.confirm > self.window:
            raise ValueError(f"need confirm <= window, got {self.confirm}, {self.window}")
        if not 0.0 <= self.lower < self.upper:
            raise ValueError(f"need 0 <= lower < upper, got {self.lower!r}, {self.upper!r}")
        if not self.factor > 1.0:
            raise ValueError(f"TunerConfig.factor must be > 1, got {self.factor!r}")
        if not 0.0 < self.weight <= 1.0:
            raise ValueError(f"TunerConfig.weight must be in (0, 1], got {self.weight!r}")
        if not self.minimum <= self.start <= self.maximum:
            raise ValueError(
                f"need minimum <= start <= maximum, got {self.minimum}, {self.start}, "
                f"{self.maximum}"
            )
        if self.measure not in ("non_compute", "driver"):
            raise ValueError(f"TunerConfig.measure must be non_compute or driver: {self.measure!r}")


@dataclass(frozen=True, slots=True)
class GroupSample:
    """What one completed group cost, as measured by the caller."""

    batches: int
    wall_s: float
    coordination_s: float

    @property
    def overhead(self) -> float:
        """``coordination_s / wall_s``, within [0, 1]."""
        if self.wall_s <= 0:
            return 0.0
        return min(1.0, max(0.0, self.coordination_s / self.wall_s))


@dataclass(frozen=True, slots=True)
class TunerDecision:
    """The tuner's answer to one sample."""

    group_size: int
    """G when the sample came in (the size its group was meant to have)."""
    next_group_size: int
    overhead: float
    """The sample's own overhead."""
    smoothed: float | None
    """The smoothed overhead after this sample (``None`` until a sample is used)."""
    action: Action


class GroupSizeTuner:
    """AIMD on G driven by the smoothed overhead (see the module docstring)."""

    def __init__(self, config: TunerConfig | None = None) -> None:
        self.config = config or TunerConfig()
        self.group_size = self.config.start
        self.smoothed: float | None = None
        self.samples = 0
        """Samples used (skipped ones not counted)."""
        self.skipped = 0
        self._recent: collections.deque[float] = collections.deque(maxlen=self.config.window)

    def observe(self, sample: GroupSample) -> TunerDecision:
        """Take one completed group's sample; returns what G becomes."""
        cfg = self.config
        before = self.group_size
        overhead = sample.overhead
        if sample.batches < before or sample.wall_s <= 0:
            self.skipped += 1
            return TunerDecision(before, before, overhead, self.smoothed, "skip")
        self.samples += 1
        self._recent.append(overhead)
        if self.smoothed is None:
            self.smoothed = overhead
        else:
            self.smoothed += cfg.weight * (overhead - self.smoothed)
        above = sum(o > cfg.upper for o in self._recent)
        below = sum(o < cfg.lower for o in self._recent)
        after = before
        if self.smoothed > cfg.upper and above >= cfg.confirm:
            after = max(before + 1, round(before * cfg.factor))
        elif self.smoothed < cfg.lower and below >= cfg.confirm:
            after = before - cfg.step
        after = min(cfg.maximum, max(cfg.minimum, after))
        action: Action = "keep" if after == before else ("grow" if after > before else "shrink")
        self.group_size = after
        return TunerDecision(before, after, overhead, self.smoothed, action)
