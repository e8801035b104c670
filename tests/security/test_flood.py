"""Limits and fairness: a peer flooding the driver and an executor with valid but
useless messages, as fast as it can, does not starve a job running beside it.

The cluster is a real ``local-cluster[2]``; the flooder (``flooder.py``) is a separate
process holding the cluster's keys. The job runs once before the flood (its results
and time, for the record) and once during it, with a deadline; the driver's count of
refused messages shows that the flood was being received all along.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from drizzle import Context
from drizzle.transport.security import SECRET_ENV, new_secret

from .support import WAIT, flatten, legit_batches, legit_expected

pytestmark = pytest.mark.cluster

FLOODER = Path(__file__).with_name("flooder.py")
BATCHES = 20
DEADLINE = 60.0
"""The job under flood must finish within this (seconds); unflooded it takes well
under one. Generous on purpose: timing goals live in benchmarks, not tests."""


async def test_a_flooding_peer_does_not_starve_a_job() -> None:
    secret = new_secret()
    expected = legit_expected(BATCHES)
    async with asyncio.timeout(DEADLINE + 60), Context("local-cluster[2]", secret=secret) as ctx:
        driver = ctx.cluster.driver_node
        assert driver is not None

        async def job() -> float:
            began = time.perf_counter()
            results = await ctx.run_jobs(legit_batches(ctx, BATCHES), group_size=1)
            assert flatten(results) == expected
            return time.perf_counter() - began

        quiet = await asyncio.wait_for(job(), WAIT)

        flooder = await asyncio.create_subprocess_exec(
            sys.executable,
            str(FLOODER),
            driver.address,
            ctx.executors()[0],
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=dict(os.environ, **{SECRET_ENV: secret}),
        )
        assert flooder.stdin is not None
        assert flooder.stdout is not None
        try:
            assert await asyncio.wait_for(flooder.stdout.readline(), WAIT) == b"flooding\n"
            before = driver.rejected_messages
            flooded = await asyncio.wait_for(job(), DEADLINE)
            during = driver.rejected_messages - before
        finally:
            flooder.stdin.close()
            try:
                out, _ = await asyncio.wait_for(flooder.communicate(), WAIT)
            finally:
                if flooder.returncode is None:
                    flooder.kill()
                    await flooder.wait()
        sent = int(out.decode().split()[-1])
        # The flood was on while the job ran, and much larger than the job.
        assert during > 100 * BATCHES
        assert sent > during
        print(
            f"\njob of {BATCHES} micro-batches: {quiet:.3f} s quiet, {flooded:.3f} s under a "
            f"flood ({during} useless messages refused by the driver meanwhile; "
            f"{sent} sent in all)"
        )
        # And the cluster is still whole.
        assert len(ctx.executors()) == 2
        await asyncio.wait_for(job(), WAIT)
