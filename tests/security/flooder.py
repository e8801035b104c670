"""A peer that floods nodes with valid but useless messages, as fast as it can.

    DRIZZLE_SECRET=... python tests/security/flooder.py DRIVER_ADDRESS EXECUTOR_ADDRESS

It holds the cluster's keys (an authenticated member gone rogue, or a buggy one). To
the driver it sends heartbeats of an executor that never registered (each is
answered: it is told to stop) and ``ErrorReply`` to the group scheduler (refused);
to the executor, heartbeats (refused). It binds its own CURVE ROUTER and uses that as
its address, so the driver's answers have somewhere to go, and drains them. It
prints ``flooding`` once the flood is on, stops when its stdin closes, and prints how
many messages it sent.
"""

from __future__ import annotations

import os
import sys
import threading

import zmq

from drizzle.transport.security import SECRET_ENV, keys_from_secret
from drizzle.wire.codec import Envelope, encode
from drizzle.wire.messages import ErrorReply, Heartbeat

BURST = 1000


def main(driver: str, executor: str) -> int:
    keys = keys_from_secret(os.environ[SECRET_ENV])
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    inbox = ctx.socket(zmq.ROUTER)
    inbox.setsockopt(zmq.LINGER, 0)
    inbox.setsockopt(zmq.CURVE_SERVER, 1)
    inbox.setsockopt(zmq.CURVE_SECRETKEY, keys.server_secret)
    inbox.bind("tcp://127.0.0.1:0")
    me = inbox.getsockopt(zmq.LAST_ENDPOINT)
    assert isinstance(me, bytes)
    address = me.decode()

    def dealer(peer: str) -> zmq.Socket[bytes]:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTING_ID, me)
        sock.setsockopt(zmq.CURVE_SERVERKEY, keys.server_public)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.client_public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, keys.client_secret)
        sock.connect(peer)
        return sock

    to_driver, to_executor = dealer(driver), dealer(executor)
    useless = [
        (to_driver, encode(Envelope("group", "executor", Heartbeat(address, 1)))),
        (to_driver, encode(Envelope("group", "executor", ErrorReply("nothing to see")))),
        (to_executor, encode(Envelope("executor", "executor", Heartbeat(address, 1)))),
    ]
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    sent = 0
    announced = False
    while not stop.is_set():
        for _ in range(BURST):
            for sock, frame in useless:
                try:
                    sock.send(frame, zmq.NOBLOCK)
                    sent += 1
                except zmq.Again:
                    pass  # the node pushes back: keep trying, that is the flood
        while inbox.poll(0):
            inbox.recv_multipart()
        if not announced:
            print("flooding", flush=True)
            announced = True
    print(f"sent {sent}", flush=True)
    for sock in (to_driver, to_executor, inbox):
        sock.close()
    ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
