"""The executor actor: its local scheduler's I/O shell.

Registers with the group scheduler (versions checked there), heartbeats, turns
launches and notices into events for ``ExecutorState``, and carries out its commands:
fetching a task's remote inputs (one ``FetchBlocks`` per peer, with a deadline), running
the task on a worker thread, storing its output, and sending notices and results. It
also serves ``FetchBlocks`` from its block store. If the driver stops answering
heartbeats, the executor stops by itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import itertools
import logging
import sys
import traceback
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import cloudpickle

from drizzle import __version__, serde
from drizzle.actors.node import Actor, Node, UnexpectedMessage
from drizzle.errors import DrizzleError
from drizzle.executor.runner import PipelineCache, PreparedEnv, execute
from drizzle.executor.state import (
    BlockNoticed,
    Command,
    DropShuffles,
    ExecutorState,
    GroupCancelled,
    GroupLaunched,
    InputsLost,
    ReplicateCached,
    SendToDriver,
    SendToPeer,
    StartTask,
    TaskErrored,
    TaskSucceeded,
    noticed,
)
from drizzle.executor.store import BlockStore
from drizzle.wire.messages import (
    PROTOCOL_VERSION,
    BlockKey,
    BlockReady,
    BlocksFetched,
    CancelGroup,
    ErrorReply,
    ExecutorCounters,
    ExecutorLeaving,
    ExecutorRegistered,
    FetchBlocks,
    Heartbeat,
    HeartbeatAck,
    LaunchGroup,
    MapOutputReady,
    MapOutputsReady,
    RegisterExecutor,
    RegistrationRefused,
    ReleaseBlocks,
    ReplicateBlock,
    StopExecutor,
    TaskSpec,
)

log = logging.getLogger("drizzle.executor")

_FROM_DRIVER_ONLY = (
    LaunchGroup,
    CancelGroup,
    ReleaseBlocks,
    StopExecutor,
    HeartbeatAck,
    ExecutorRegistered,
    RegistrationRefused,
)
"""Messages an executor accepts from the driver's node only."""

LocalInputs = tuple[
    dict[tuple[int, int], list[bytes]],
    dict[str, list[BlockKey]],
    dict[str, list[tuple[str, tuple[int, int], int]]],
]
"""A task's shuffle inputs at hand, and what to fetch from which peer (keys, and where
each block goes: ``("s", (shuffle, partition), map id)`` or ``("c", block, 0)``)."""

TaskOutput = tuple[list[bytes] | bytes, float, float, float]
"""A task's output (blocks per reducer, or a pickled result) and its (queue wait,
deserialization, compute) seconds."""

TaskRunner = Callable[[PipelineCache, TaskSpec, PreparedEnv, float], asyncio.Future[TaskOutput]]
"""``runner(pipelines, spec, env, submitted)`` runs a task instead of a worker thread and
returns a future of its output (the simulator's: it runs the task inline and resolves
the future after the task's modelled duration, on the virtual clock)."""


def _check_claim(peer: str, executor_id: str) -> None:
    if executor_id != peer:
        raise UnexpectedMessage(f"notice from {peer} claims executor {executor_id}")


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Any, *args: Any) -> None:
    """From a worker thread: run ``callback`` on the loop, unless the loop is closed."""
    with contextlib.suppress(RuntimeError):  # the executor is shutting down
        loop.call_soon_threadsafe(callback, *args)


class FetchFailed(DrizzleError):
    """Blocks a task needs could not be fetched from a peer."""

    def __init__(self, message: str, peer: str = "") -> None:
        super().__init__(message)
        self.peer = peer


