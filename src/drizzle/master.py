"""Parsing of master URLs: ``local[N]``, ``local-cluster[N,cores]``, ``tcp://host:port``,
``sim[N,cores]``."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Master:
    kind: str
    """``local``, ``local-cluster``, ``remote`` or ``sim``."""
    executors: int
    cores: int
    address: str = ""
    """Driver listen address, for ``remote``."""


_LOCAL = re.compile(r"local(?:\[(\*|\d+)\])?")
_CLUSTER = re.compile(r"local-cluster\[(\d+)(?:\s*,\s*(\d+))?(?:\s*,\s*\d+)?\]")
_SIM = re.compile(r"sim\[(\d+)(?:\s*,\s*(\d+))?\]")
_TCP = re.compile(r"tcp://([^:/\s]+|\[[0-9a-fA-F:]+\]):(\d+)")


def parse_master(master: str, executors: int | None = None) -> Master:
    """Parse ``master``; raises ``ValueError`` naming the accepted forms."""
    if not isinstance(master, str):
        raise TypeError(f"master must be a string, got {type(master).__name__}")
    text = master.strip()
    if m := _LOCAL.fullmatch(text):
        count = m.group(1)
        n = 1 if count is None else (os.cpu_count() or 1) if count == "*" else int(count)
        if n <= 0:
            raise ValueError(f"master {master!r}: executor count must be positive")
        return Master("local", n, 1)
    if m := _CLUSTER.fullmatch(text):
        n, cores = int(m.group(1)), int(m.group(2) or 1)
        if n <= 0 or cores <= 0:
            raise ValueError(f"master {master!r}: executors and cores must be positive")
        return Master("local-cluster", n, cores)
    if m := _SIM.fullmatch(text):
        n, cores = int(m.group(1)), int(m.group(2) or 1)
        if n <= 0 or cores <= 0:
            raise ValueError(f"master {master!r}: executors and cores must be positive")
        return Master("sim", n, cores)
    if m := _TCP.fullmatch(text):
        port = int(m.group(2))
        if not 0 <= port <= 65535:
            raise ValueError(f"master {master!r}: port out of range")
        return Master("remote", executors if executors is not None else 1, 1, text)
    raise ValueError(
        f"bad master URL {master!r}; expected local, local[N], local[*], "
        "local-cluster[N] or local-cluster[N,cores], tcp://host:port, or sim[N,cores]"
    )
