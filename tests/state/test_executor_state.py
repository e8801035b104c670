"""The executor's local scheduler, driven event by event through ``ExecutorState.handle``.

Every test hand-builds ``LaunchGroup``/``TaskSpec`` messages and notices, and checks the
returned commands exactly. Synchronous: no asyncio, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from drizzle.executor.state import (
    BlockNoticed,
    Command,
    DropShuffles,
    ExecutorState,
    GroupCancelled,
    GroupLaunched,
    MapOutputNoticed,
    ReplicateCached,
    SendToDriver,
    SendToPeer,
    ShufflesReleased,
    StartTask,
    TaskErrored,
    TaskSucceeded,
)
from drizzle.wire.messages import (
    BlockInput,
    BlockOutput,
    BlockReady,
    InlineBlock,
    LaunchGroup,
    MapLocation,
    MapOutput,
    MapOutputReady,
    MapOutputsReady,
    ResultValue,
    ShuffleInput,
    ShuffleOutput,
    TaskAttemptFailed,
    TaskFailed,
    TaskResult,
    TaskResults,
    TaskSpec,
)

ME = "e1"
"""The executor under test."""


# ------------------------------------------------------------------------------ helpers


def spec(
    task_id: int,
    *,
    batch: int = 0,
    stage: int = 0,
    partition: int = 0,
    attempt: int = 0,
    shuffle_inputs: Sequence[ShuffleInput] = (),
    block_inputs: Sequence[BlockInput] = (),
    shuffle_output: ShuffleOutput | None = None,
    block_outputs: Sequence[BlockOutput] = (),
    is_result: bool | None = None,
) -> TaskSpec:
    if is_result is None:
        is_result = shuffle_output is None
    return TaskSpec(
        task_id=task_id,
        batch=batch,
        stage_id=stage,
        partition=partition,
        attempt=attempt,
        payload=f"payload-{stage}",
        blobs=(),
        shuffle_inputs=tuple(shuffle_inputs),
        block_inputs=tuple(block_inputs),
        shuffle_output=shuffle_output,
        block_outputs=tuple(block_outputs),
        is_result=is_result,
    )


def launch(
    group_id: int,
    *specs: TaskSpec,
    known: Sequence[MapLocation] = (),
    release: Sequence[int] = (),
) -> GroupLaunched:
    return GroupLaunched(LaunchGroup(group_id, tuple(specs), (), tuple(known), tuple(release)))


def notice(
    shuffle_id: int, map_id: int, executor: str = "e0", group_id: int = 0
) -> MapOutputNoticed:
    return MapOutputNoticed(MapOutputReady(group_id, shuffle_id, map_id, executor, (1, 2)))


def block_notice(dataset_id: int, partition: int, executor: str = "e3") -> BlockNoticed:
    return BlockNoticed(BlockReady(0, dataset_id, partition, executor))


def started(out: Sequence[Command]) -> list[int]:
    """Task ids of the StartTask commands, in emission order."""
    return [c.spec.task_id for c in out if isinstance(c, StartTask)]


def start(
    s: TaskSpec,
    group_id: int = 0,
    maps: dict[int, dict[int, str]] | None = None,
    blocks: dict[tuple[int, int], str] | None = None,
) -> StartTask:
    return StartTask(group_id, s, maps or {}, blocks or {})


def same_commands(out: Sequence[Command], expected: Sequence[Command]) -> bool:
    """Equal as multisets (the order of independent sends is not part of the contract)."""
    return sorted(map(repr, out)) == sorted(map(repr, expected))


def result_of(s: TaskSpec, value: bytes, group_id: int = 0, executor: str = ME) -> TaskResult:
    return TaskResult(
        group_id, s.batch, s.stage_id, s.partition, s.task_id, s.attempt, executor, value
    )


def reducer(
    task_id: int,
    shuffle_id: int,
    num_maps: int,
    *,
    batch: int = 0,
    stage: int = 1,
    partition: int = 0,
) -> TaskSpec:
    """A result task reading reduce partition ``partition`` of one shuffle."""
    return spec(
        task_id,
        batch=batch,
        stage=stage,
        partition=partition,
        shuffle_inputs=(ShuffleInput(shuffle_id, num_maps, partition),),
    )


# ------------------------------------------------------------- (a) (b) (c) map notices


def test_reducer_starts_only_on_the_last_of_m_notices() -> None:
    state = ExecutorState(ME, cores=2)
    r = reducer(10, shuffle_id=7, num_maps=3, stage=1)
    assert state.handle(launch(0, r)) == []
    assert state.handle(notice(7, 0, "e0")) == []
    assert state.handle(notice(7, 1, "e2")) == []
    assert state.running == 0
    out = state.handle(notice(7, 2, "e0"))
    assert out == [start(r, maps={7: {0: "e0", 1: "e2", 2: "e0"}})]
    assert state.running == 1


def test_reducer_of_two_shuffles_waits_for_both() -> None:
    state = ExecutorState(ME, cores=1)
    r = spec(
        10, stage=2, shuffle_inputs=(ShuffleInput(3, 2, 1), ShuffleInput(4, 1, 1)), partition=1
    )
    assert state.handle(launch(0, r)) == []
    assert state.handle(notice(3, 0)) == []
    assert state.handle(notice(3, 1)) == []
    assert state.handle(notice(4, 0, "e2")) == [
        start(r, maps={3: {0: "e0", 1: "e0"}, 4: {0: "e2"}})
    ]


def test_notices_arriving_before_the_launch_are_counted() -> None:
    state = ExecutorState(ME, cores=1)
    for m in range(3):
        assert state.handle(notice(7, m, f"e{m}")) == []
    r = reducer(10, shuffle_id=7, num_maps=3, stage=1)
    assert state.handle(launch(0, r)) == [start(r, maps={7: {0: "e0", 1: "e1", 2: "e2"}})]


def test_notices_split_around_the_launch_are_all_counted() -> None:
    state = ExecutorState(ME, cores=1)
    assert state.handle(notice(7, 0)) == []
    assert state.handle(notice(7, 1)) == []
    r = reducer(10, shuffle_id=7, num_maps=3, stage=1)
    assert state.handle(launch(0, r)) == []
    assert state.handle(notice(7, 2)) == [start(r, maps={7: {0: "e0", 1: "e0", 2: "e0"}})]


def test_known_map_outputs_of_the_launch_count_as_notices() -> None:
    state = ExecutorState(ME, cores=1)
    r = reducer(10, shuffle_id=7, num_maps=2, stage=1)
    known = (MapLocation(7, 0, "e0"), MapLocation(7, 1, "e2"))
    assert state.handle(launch(0, r, known=known)) == [start(r, maps={7: {0: "e0", 1: "e2"}})]


def test_duplicated_notice_is_not_counted_twice() -> None:
    state = ExecutorState(ME, cores=1)
    r = reducer(10, shuffle_id=7, num_maps=3, stage=1)
    assert state.handle(launch(0, r)) == []
    assert state.handle(notice(7, 0)) == []
    assert state.handle(notice(7, 0)) == []
    assert state.handle(notice(7, 1)) == []
    assert state.handle(notice(7, 1, "e2")) == []  # a re-run map that moved: still map 1
    assert state.running == 0
    assert state.handle(notice(7, 2)) == [start(r, maps={7: {0: "e0", 1: "e2", 2: "e0"}})]


def test_duplicated_notice_before_the_launch_is_not_counted_twice() -> None:
    state = ExecutorState(ME, cores=1)
    assert state.handle(notice(7, 0)) == []
    assert state.handle(notice(7, 0)) == []
    r = reducer(10, shuffle_id=7, num_maps=2, stage=1)
    assert state.handle(launch(0, r)) == []
    assert state.handle(notice(7, 1)) == [start(r, maps={7: {0: "e0", 1: "e0"}})]


def test_notice_of_another_shuffle_does_not_count() -> None:
    state = ExecutorState(ME, cores=1)
    r = reducer(10, shuffle_id=7, num_maps=1, stage=1)
    assert state.handle(launch(0, r)) == []
    assert state.handle(notice(8, 0)) == []
    assert state.handle(notice(7, 0)) == [start(r, maps={7: {0: "e0"}})]


# ---------------------------------------------------------------------- (d) results


def test_result_task_reports_once_and_only_after_success() -> None:
    state = ExecutorState(ME, cores=1)
    r = reducer(10, shuffle_id=7, num_maps=1, stage=1, batch=3, partition=2)
    assert r.is_result
    assert r.shuffle_output is None
    assert state.handle(launch(5, r)) == []
    assert state.handle(notice(7, 0, group_id=5)) == [start(r, 5, maps={7: {0: "e0"}})]
    assert state.handle(notice(7, 0, group_id=5)) == []  # nothing for the driver yet
    out = state.handle(TaskSucceeded(10, value=b"pickled"))
    assert out == [SendToDriver("driver", result_of(r, b"pickled", group_id=5))]
    assert out[0].message == TaskResult(5, 3, 1, 2, 10, 0, ME, b"pickled")
    assert state.handle(TaskSucceeded(10, value=b"again")) == []  # never twice
    assert state.running == 0
    assert state.unfinished_tasks() == 0


# ------------------------------------------------------------------ (e) map outputs


def test_finished_map_notifies_each_remote_reducer_executor_and_the_tracker() -> None:
    state = ExecutorState(ME, cores=1)
    m = spec(1, stage=0, partition=4, shuffle_output=ShuffleOutput(5, 3, ("e0", ME, "e2")))
    local_reducer = reducer(2, shuffle_id=5, num_maps=1, stage=1)
    assert state.handle(launch(0, m, local_reducer)) == [start(m)]

    out = state.handle(TaskSucceeded(1, sizes=(10, 20, 30)))

    ready = MapOutputReady(0, 5, 4, ME, (10, 20, 30))
    sends = [c for c in out if not isinstance(c, StartTask)]
    assert same_commands(
        sends,
        [SendToPeer("e0", ready), SendToPeer("e2", ready), SendToDriver("tracker", ready)],
    )
    assert not any(isinstance(c, SendToPeer) and c.peer == ME for c in out)
    # The notice to itself is applied locally: its reducer (needing 1 map) starts.
    assert [c for c in out if isinstance(c, StartTask)] == [start(local_reducer, maps={5: {4: ME}})]
    assert state.map_outputs[5] == {4: ME}
    assert state.stats.notices_sent == 3


def test_finished_map_not_reading_itself_sends_to_peers_and_tracker_only() -> None:
    state = ExecutorState(ME, cores=1)
    m = spec(1, partition=0, shuffle_output=ShuffleOutput(5, 2, ("e0", "e2")))
    assert state.handle(launch(0, m)) == [start(m)]
    out = state.handle(TaskSucceeded(1, sizes=(3, 4)))
    ready = MapOutputReady(0, 5, 0, ME, (3, 4))
    assert same_commands(
        out, [SendToPeer("e0", ready), SendToPeer("e2", ready), SendToDriver("tracker", ready)]
    )
    assert not any(isinstance(c, SendToDriver) and c.target == "driver" for c in out)


def test_duplicated_notify_entries_give_one_notice_per_distinct_executor() -> None:
    state = ExecutorState(ME, cores=1)
    m = spec(1, shuffle_output=ShuffleOutput(5, 2, ("e0", "e0", ME, ME)))
    state.handle(launch(0, m))
    out = state.handle(TaskSucceeded(1, sizes=(1, 1)))
    ready = MapOutputReady(0, 5, 0, ME, (1, 1))
    assert same_commands(out, [SendToPeer("e0", ready), SendToDriver("tracker", ready)])


# ------------------------------------------------------------------ (f) local priority


def test_runnable_tasks_start_lower_batch_first_then_downstream_stage_first() -> None:
    state = ExecutorState(ME, cores=1, barrier=False)
    b1_map = spec(1, batch=1, stage=2, shuffle_output=ShuffleOutput(9, 1, ("e0",)))
    b0_map_p0 = spec(2, batch=0, stage=0, partition=0, shuffle_output=ShuffleOutput(8, 1, ()))
    b0_map_p1 = spec(3, batch=0, stage=0, partition=1, shuffle_output=ShuffleOutput(8, 1, ()))
    b0_result = spec(4, batch=0, stage=1)
    order: list[int] = []
    order += started(state.handle(launch(0, b1_map, b0_map_p1, b0_result, b0_map_p0)))
    for _ in range(3):
        order += started(state.handle(TaskSucceeded(order[-1], sizes=(1,))))
    assert order == [4, 2, 3, 1]


def test_reduce_of_batch_b_starts_before_map_of_batch_b_plus_1() -> None:
    state = ExecutorState(ME, cores=1, barrier=False)
    m0 = spec(1, batch=0, stage=0, shuffle_output=ShuffleOutput(0, 1, ("e0",)))
    r0 = reducer(2, shuffle_id=0, num_maps=1, batch=0, stage=1)
    m1 = spec(3, batch=1, stage=2, shuffle_output=ShuffleOutput(1, 1, ("e0",)))
    assert started(state.handle(launch(0, m1, r0, m0))) == [1]
    assert state.handle(notice(0, 0, "e0")) == []  # r0 runnable, but no slot
    assert started(state.handle(TaskSucceeded(1, sizes=(1,)))) == [2]
    assert started(state.handle(TaskSucceeded(2, value=b""))) == [3]


def test_start_order_with_two_cores_in_one_output() -> None:
    state = ExecutorState(ME, cores=2, barrier=False)
    tasks = [
        spec(1, batch=2, stage=5),
        spec(2, batch=1, stage=3, shuffle_output=ShuffleOutput(1, 1, ())),
        spec(3, batch=1, stage=4),
        spec(4, batch=0, stage=0, shuffle_output=ShuffleOutput(0, 1, ())),
    ]
    assert started(state.handle(launch(0, *tasks))) == [4, 3]
    assert started(state.handle(TaskSucceeded(4, sizes=(1,)))) == [2]
    assert started(state.handle(TaskSucceeded(3))) == [1]


# ------------------------------------------------------------------------ (g) barrier


def test_barrier_holds_next_batch_while_a_task_of_batch_b_waits_or_runs() -> None:
    state = ExecutorState(ME, cores=2, barrier=True)
    r0 = reducer(1, shuffle_id=0, num_maps=1, batch=0, stage=1)
    m1 = spec(2, batch=1, stage=2, shuffle_output=ShuffleOutput(1, 1, ("e0",)))
    assert state.handle(launch(0, r0, m1)) == []  # r0 waits: m1 may not start
    assert state.handle(notice(0, 0)) == [start(r0, maps={0: {0: "e0"}})]  # r0 runs: still not
    out = state.handle(TaskSucceeded(1, value=b"v"))
    assert out == [SendToDriver("driver", result_of(r0, b"v")), start(m1)]


def test_barrier_off_starts_next_batch_at_once() -> None:
    state = ExecutorState(ME, cores=2, barrier=False)
    r0 = reducer(1, shuffle_id=0, num_maps=1, batch=0, stage=1)
    m1 = spec(2, batch=1, stage=2, shuffle_output=ShuffleOutput(1, 1, ("e0",)))
    assert state.handle(launch(0, r0, m1)) == [start(m1)]


@pytest.mark.parametrize("barrier", [True, False])
def test_freed_slot_goes_to_next_batch_only_without_barrier(barrier: bool) -> None:
    state = ExecutorState(ME, cores=1, barrier=barrier)
    t0 = spec(1, batch=0, stage=0, shuffle_output=ShuffleOutput(0, 1, ("e0",)))
    r0 = reducer(2, shuffle_id=5, num_maps=1, batch=0, stage=1)  # waits on a remote shuffle
    m1 = spec(3, batch=1, stage=2, shuffle_output=ShuffleOutput(1, 1, ("e0",)))
    assert started(state.handle(launch(0, t0, r0, m1))) == [1]
    out = state.handle(TaskSucceeded(1, sizes=(1,)))
    assert started(out) == ([] if barrier else [3])
    if barrier:
        assert started(state.handle(notice(5, 0))) == [2]
        assert started(state.handle(TaskSucceeded(2))) == [3]


def test_barrier_is_per_group() -> None:
    state = ExecutorState(ME, cores=2, barrier=True)
    r0 = reducer(1, shuffle_id=0, num_maps=1, batch=0, stage=1)
    assert state.handle(launch(0, r0)) == []
    t = spec(2, batch=7, stage=9)
    assert state.handle(launch(1, t)) == [start(t, group_id=1)]


def test_barrier_of_one_group_does_not_hold_another_groups_tasks() -> None:
    state = ExecutorState(ME, cores=2, barrier=True)
    r0 = reducer(1, shuffle_id=0, num_maps=1, batch=0, stage=1)
    m1 = spec(2, batch=1, stage=2, shuffle_output=ShuffleOutput(1, 1, ("e0",)))
    assert state.handle(launch(0, r0, m1)) == []  # m1 held by the barrier of group 0
    t = spec(3, batch=0, stage=0)
    assert state.handle(launch(1, t)) == [start(t, group_id=1)]


# -------------------------------------------------------------------------- (h) slots


def test_never_more_than_cores_tasks_outstanding() -> None:
    state = ExecutorState(ME, cores=2, barrier=False)
    tasks = [spec(i, batch=0, stage=0, partition=i) for i in range(5)]
    outstanding: list[int] = []
    outstanding += started(state.handle(launch(0, *tasks)))
    assert outstanding == [0, 1]
    finished = 0
    while outstanding:
        done = outstanding.pop(0)
        outstanding += started(state.handle(TaskSucceeded(done, value=b"")))
        finished += 1
        assert len(outstanding) <= 2
        assert state.running == len(outstanding)
    assert finished == 5


def test_waiting_tasks_hold_no_slot() -> None:
    state = ExecutorState(ME, cores=1)
    waiting = [reducer(i, shuffle_id=i, num_maps=1, batch=0, stage=1) for i in range(3)]
    free = spec(9, batch=0, stage=0, shuffle_output=ShuffleOutput(50, 1, ("e0",)))
    assert state.handle(launch(0, *waiting, free)) == [start(free)]


def test_final_failure_frees_exactly_one_slot() -> None:
    state = ExecutorState(ME, cores=1, barrier=False, max_task_attempts=1)
    tasks = [spec(i, partition=i) for i in range(3)]
    assert started(state.handle(launch(0, *tasks))) == [0]
    out = state.handle(TaskErrored(0, "ValueError", "boom", "tb"))
    assert started(out) == [1]
    assert state.running == 1


@pytest.mark.parametrize("barrier", [True, False])
def test_finished_groups_leave_no_bookkeeping_behind(barrier: bool) -> None:
    state = ExecutorState(ME, cores=2, barrier=barrier)
    task_id = 0
    for group_id in range(200):
        specs = [spec(task_id + i, batch=b, partition=i) for i, b in enumerate((0, 0, 1, 1))]
        task_id += len(specs)
        running = started(state.handle(launch(group_id, *specs)))
        while running:
            running += started(state.handle(TaskSucceeded(running.pop(0), value=b"v")))
    assert state.unfinished_tasks() == 0
    for counts in (state._pending, state._unfinished):
        assert counts.earliest(0) is None
        assert not counts._counts
        assert not counts._batches  # no heap left per finished group


def test_results_of_one_micro_batch_here_go_to_the_driver_in_one_message() -> None:
    state = ExecutorState(ME, cores=2)
    a, b = spec(1, partition=0), spec(2, partition=1)
    later = spec(3, batch=1, partition=0)
    assert started(state.handle(launch(0, a, b, later))) == [1, 2]
    assert state.handle(TaskSucceeded(1, value=b"a")) == []  # held: task 2 is running
    out = state.handle(TaskSucceeded(2, value=b"b"))
    assert out[0] == SendToDriver(
        "driver",
        TaskResults(0, 0, ME, (ResultValue(0, 0, 1, 0, b"a"), ResultValue(0, 1, 2, 0, b"b"))),
    )
    assert started(out) == [3]
    # Alone in its micro-batch here, a result travels as it always did.
    out = state.handle(TaskSucceeded(3, value=b"c"))
    assert out == [SendToDriver("driver", TaskResult(0, 1, 0, 0, 3, 0, ME, b"c"))]


def test_results_held_here_leave_when_their_last_sibling_is_given_back() -> None:
    state = ExecutorState(ME, cores=2, max_task_attempts=2)
    a, b = spec(1, partition=0), spec(2, partition=1)
    state.handle(launch(0, a, b))
    assert state.handle(TaskSucceeded(1, value=b"a")) == []
    out = state.handle(TaskErrored(2, "ValueError", "boom", "tb"))
    assert out[0] == SendToDriver("driver", TaskResult(0, 0, 0, 0, 1, 0, ME, b"a"))
    assert isinstance(out[1], SendToDriver)
    assert isinstance(out[1].message, TaskAttemptFailed)


def test_a_cancelled_group_drops_the_results_it_held() -> None:
    state = ExecutorState(ME, cores=2)
    a, b = spec(1, partition=0), spec(2, partition=1)
    state.handle(launch(0, a, b))
    state.handle(TaskSucceeded(1, value=b"a"))
    state.handle(GroupCancelled(0))
    # Task 2 was running: its own result still leaves (the driver ignores it), alone.
    out = state.handle(TaskSucceeded(2, value=b"b"))
    assert out == [SendToDriver("driver", TaskResult(0, 0, 0, 1, 2, 0, ME, b"b"))]


def test_notices_of_one_micro_batch_here_go_in_one_message_per_destination() -> None:
    state = ExecutorState(ME, cores=2, inline_limit=16)
    output = ShuffleOutput(5, 2, ("e0", "e2"), ((0,), (1,)))
    m0 = spec(1, partition=0, shuffle_output=output)
    m1 = spec(2, partition=1, shuffle_output=output)
    state.handle(launch(0, m0, m1))
    out = state.handle(TaskSucceeded(1, sizes=(3, 1), blocks=(b"abc", b"d")))
    # Reducers need every map output: all notices wait for the other map here.
    assert not [c for c in out if isinstance(c, (SendToPeer, SendToDriver))]
    out = state.handle(TaskSucceeded(2, sizes=(4, 2), blocks=(b"abcd", b"ef")))
    assert [c.message for c in out if isinstance(c, SendToDriver)] == [
        MapOutputsReady(0, ME, (MapOutput(5, 0, (3, 1)), MapOutput(5, 1, (4, 2))))
    ]
    to_peers = {c.peer: c.message for c in out if isinstance(c, SendToPeer)}
    assert to_peers == {
        "e0": MapOutputsReady(
            0,
            ME,
            (
                MapOutput(5, 0, (3, 1), (InlineBlock(0, b"abc"),)),
                MapOutput(5, 1, (4, 2), (InlineBlock(0, b"abcd"),)),
            ),
        ),
        "e2": MapOutputsReady(
            0,
            ME,
            (
                MapOutput(5, 0, (3, 1), (InlineBlock(1, b"d"),)),
                MapOutput(5, 1, (4, 2), (InlineBlock(1, b"ef"),)),
            ),
        ),
    }


def test_notices_sent_together_carry_no_more_inline_bytes_than_one_may() -> None:
    state = ExecutorState(ME, cores=3, inline_limit=10)
    output = ShuffleOutput(5, 1, ("e0",), ((0,),))
    maps = [spec(t, partition=t, shuffle_output=output) for t in range(3)]
    state.handle(launch(0, *maps))
    state.handle(TaskSucceeded(0, sizes=(8,), blocks=(b"a" * 8,)))
    state.handle(TaskSucceeded(1, sizes=(1,), blocks=(b"b",)))
    out = state.handle(TaskSucceeded(2, sizes=(9,), blocks=(b"c" * 9,)))
    # One notice may carry one block of up to 10 bytes: 8 + 1 fit, 9 more does not.
    assert [c.message for c in out if isinstance(c, SendToPeer)] == [
        MapOutputsReady(
            0,
            ME,
            (
                MapOutput(5, 0, (8,), (InlineBlock(0, b"a" * 8),)),
                MapOutput(5, 1, (1,), (InlineBlock(0, b"b"),)),
            ),
        ),
        MapOutputReady(0, 5, 2, ME, (9,), (InlineBlock(0, b"c" * 9),)),
    ]


def test_a_single_map_output_for_a_peer_goes_alone() -> None:
    state = ExecutorState(ME, cores=2)
    m0 = spec(1, partition=0, shuffle_output=ShuffleOutput(5, 1, ("e0",)))
    state.handle(launch(0, m0))
    out = state.handle(TaskSucceeded(1, sizes=(3,), blocks=(b"abc",)))
    assert [c.message for c in out if isinstance(c, SendToPeer)] == [
        MapOutputReady(0, 5, 0, ME, (3,))
    ]


# ------------------------------------------------------------------------ (i) retries


def test_failed_attempt_is_given_back_with_the_inputs_announced_here() -> None:
    state = ExecutorState(ME, cores=1, max_task_attempts=3)
    r = reducer(10, shuffle_id=7, num_maps=1, stage=1, batch=2, partition=1)
    state.handle(launch(4, r))
    assert state.handle(notice(7, 0, group_id=4)) == [start(r, 4, maps={7: {0: "e0"}})]
    out = state.handle(TaskErrored(10, "ValueError", "boom", "tb"))
    assert out == [
        SendToDriver(
            "driver",
            TaskAttemptFailed(
                4, 2, 1, 1, 10, 1, ME, "ValueError", "boom", "tb", (MapLocation(7, 0, "e0"),)
            ),
        )
    ]
    assert state.running == 0
    assert state.unfinished_tasks() == 0
    assert state.stats.retries == 1
    assert state.handle(TaskSucceeded(10)) == []  # a late success of a given-back attempt


def test_attempts_relaunched_here_fail_for_good_after_max_attempts() -> None:
    state = ExecutorState(ME, cores=1, max_task_attempts=3)
    r = reducer(10, shuffle_id=7, num_maps=1, stage=1, batch=2, partition=1)
    state.handle(launch(4, r))
    state.handle(notice(7, 0, group_id=4))
    for attempt in (1, 2):
        out = state.handle(TaskErrored(10, "ValueError", "boom", "tb"))
        assert [type(c.message) for c in out if isinstance(c, SendToDriver)] == [TaskAttemptFailed]
        retried = TaskSpec(**{**_fields(r), "attempt": attempt})
        assert state.handle(launch(4, retried)) == [start(retried, 4, maps={7: {0: "e0"}})]
        assert state.handle(launch(4, retried)) == []  # the same attempt twice: once
    out = state.handle(TaskErrored(10, "ValueError", "boom", "tb"))
    assert out == [
        SendToDriver("driver", TaskFailed(4, 2, 1, 1, 10, 3, ME, "ValueError", "boom", "tb"))
    ]
    assert state.stats.retries == 2
    assert state.stats.tasks_failed == 1
    assert state.handle(TaskSucceeded(10)) == []  # a late success of a failed task is ignored
    assert state.unfinished_tasks() == 0


def test_non_retryable_error_fails_at_once() -> None:
    state = ExecutorState(ME, cores=1, max_task_attempts=4)
    t = spec(1)
    assert state.handle(launch(0, t)) == [start(t)]
    out = state.handle(TaskErrored(1, "FetchFailed", "gone", "tb", retryable=False))
    assert out == [
        SendToDriver("driver", TaskFailed(0, 0, 0, 0, 1, 1, ME, "FetchFailed", "gone", "tb"))
    ]


def test_success_of_a_later_attempt_reports_the_attempt() -> None:
    state = ExecutorState(ME, cores=1, max_task_attempts=4)
    t = spec(1)
    state.handle(launch(0, t))
    state.handle(TaskErrored(1, "E", "e", "tb"))
    again = TaskSpec(**{**_fields(t), "attempt": 1})
    assert state.handle(launch(0, again)) == [start(again)]
    out = state.handle(TaskSucceeded(1, value=b"ok"))
    assert out == [SendToDriver("driver", TaskResult(0, 0, 0, 0, 1, 1, ME, b"ok"))]


def _fields(s: TaskSpec) -> dict[str, object]:
    return {name: getattr(s, name) for name in TaskSpec.__dataclass_fields__}


# ----------------------------------------------------------------------- (j) cancel


def test_cancelled_group_drops_waiting_tasks_even_if_notices_arrive() -> None:
    state = ExecutorState(ME, cores=2)
    r = reducer(10, shuffle_id=7, num_maps=1, stage=1)
    other = reducer(11, shuffle_id=7, num_maps=1, stage=1, partition=1)
    state.handle(launch(0, r))
    state.handle(launch(1, other))
    assert state.handle(GroupCancelled(0)) == []
    assert state.handle(notice(7, 0)) == [start(other, 1, maps={7: {0: "e0"}})]
    assert state.stats.tasks_started == 1


def test_cancelled_group_drops_runnable_tasks_not_started() -> None:
    state = ExecutorState(ME, cores=1, barrier=False)
    a, b = spec(1, partition=0), spec(2, partition=1)
    assert state.handle(launch(0, a, b)) == [start(a)]
    assert state.handle(GroupCancelled(0)) == []
    assert started(state.handle(TaskSucceeded(1))) == []
    assert state.running == 0
    assert state.unfinished_tasks() == 0


def test_cancel_drops_tasks_held_by_the_barrier() -> None:
    state = ExecutorState(ME, cores=1)
    r0 = reducer(1, shuffle_id=0, num_maps=1, batch=0, stage=1)
    m1 = spec(2, batch=1, stage=2)
    assert state.handle(launch(0, r0, m1)) == []
    assert state.handle(GroupCancelled(0)) == []
    assert state.handle(notice(0, 0)) == []
    assert state.stats.tasks_started == 0
    assert state.unfinished_tasks() == 0


# ------------------------------------------------------------------ (k) cached blocks


def test_block_input_without_location_waits_for_its_notice() -> None:
    state = ExecutorState(ME, cores=1)
    t = spec(1, block_inputs=(BlockInput(9, 0, ""),))
    assert state.handle(launch(0, t)) == []
    assert state.handle(block_notice(9, 1)) == []  # another partition
    assert state.handle(block_notice(9, 0, "e3")) == [start(t, blocks={(9, 0): "e3"})]


def test_block_notice_before_the_launch_counts() -> None:
    state = ExecutorState(ME, cores=1)
    assert state.handle(block_notice(9, 0, "e3")) == []
    t = spec(1, block_inputs=(BlockInput(9, 0, ""),))
    assert state.handle(launch(0, t)) == [start(t, blocks={(9, 0): "e3"})]


def test_block_input_with_location_is_runnable_at_once() -> None:
    state = ExecutorState(ME, cores=1)
    t = spec(1, block_inputs=(BlockInput(9, 0, "e2"),))
    assert state.handle(launch(0, t)) == [start(t, blocks={(9, 0): "e2"})]


def test_block_written_by_a_local_task_wakes_its_reader() -> None:
    state = ExecutorState(ME, cores=1, barrier=False)
    writer = spec(1, batch=0, block_outputs=(BlockOutput(9, 0, ("e2", ME), ("e3", ME)),))
    reader = spec(2, batch=1, stage=1, block_inputs=(BlockInput(9, 0, ""),))
    assert state.handle(launch(0, writer, reader)) == [start(writer)]
    out = state.handle(TaskSucceeded(1, value=b"w"))
    # Remote readers and the tracker hear of the partition; a copy goes to the replica
    # (never to itself); the local reader starts at once.
    assert same_commands(
        out,
        [
            SendToPeer("e2", BlockReady(0, 9, 0, ME)),
            ReplicateCached(0, 9, 0, ("e3",)),
            SendToDriver("tracker", BlockReady(0, 9, 0, ME)),
            SendToDriver("driver", result_of(writer, b"w")),
            start(reader, blocks={(9, 0): ME}),
        ],
    )


def test_block_reader_and_shuffle_reader_needs_both() -> None:
    state = ExecutorState(ME, cores=1)
    t = spec(
        1, stage=1, shuffle_inputs=(ShuffleInput(7, 1, 0),), block_inputs=(BlockInput(9, 0, ""),)
    )
    assert state.handle(launch(0, t)) == []
    assert state.handle(block_notice(9, 0, "e3")) == []
    assert state.handle(notice(7, 0)) == [start(t, maps={7: {0: "e0"}}, blocks={(9, 0): "e3"})]


# ------------------------------------------------------------------------ releases


def test_release_of_shuffles_drops_them() -> None:
    state = ExecutorState(ME, cores=1)
    state.handle(notice(3, 0))
    assert state.handle(ShufflesReleased((3, 4))) == [DropShuffles((3, 4))]
    assert 3 not in state.map_outputs
    t = spec(1)
    assert state.handle(launch(1, t, release=(5,))) == [DropShuffles((5,)), start(t, 1)]


def test_duplicated_launch_does_not_register_tasks_twice() -> None:
    state = ExecutorState(ME, cores=2)
    t = spec(1)
    assert state.handle(launch(0, t)) == [start(t)]
    assert state.handle(launch(0, t)) == []
    assert state.handle(TaskSucceeded(1, value=b"")) == [SendToDriver("driver", result_of(t, b""))]
