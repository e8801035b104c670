"""``python -m drizzle.node``: start a Drizzle node process.

Roles:
  executor   join a driver and run tasks until told to stop, the driver goes
             silent for longer than the heartbeat timeout, or the parent process
             (``--parent-pid``) exits. SIGTERM makes it leave gracefully at the next
             group boundary (no recomputation); a second SIGTERM stops it at once.
  keygen     make key material: a cluster secret file (--secret FILE) or a CURVE key
             directory (--out DIR; run again with --name to add a client key).

The driver itself runs inside the user's program: ``Context(master="tcp://host:port")``.

Security: with a cluster secret (DRIZZLE_SECRET in the environment, or --secret-file)
or a key directory (--keys), every connection is authenticated and encrypted with
CURVE; without, a node listens on loopback only unless --insecure. See
docs/security.md.
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
from drizzle.transport.security import (
    DEFAULT_KEY_NAME,
    SECRET_ENV,
    CurveKeys,
    generate_key_dir,
    resolve_keys,
    write_secret_file,
)
from drizzle.wire.codec import DEFAULT_MAX_FRAME

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
        "--secret-file",
        metavar="FILE",
        help=f"file (mode 0600) holding the cluster secret the CURVE keys derive from; "
        f"default: the {SECRET_ENV} environment variable, if set",
    )
    ex.add_argument(
        "--keys",
        metavar="DIR",
        help="CURVE key directory made by 'python -m drizzle.node keygen --out DIR'",
    )
    ex.add_argument(
        "--key-name",
        default=DEFAULT_KEY_NAME,
        metavar="NAME",
        help=f"client key of --keys to use; default {DEFAULT_KEY_NAME!r}",
    )
    ex.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback address without authentication (trusted networks only)",
    )
    ex.add_argument(
        "--max-frame",
        type=int,
        default=DEFAULT_MAX_FRAME,
        metavar="BYTES",
        help=f"largest message accepted or sent; default {DEFAULT_MAX_FRAME}",
    )
    ex.add_argument("--log-level", default="WARNING", help="logging level; default WARNING")

    kg = roles.add_parser(
        "keygen",
        help="make a cluster secret or CURVE key files",
        description="Make key material for an authenticated, encrypted cluster. "
        "--secret FILE writes a fresh random cluster secret (mode 0600): give every node "
        "a copy (--secret-file FILE, Context(secret_file=FILE)) or its content "
        f"({SECRET_ENV}). --out DIR writes a CURVE key directory: server.key_secret "
        "(every node needs it), NAME.key_secret (a client key) and allowed/NAME.key (the "
        "allow-list); run it again with another --name to add a client key, and delete "
        "allowed/NAME.key to revoke one. Nodes use it with --keys DIR --key-name NAME "
        "(Context(keys=DIR, key_name=NAME)). See docs/security.md.",
    )
    what = kg.add_mutually_exclusive_group(required=True)
    what.add_argument("--secret", metavar="FILE", help="write a new cluster secret to FILE")
    what.add_argument("--out", metavar="DIR", help="create or extend a CURVE key directory")
    kg.add_argument(
        "--name",
        default=DEFAULT_KEY_NAME,
        metavar="NAME",
        help=f"with --out: name of the client key to add; default {DEFAULT_KEY_NAME!r}",
    )
    kg.add_argument("--log-level", default="WARNING", help=argparse.SUPPRESS)
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
    try:
        curve = _executor_keys(args)
        transport = open_transport(
            bind, TransportOptions(insecure=args.insecure, max_frame=args.max_frame, curve=curve)
        )
    except DrizzleError as exc:
        print(f"drizzle executor: {exc}", file=sys.stderr)
        return 2
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
    try:
        await node.start()
    except DrizzleError as exc:
        print(f"drizzle executor: {exc}", file=sys.stderr)
        await node.close()
        return 2
    try:
        await _register(actor)
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


def _executor_keys(args: argparse.Namespace) -> CurveKeys | None:
    """The executor's CURVE keys; the secret is taken out of the environment, so that
    processes the executor's tasks start do not inherit it."""
    env_secret = os.environ.pop(SECRET_ENV, None)
    env = {SECRET_ENV: env_secret} if env_secret else {}
    return resolve_keys(
        secret_file=args.secret_file, keys=args.keys, key_name=args.key_name, env=env
    )


async def _register(actor: ExecutorActor) -> None:
    """``actor.register()``, but fail at once, with the reason, if the driver cannot be
    reached (for example, it refused this node's keys) instead of at the deadline."""
    registering = asyncio.ensure_future(actor.register())
    await asyncio.wait((registering, actor.stopped), return_when=asyncio.FIRST_COMPLETED)
    if not registering.done():
        registering.cancel()
        await asyncio.gather(registering, return_exceptions=True)
        raise DrizzleError(f"could not register with the driver: {actor.stopped.result()}")
    registering.result()


def run_keygen(args: argparse.Namespace) -> int:
    try:
        if args.secret:
            path = write_secret_file(args.secret)
            print(f"wrote a new cluster secret to {path} (mode 0600)")
            print(f"give every node a copy: --secret-file {path}, or {SECRET_ENV}=$(cat {path})")
            return 0
        written = generate_key_dir(args.out, args.name)
    except (DrizzleError, OSError) as exc:
        print(f"drizzle keygen: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    print(
        f"copy {args.out} (server.key_secret, allowed/ and the client's NAME.key_secret) to "
        f"every node and start it with --keys {args.out} --key-name NAME"
    )
    return 0


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
    if args.role == "keygen":
        return run_keygen(args)
    return 2  # pragma: no cover - argparse rejects unknown roles


if __name__ == "__main__":
    sys.exit(main())
