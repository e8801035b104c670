"""The group-size tuner on synthetic traces (pure, synchronous)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drizzle import TunerConfig
from drizzle.scheduler.tuner import GroupSample, GroupSizeTuner, TunerDecision


def feed(tuner: GroupSizeTuner, overhead: float) -> TunerDecision:
    """One full group at the tuner's current G whose overhead is ``overhead``."""
    return tuner.observe(GroupSample(tuner.group_size, 1.0, overhead))


def overhead_at(g: int, fixed: float, per_batch: float = 1.0) -> float:
    """Overhead of a group whose coordination costs ``fixed`` once and whose micro-batches
    each take ``per_batch``: the paper's setting, where G amortizes the fixed part."""
    return fixed / (fixed + g * per_batch)


def run_model(
    tuner: GroupSizeTuner, fixed: float, groups: int, per_batch: float = 1.0
) -> list[int]:
    """G of each group over ``groups`` groups of the model workload."""
    sizes = []
    for _ in range(groups):
        sizes.append(tuner.group_size)
        feed(tuner, overhead_at(tuner.group_size, fixed, per_batch))
    return sizes


def changes(sizes: list[int]) -> list[int]:
    out: list[int] = []
    for g in sizes:
        if not out or out[-1] != g:
            out.append(g)
    return out


def test_defaults_are_the_papers() -> None:
    cfg = TunerConfig()
    assert (cfg.lower, cfg.upper, cfg.start, cfg.factor, cfg.step) == (0.05, 0.10, 2, 2.0, 5)
    assert GroupSizeTuner().group_size == 2


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"lower": 0.1, "upper": 0.1}, "lower < upper"),
        ({"lower": -0.1}, "lower < upper"),
        ({"factor": 1.0}, "factor"),
        ({"weight": 0.0}, "weight"),
        ({"weight": 1.5}, "weight"),
        ({"step": 0}, "step"),
        ({"start": 2.5}, "start"),
        ({"minimum": 4, "start": 2}, "minimum <= start"),
        ({"maximum": 8, "start": 16}, "start <= maximum"),
        ({"confirm": 4, "window": 3}, "confirm <= window"),
        ({"measure": "wall"}, "measure"),
    ],
)
def test_bad_configs_are_refused(options: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TunerConfig(**options)  # type: ignore[arg-type]


def test_in_band_keeps_g_above_doubles_below_steps_down() -> None:
    tuner = GroupSizeTuner(TunerConfig(start=8, confirm=1, window=1, weight=1.0))
    assert feed(tuner, 0.07).action == "keep"
    assert tuner.group_size == 8
    assert feed(tuner, 0.2).action == "grow"
    assert tuner.group_size == 16
    assert feed(tuner, 0.01).action == "shrink"
    assert tuner.group_size == 11


@pytest.mark.parametrize("spike", [0.35, 1.0])
@pytest.mark.parametrize("start", [8, 40])
def test_one_spike_does_not_change_g(spike: float, start: int) -> None:
    """Figure 11's 250 ms run: one overhead spike (a GC pause) leaves G alone."""
    tuner = GroupSizeTuner(TunerConfig(start=start))
    trace = [0.075] * 10 + [spike] + [0.075] * 10
    decisions = [feed(tuner, o) for o in trace]
    assert {d.action for d in decisions} == {"keep"}
    assert tuner.group_size == start


def test_one_low_outlier_does_not_change_g() -> None:
    tuner = GroupSizeTuner(TunerConfig(start=20))
    decisions = [feed(tuner, o) for o in [0.075] * 5 + [0.0] + [0.075] * 5]
    assert {d.action for d in decisions} == {"keep"}


def test_a_spike_right_after_a_change_does_not_change_g() -> None:
    tuner = GroupSizeTuner(TunerConfig(start=30))
    for o in [0.01, 0.01]:
        feed(tuner, o)
    assert tuner.group_size == 25  # shrank once
    decisions = [feed(tuner, o) for o in [0.6] + [0.075] * 6]
    assert {d.action for d in decisions} == {"keep"}
    assert tuner.group_size == 25


def test_two_bad_groups_in_three_do_change_g() -> None:
    tuner = GroupSizeTuner(TunerConfig(start=8))
    for o in [0.075] * 5 + [0.5, 0.075, 0.5]:
        feed(tuner, o)
    assert tuner.group_size == 16


def test_figure_11_trajectory() -> None:
    """Start at 2, double while the smoothed overhead is above 10 % (overshooting to 64
    because the average lags), then step down by 5 into the band: 64, 59, 54, 49, 44,
    the trajectory of the paper's 100 ms run."""
    tuner = GroupSizeTuner()
    sizes = run_model(tuner, fixed=2.6, groups=60)
    assert changes(sizes) == [2, 4, 8, 16, 32, 64, 59, 54, 49, 44]
    assert 0.05 <= overhead_at(44, 2.6) <= 0.10
    assert tuner.smoothed is not None
    assert 0.05 <= tuner.smoothed <= 0.10


@pytest.mark.parametrize("fixed", [0.5, 1.0, 2.6, 5.0, 20.0])
def test_converges_for_a_steady_workload(fixed: float) -> None:
    tuner = GroupSizeTuner()
    sizes = run_model(tuner, fixed=fixed, groups=200)
    settled = sizes[-50:]
    assert len(set(settled)) == 1, changes(sizes)
    g = settled[0]
    assert 0.05 <= overhead_at(g, fixed) <= 0.10 or g == tuner.config.minimum


def test_shorter_micro_batches_settle_on_a_larger_g() -> None:
    """Same coordination cost per group; micro-batches of 100 vs 250 time units."""
    short = run_model(GroupSizeTuner(), fixed=260.0, per_batch=100.0, groups=200)[-1]
    long = run_model(GroupSizeTuner(), fixed=260.0, per_batch=250.0, groups=200)[-1]
    assert short > long


def test_cut_short_groups_are_skipped() -> None:
    tuner = GroupSizeTuner(TunerConfig(start=8))
    decision = tuner.observe(GroupSample(3, 1.0, 0.9))
    assert decision.action == "skip"
    assert (tuner.group_size, tuner.smoothed, tuner.samples, tuner.skipped) == (8, None, 0, 1)


def test_overhead_is_clamped_to_a_fraction() -> None:
    assert GroupSample(1, 1.0, 2.0).overhead == 1.0
    assert GroupSample(1, 1.0, -1.0).overhead == 0.0
    assert GroupSample(1, 0.0, 1.0).overhead == 0.0


@settings(max_examples=200, deadline=None)
@given(
    minimum=st.integers(1, 20),
    span=st.integers(0, 200),
    start_at=st.floats(0, 1),
    factor=st.floats(1.01, 8),
    step=st.integers(1, 50),
    weight=st.floats(0.01, 1),
    window=st.integers(1, 5),
    overheads=st.lists(st.floats(0, 1), max_size=80),
)
def test_never_leaves_its_bounds(
    minimum: int,
    span: int,
    start_at: float,
    factor: float,
    step: int,
    weight: float,
    window: int,
    overheads: list[float],
) -> None:
    maximum = minimum + span
    cfg = TunerConfig(
        start=minimum + round(start_at * span),
        minimum=minimum,
        maximum=maximum,
        factor=factor,
        step=step,
        weight=weight,
        window=window,
        confirm=max(1, window - 1),
    )
    tuner = GroupSizeTuner(cfg)
    for o in overheads:
        d = feed(tuner, o)
        assert minimum <= d.next_group_size <= maximum
        assert d.next_group_size == tuner.group_size
