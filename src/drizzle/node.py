"""``python -m drizzle.node``: start a Drizzle node process.

Roles:
  executor   join a driver and run tasks until told to stop, the driver goes
             silent for longer than the heartbeat timeout, or the parent process
             (``--parent-pid``) exits. SIGTERM makes it leave gracefully at the next
             group boundary (no recomputation); a second SIGTERM stops it at once.

The driver itself runs inside the user's program: ``Context(master="tcp://host:port")``.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Sequence

from drizzle.actors.executor import ExecutorActor
from drizzle.actors.node import Node
from drizzle.errors import DrizzleError
from drizzle.runtime import run
from drizzle.transport.base import TransportOptions, open_transport

log = logging.getLogger("drizzle.node")
_SWITCH_INTERVAL_S = 0.0002


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m drizzle.node",
        description="Start a Drizzle node.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    roles = parser.add_subparsers(dest="role", required=True, metavar="ROLE")
    ex = roles.add_parser(
        "executor",
        help="run tasks for a driver",
        description="Join the driver at --driver and run tasks for it.",
    )
    ex.add_argument(
        "--driver",
        required=True,
        metavar="ADDR",
        help="the driver's address, e.g. tcp://10.0.0.5:7077",
    )
    ex.add_argument(
        "--cores",
        type=int,
        default=1,
        metavar="C",
        help="tasks run at once (worker threads); default 1",
    )
    ex.add_argument(
        "--bind",
        metavar="ADDR",
        help="address to listen on for peers, e.g. tcp://10.0.0.6:0 (port 0: any); "
        "default: tcp://127.0.0.1:0 for a loopback driver",
    )
    ex.add_argument(
        "--parent-pid",
        type=int,
        metavar="PID",
        help="exit when this process exits (used by local-cluster)",
    )
    ex.add_argument(
        "--max-task-attempts",
        type=int,
        default=4,
        metavar="N",
        help="attempts of a task whose user code raises; default 4",
    )
    ex.add_argument(
        "--inline-limit",
        type=int,
        default=64 * 1024,
        metavar="BYTES",
        help="shuffle blocks up to this size travel inside their map-output notice "
        "instead of being fetched; 0 always fetches; default 65536",
    )
    ex.add_argument(
        "--no-barrier",
        action="store_true",
        help="let micro-batch b+1 start before micro-batch b's tasks here finish",
    )
    ex.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback address without authentication",
    )
    ex.add_argument("--log-level", default="WARNING", help="logging level; default WARNING")
    return parser


def _is_loopback(address: str) -> bool:
    host = address.partition("://")[2].rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def run_executor(args: argparse.Namespace) -> int:
    bind = args.bind
    if bind is None:
        if not _is_loopback(args.driver):
            print("--bind is required when the driver is not on loopback", file=sys.stderr)
            return 2
        bind = "tcp://127.0.0.1:0"
    if args.cores <= 0:
        print("--cores must be positive", file=sys.stderr)
        return 2
    transport = open_transport(bind, TransportOptions(insecure=args.insecure))
    node = Node(transport)
    actor = ExecutorActor(
        node,
        args.driver,
        args.cores,
        barrier=not args.no_barrier,
        max_task_attempts=args.max_task_attempts,
        inline_limit=args.inline_limit,
    )
    node.add(actor)
    await node.start()
    try:
        await actor.register()
        if args.parent_pid:
            node.spawn(_watch_parent(args.parent_pid, actor), name="parent watch")
        # SIGTERM: leave gracefully at the next group boundary; a second one: at once.
        node.loop.add_signal_handler(signal.SIGTERM, actor.leave, "SIGTERM")
        reason = await actor.stopped
        log.info("executor stopped: %s", reason)
        return 0
    except DrizzleError as exc:
        print(f"drizzle executor: {exc}", file=sys.stderr)
        return 1
    finally:
        await node.close()


async def _watch_parent(pid: int, actor: ExecutorActor) -> None:
    while True:
        if os.getppid() != pid:
            actor._stop(f"parent process {pid} exited")
            return
        await asyncio.sleep(0.5)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    if args.role == "executor":
        # Tasks run on worker threads: hand the GIL over to them quickly when the event
        # loop is busy (the default of 5 ms would add up to 5 ms to a short task).
        sys.setswitchinterval(_SWITCH_INTERVAL_S)
        return run(run_executor(args))
    return 2  # pragma: no cover - argparse rejects unknown roles


if __name__ == "__main__":
    sys.exit(main())
