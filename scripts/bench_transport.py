"""Round-trip latency of a small message between two transports in one process.

One endpoint sends ``Heartbeat``, the other answers ``HeartbeatAck``; the time from
send to receipt of the answer is one round trip. Prints median and p95 in microseconds.

    python scripts/bench_transport.py --backend tcp --n 2000 [--uvloop]

``tcp-curve`` is ``tcp`` with CURVE authentication and encryption (keys from a secret).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

from drizzle.transport.base import Transport, TransportOptions
from drizzle.transport.inproc import InProcNetwork, InProcTransport
from drizzle.transport.security import keys_from_secret
from drizzle.transport.zmq import ZmqTransport
from drizzle.wire.codec import Envelope
from drizzle.wire.messages import Heartbeat, HeartbeatAck

BACKENDS = ("inproc", "tcp", "tcp-curve", "ipc")


def make_pair(backend: str, tmp: str) -> tuple[Transport, Transport]:
    opts = TransportOptions()
    if backend == "inproc":
        network = InProcNetwork()
        return (
            InProcTransport("inproc://a", opts, network=network),
            InProcTransport("inproc://b", opts, network=network),
        )
    if backend == "tcp":
        return ZmqTransport("tcp://127.0.0.1:0", opts), ZmqTransport("tcp://127.0.0.1:0", opts)
    if backend == "tcp-curve":
        opts = TransportOptions(curve=keys_from_secret("bench-transport-secret-0123456789"))
        return ZmqTransport("tcp://127.0.0.1:0", opts), ZmqTransport("tcp://127.0.0.1:0", opts)
    return ZmqTransport(f"ipc://{tmp}/a.sock", opts), ZmqTransport(f"ipc://{tmp}/b.sock", opts)


async def round_trips(backend: str, n: int, warmup: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        a, b = make_pair(backend, tmp)
        await a.start()
        await b.start()

        async def echo() -> None:
            while True:
                sender, env = await b.recv()
                reply = Envelope(env.sender, env.target, HeartbeatAck(env.message.seq))
                await b.send(sender, reply)

        echoer = asyncio.create_task(echo())
        samples: list[float] = []
        try:
            for seq in range(warmup + n):
                start = time.perf_counter_ns()
                await a.send(b.address, Envelope("driver", "executor", Heartbeat("e1", seq)))
                _, got = await asyncio.wait_for(a.recv(), 10)
                elapsed = time.perf_counter_ns() - start
                assert got.message.seq == seq
                if seq >= warmup:
                    samples.append(elapsed / 1000)
        finally:
            echoer.cancel()
            await asyncio.gather(echoer, return_exceptions=True)
            await a.close()
            await b.close()
        return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=(*BACKENDS, "all"), default="all")
    parser.add_argument("--n", type=int, default=2000, help="measured round trips")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured round trips")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    loop_factory = None
    if args.uvloop:
        import uvloop

        loop_factory = uvloop.new_event_loop
    backends = BACKENDS if args.backend == "all" else (args.backend,)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        for backend in backends:
            samples = runner.run(round_trips(backend, args.n, args.warmup))
            p95 = statistics.quantiles(samples, n=100)[94]
            print(
                f"{backend:9s} loop={'uvloop' if args.uvloop else 'asyncio':7s} "
                f"n={len(samples)} median={statistics.median(samples):8.1f} us "
                f"p95={p95:8.1f} us"
            )


if __name__ == "__main__":
    main()
