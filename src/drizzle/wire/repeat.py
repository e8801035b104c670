"""Expanding a launch's repeated micro-batches into their tasks.

A group's micro-batches usually differ only in names: their stage ids, shuffle ids,
pipelines and the cached datasets a stateful chain reads and writes. The group
scheduler then sends each executor its tasks of the first micro-batch once, and one
small ``BatchRepeat`` per later micro-batch; the executor, and the group scheduler when
a recovery needs the tasks, expand them with ``all_tasks``: both sides run this code,
so they agree on every task id. Depends only on ``drizzle.wire.messages``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from drizzle.wire.messages import (
    BatchRepeat,
    BlockInput,
    LaunchGroup,
    ShuffleInput,
    TaskSpec,
)


def all_tasks(launch: LaunchGroup) -> tuple[TaskSpec, ...]:
    """The launch's tasks followed by those of every repeated micro-batch."""
    if not launch.repeats:
        return launch.tasks
    tasks = list(launch.tasks)
    for repeat in launch.repeats:
        tasks.extend(repeat_tasks(launch.tasks, repeat))
    return tuple(tasks)


def repeat_tasks(base: Sequence[TaskSpec], repeat: BatchRepeat) -> list[TaskSpec]:
    datasets = dict(zip(repeat.datasets_from, repeat.datasets_to, strict=True))
    return [_repeat_task(spec, repeat, datasets) for spec in base]


def _repeat_task(spec: TaskSpec, repeat: BatchRepeat, datasets: dict[int, int]) -> TaskSpec:
    """``spec`` (a task of the first micro-batch) as the same task of ``repeat.batch``."""
    shuffle_offset = repeat.shuffle_offset
    output = spec.shuffle_output
    if output is not None and shuffle_offset:
        output = replace(output, shuffle_id=output.shuffle_id + shuffle_offset)
    return TaskSpec(
        task_id=spec.task_id + repeat.task_offset,
        batch=repeat.batch,
        stage_id=spec.stage_id + repeat.stage_offset,
        partition=spec.partition,
        attempt=spec.attempt,
        payload=repeat.payloads[spec.stage_id - repeat.base_stage],
        blobs=spec.blobs,
        shuffle_inputs=tuple(
            ShuffleInput(i.shuffle_id + shuffle_offset, i.num_maps, i.partition)
            for i in spec.shuffle_inputs
        )
        if shuffle_offset
        else spec.shuffle_inputs,
        block_inputs=tuple(_block_input(b, datasets) for b in spec.block_inputs),
        shuffle_output=output,
        block_outputs=tuple(
            replace(b, dataset_id=datasets[b.dataset_id]) if b.dataset_id in datasets else b
            for b in spec.block_outputs
        ),
        is_result=spec.is_result,
    )


def _block_input(block: BlockInput, datasets: dict[int, int]) -> BlockInput:
    renamed = datasets.get(block.dataset_id)
    if renamed is None:
        return block
    return BlockInput(renamed, block.partition, "")