class ExecutorActor(Actor):
    name = "executor"
    handles = (
        MapOutputReady,
        MapOutputsReady,
        FetchBlocks,
        BlocksFetched,
        LaunchGroup,
        BlockReady,
        HeartbeatAck,
        CancelGroup,
        ReleaseBlocks,
        ReplicateBlock,
        ExecutorRegistered,
        RegistrationRefused,
        StopExecutor,
        ErrorReply,
    )

    def __init__(
        self,
        node: Node,
        driver: str,
        cores: int = 1,
        *,
        barrier: bool = True,
        max_task_attempts: int = 4,
        inline_limit: int = 64 * 1024,
        fetch_timeout: float = 30.0,
        register_timeout: float = 30.0,
        task_runner: TaskRunner | None = None,
    ) -> None:
        super().__init__(node)
        self.driver = driver
        self._driver_peer = driver
        """The driver as its messages name it (its bound address, which may differ from
        the address given to connect to it: a host name, ``localhost``); learnt from
        the answer to the registration."""
        self.cores = cores
        self.fetch_timeout = fetch_timeout
        self.register_timeout = register_timeout
        self.task_runner = task_runner
        """Runs tasks instead of the worker threads when set."""
        self.state = ExecutorState(
            executor_id="",
            cores=cores,
            barrier=barrier,
            max_task_attempts=max_task_attempts,
            inline_limit=inline_limit,
            prefetch=1 if cores == 1 else 0,
        )
        self.store = BlockStore()
        self.blobs: dict[str, bytes] = {}
        self.pipelines = PipelineCache(self.blobs)
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=cores, thread_name_prefix="drizzle-task"
        )
        self._fetches: dict[int, asyncio.Future[BlocksFetched]] = {}
        self._fetch_peers: dict[int, str] = {}
        self._last_submitted: asyncio.Future[None] | None = None
        """Set once the most recently started task is handed to a worker: tasks reach
        the workers in the order the local scheduler started them."""
        self._request_ids = itertools.count()
        self._registered: asyncio.Future[ExecutorRegistered] = node.loop.create_future()
        self.stopped: asyncio.Future[str] = node.loop.create_future()
        self._leaving = False
        self._heartbeat_seq = 0
        self._last_ack = 0.0
        self.counters = {
            "compute_s": 0.0,
            "deserialize_s": 0.0,
            "fetch_s": 0.0,
            "notify_s": 0.0,
            "queue_wait_s": 0.0,
            "bytes_fetched": 0,
        }

    @property
    def executor_id(self) -> str:
        return self.node.address

    # ------------------------------------------------------------------ lifecycle

    async def register(self) -> None:
        """Join the cluster; raises ``DrizzleError`` if refused or unanswered in time."""
        self.state.executor_id = self.executor_id
        self.node.post(
            self.driver,
            "group",
            RegisterExecutor(
                self.executor_id,
                self.node.address,
                self.cores,
                PROTOCOL_VERSION,
                __version__,
                sys.version.split()[0],
                cloudpickle.__version__,
            ),
            self.name,
        )
        try:
            accepted = await asyncio.wait_for(self._registered, self.register_timeout)
        except TimeoutError:
            raise DrizzleError(
                f"driver at {self.driver} did not answer registration within "
                f"{self.register_timeout:.0f}s"
            ) from None
        self._last_ack = self.node.now()
        self.node.spawn(
            self._heartbeat(accepted.heartbeat_interval, accepted.heartbeat_timeout),
            name="heartbeat",
        )

    async def _heartbeat(self, interval: float, silence_limit: float) -> None:
        while not self.stopped.done():
            self._heartbeat_seq += 1
            self.node.post(
                self.driver,
                "group",
                Heartbeat(self.executor_id, self._heartbeat_seq, self.snapshot()),
                self.name,
            )
            before = self.node.now()
            await asyncio.sleep(interval)
            now = self.node.now()
            if now - before > 2 * interval:
                continue  # this loop ran late: acks may be waiting unread; judge next round
            if now - self._last_ack > silence_limit:
                self._stop(f"driver silent for more than {silence_limit:.1f}s")

    def leave(self, reason: str = "asked to leave") -> None:
        """Ask to leave at the next group boundary; a second call stops at once."""
        if self._leaving:
            self._stop(f"{reason} (again): stopping now")
            return
        self._leaving = True
        self.node.post(self.driver, "group", ExecutorLeaving(self.executor_id, reason), self.name)

    def snapshot(self) -> ExecutorCounters:
        c, stats = self.counters, self.state.stats
        return ExecutorCounters(
            tasks=stats.tasks_succeeded,
            failed_tasks=stats.tasks_failed,
            compute_s=float(c["compute_s"]),
            deserialize_s=float(c["deserialize_s"]),
            fetch_s=float(c["fetch_s"]),
            notify_s=float(c["notify_s"]),
            queue_wait_s=float(c["queue_wait_s"]),
            bytes_fetched=int(c["bytes_fetched"]),
            notices_sent=stats.notices_sent,
            notices_received=stats.notices_received,
        )

    def _stop(self, reason: str) -> None:
        if not self.stopped.done():
            log.info("executor %s stopping: %s", self.executor_id, reason)
            self.stopped.set_result(reason)

    async def aclose(self) -> None:
        self._stop("closed")
        for fut in self._fetches.values():
            if not fut.done():
                fut.set_exception(DrizzleError("executor closed"))
        self.pool.shutdown(wait=False, cancel_futures=True)

    def on_peer_unreachable(self, peer: str, error: Exception) -> None:
        if peer in (self.driver, self._driver_peer):
            self._stop(f"driver unreachable: {error}")
            return
        self._fail_fetches(peer, f"unreachable: {error}")

    def _fail_fetches(self, peer: str, why: str) -> None:
        for request_id, holder in list(self._fetch_peers.items()):
            fut = self._fetches.get(request_id)
            if holder == peer and fut is not None and not fut.done():
                fut.set_exception(FetchFailed(f"peer {peer} {why}", peer))

    # ------------------------------------------------------------------ messages

    def receive(self, peer: str, sender: str, message: Any) -> None:
        if isinstance(message, _FROM_DRIVER_ONLY) and peer != self._driver_peer:
            if (
                isinstance(message, (ExecutorRegistered, RegistrationRefused))
                and not self._registered.done()
                and message.executor_id == self.executor_id
            ):
                self._driver_peer = peer  # the answer to our registration
            else:
                raise UnexpectedMessage(
                    f"{type(message).__name__} from {peer}: only the driver sends it"
                )
        if isinstance(message, (MapOutputReady, MapOutputsReady)):
            _check_claim(peer, message.executor_id)
            for event in noticed(message):
                notice = event.notice
                if isinstance(notice, MapOutputReady) and notice.inline:
                    self.store.put_inline(notice.shuffle_id, notice.map_id, notice.inline)
                self._apply(event)
        elif isinstance(message, FetchBlocks):
            self._serve(peer, sender, message)
        elif isinstance(message, BlocksFetched):
            if self._fetch_peers.get(message.request_id) != peer:
                raise UnexpectedMessage(f"blocks from {peer} answer no request made to it")
            fut = self._fetches.pop(message.request_id, None)
            if fut is not None and not fut.done():
                fut.set_result(message)
        elif isinstance(message, LaunchGroup):
            for blob in message.blobs:
                self.blobs[blob.digest] = blob.data
            for lost in message.lost_executors:
                self._fail_fetches(lost, "executor lost")
            self._apply(GroupLaunched(message))
        elif isinstance(message, BlockReady):
            _check_claim(peer, message.executor_id)
            self._apply(BlockNoticed(message))
        elif isinstance(message, HeartbeatAck):
            self._last_ack = self.node.now()
        elif isinstance(message, CancelGroup):
            self._apply(GroupCancelled(message.group_id))
        elif isinstance(message, ReplicateBlock):
            self.store.cached[(message.dataset_id, message.partition)] = serde.loads(message.data)
            self.node.post(
                self.driver,
                "tracker",
                BlockReady(
                    message.group_id, message.dataset_id, message.partition, self.executor_id
                ),
                self.name,
            )
        elif isinstance(message, ReleaseBlocks):
            self.store.drop_datasets(message.dataset_ids)
        elif isinstance(message, ExecutorRegistered):
            if not self._registered.done():
                self._registered.set_result(message)
        elif isinstance(message, RegistrationRefused):
            if not self._registered.done():
                self._registered.set_exception(DrizzleError(message.reason))
        elif isinstance(message, StopExecutor):
            self._stop(message.reason)
        elif isinstance(message, ErrorReply):
            log.warning("peer %s rejected a message: %s", peer, message.reason)
        else:
            raise UnexpectedMessage(f"executor does not handle {type(message).__name__}")

    def _apply(self, event: Any) -> None:
        for command in self.state.handle(event):
            self._run_command(command)

    def _run_command(self, command: Command) -> None:
        if isinstance(command, StartTask):
            self._start(command)
        elif isinstance(command, SendToPeer):
            self.node.post(command.peer, "executor", command.message, self.name)
        elif isinstance(command, SendToDriver):
            self.node.post(self.driver, command.target, command.message, self.name)
        elif isinstance(command, DropShuffles):
            self.store.drop_shuffles(command.shuffle_ids)
        elif isinstance(command, ReplicateCached):
            data = self.store.get(command.dataset_id, command.partition, -1)
            if data is not None:
                copy = ReplicateBlock(command.group_id, command.dataset_id, command.partition, data)
                for peer in command.peers:
                    self.node.post(peer, "executor", copy, self.name)

    def _serve(self, peer: str, sender: str, request: FetchBlocks) -> None:
        blocks: list[bytes] = []
        missing: list[int] = []
        for i, key in enumerate(request.keys):
            data = self.store.get(key.id, key.index, key.reduce)
            if data is None:
                missing.append(i)
                blocks.append(b"")
            else:
                blocks.append(data)
        self.node.post(
            peer,
            sender,
            BlocksFetched(request.request_id, tuple(blocks), tuple(missing)),
            self.name,
        )

    # ------------------------------------------------------------------ tasks

    def _start(self, command: StartTask) -> None:
        """Hand the task to a worker now if all its inputs are here and no earlier task
        is still on its way to one; otherwise fetch its inputs first, in a task."""
        began = self.node.clock()
        try:
            local = self._local_inputs(command)
        except FetchFailed as exc:
            # Not from inside the command loop that started it: later commands first.
            self.node.loop.call_soon(self._inputs_failed, command.spec, exc)
            return
        previous = self._last_submitted
        shuffle_inputs, wanted, _ = local
        if not wanted and (previous is None or previous.done()):
            self._last_submitted = None
            env = PreparedEnv(self.store, self.blobs, shuffle_inputs, {})
            done = self._submit(command.spec, env, began)
            done.add_done_callback(
                functools.partial(_call_soon, self.node.loop, self._task_done, command.spec)
            )
            return
        mine: asyncio.Future[None] = self.node.loop.create_future()
        self._last_submitted = mine
        self.node.spawn(
            self._run_task(command, local, began, previous, mine),
            name=f"task {command.spec.task_id}",
        )

    def _submit(
        self, spec: TaskSpec, env: PreparedEnv, began: float
    ) -> concurrent.futures.Future[TaskOutput] | asyncio.Future[TaskOutput]:
        submitted = self.node.clock()
        self.counters["fetch_s"] += submitted - began
        if self.task_runner is not None:
            return self.task_runner(self.pipelines, spec, env, submitted)
        return self.pool.submit(
            execute, self.pipelines, spec.payload, spec.partition, env, submitted
        )

    async def _run_task(
        self,
        command: StartTask,
        local: LocalInputs,
        began: float,
        previous: asyncio.Future[None] | None,
        mine: asyncio.Future[None],
    ) -> None:
        spec = command.spec
        try:
            try:
                shuffle_inputs, remote_cached = await self._fetch_inputs(local)
            except DrizzleError as exc:
                self._inputs_failed(spec, exc)
                return
            env = PreparedEnv(self.store, self.blobs, shuffle_inputs, remote_cached)
            if previous is not None and not previous.done():
                await previous
            running = asyncio.wrap_future(self._submit(spec, env, began))
        finally:
            if not mine.done():
                mine.set_result(None)
        await asyncio.wait([running])
        self._task_done(spec, running)

    def _inputs_failed(self, spec: TaskSpec, exc: DrizzleError) -> None:
        if isinstance(exc, FetchFailed) and exc.peer:
            self._apply(InputsLost(spec.task_id, exc.peer, str(exc)))
        else:
            self._apply(TaskErrored(spec.task_id, "FetchFailed", str(exc), "", retryable=False))

    def _task_done(
        self,
        spec: TaskSpec,
        done: asyncio.Future[TaskOutput] | concurrent.futures.Future[TaskOutput],
    ) -> None:
        if self.stopped.done():
            return  # closed or crashed meanwhile: nothing more runs here
        try:
            output, waited, loaded, computed = done.result()
        except (asyncio.CancelledError, concurrent.futures.CancelledError):
            return  # the executor is closing
        except Exception as exc:
            tb = "".join(traceback.format_exception(exc))
            self._apply(TaskErrored(spec.task_id, type(exc).__name__, str(exc), tb))
            return
        counters = self.counters
        counters["queue_wait_s"] += waited
        counters["deserialize_s"] += loaded
        counters["compute_s"] += computed
        finished = self.node.clock()
        if spec.shuffle_output is not None:
            assert isinstance(output, list)
            self.store.put_map_output(spec.shuffle_output.shuffle_id, spec.partition, output)
            self._apply(
                TaskSucceeded(
                    spec.task_id, sizes=tuple(len(b) for b in output), blocks=tuple(output)
                )
            )
        else:
            assert isinstance(output, bytes)
            self._apply(TaskSucceeded(spec.task_id, value=output))
        counters["notify_s"] += self.node.clock() - finished

    def _local_inputs(self, command: StartTask) -> LocalInputs:
        """The task's shuffle inputs found here (written here or carried by notices),
        and what must be fetched from which peer; raises ``FetchFailed`` if something
        that should be here is not."""
        me = self.executor_id
        shuffle_inputs: dict[tuple[int, int], list[bytes]] = {}
        wanted: dict[str, list[BlockKey]] = defaultdict(list)
        slots: dict[str, list[tuple[str, tuple[int, int], int]]] = defaultdict(list)
        for inp in command.spec.shuffle_inputs:
            blocks: list[bytes] = [b""] * inp.num_maps
            shuffle_inputs[(inp.shuffle_id, inp.partition)] = blocks
            for map_id, holder in command.map_locations[inp.shuffle_id].items():
                data = self.store.shuffle.get((inp.shuffle_id, map_id, inp.partition))
                if data is not None:  # written here, or carried by its notice
                    blocks[map_id] = data
                elif holder == me:
                    raise FetchFailed(
                        f"local block {inp.shuffle_id}/{map_id}/{inp.partition} missing"
                    )
                else:
                    wanted[holder].append(BlockKey(inp.shuffle_id, map_id, inp.partition))
                    slots[holder].append(("s", (inp.shuffle_id, inp.partition), map_id))
        for key, holder in command.block_locations.items():
            if holder != me or key not in self.store.cached:
                if holder == me:
                    raise FetchFailed(f"local cached partition {key} missing")
                wanted[holder].append(BlockKey(key[0], key[1], -1))
                slots[holder].append(("c", key, 0))
        return shuffle_inputs, wanted, slots

    async def _fetch_inputs(
        self, local: LocalInputs
    ) -> tuple[dict[tuple[int, int], list[bytes]], dict[tuple[int, int], list[Any]]]:
        """Fetch what ``_local_inputs`` found missing here, one request per peer."""
        shuffle_inputs, wanted, slots = local
        remote_cached: dict[tuple[int, int], list[Any]] = {}
        if wanted:
            replies = await asyncio.gather(
                *(self._fetch(peer, keys) for peer, keys in wanted.items())
            )
            for peer, reply in zip(wanted, replies, strict=True):
                self.counters["bytes_fetched"] += sum(len(b) for b in reply.blocks)
                if reply.missing:
                    raise FetchFailed(f"{len(reply.missing)} block(s) missing on {peer}", peer)
                for (kind, key, index), data in zip(slots[peer], reply.blocks, strict=True):
                    if kind == "s":
                        shuffle_inputs[key][index] = data
                    else:
                        remote_cached[key] = serde.loads(data)
        return shuffle_inputs, remote_cached

    async def _fetch(self, peer: str, keys: list[BlockKey]) -> BlocksFetched:
        request_id = next(self._request_ids)
        fut: asyncio.Future[BlocksFetched] = self.node.loop.create_future()
        self._fetches[request_id] = fut
        self._fetch_peers[request_id] = peer
        self.node.post(peer, "executor", FetchBlocks(request_id, tuple(keys)), self.name)
        try:
            return await asyncio.wait_for(fut, self.fetch_timeout)
        except TimeoutError:
            raise FetchFailed(
                f"fetch from {peer} timed out after {self.fetch_timeout}s", peer
            ) from None
        finally:
            self._fetches.pop(request_id, None)
            self._fetch_peers.pop(request_id, None)
