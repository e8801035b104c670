"""Transports: one interface, an in-process backend and a ZeroMQ backend.

``open_transport(address)`` picks the backend by the address scheme. Actors never
import a backend directly.
"""

from __future__ import annotations

from drizzle.transport.base import Transport, open_transport

__all__ = ["Transport", "open_transport"]
