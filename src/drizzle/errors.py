"""Exceptions raised to users and between actors. Depends on nothing."""

from __future__ import annotations


class DrizzleError(Exception):
    """Base class of every error Drizzle raises on purpose."""


class ProtocolError(DrizzleError):
    """A frame or message could not be decoded or failed validation."""


class PeerUnreachable(DrizzleError):
    """A message could not be delivered to a peer (unknown, closed or dead)."""


class TransportClosed(DrizzleError):
    """The transport endpoint was closed while an operation was pending."""


class ActorStopped(DrizzleError):
    """The actor a request was addressed to has stopped."""


class ClusterError(DrizzleError):
    """The cluster could not be started or lost the resources a job needs."""


class JobFailed(DrizzleError):
    """A job could not be completed.

    Attributes name where the failure happened so that it can be traced back: the
    micro-batch (its index in the ``run_jobs`` call), the stage, the partition, the
    executor, the attempts made, and the remote traceback text.
    """

    def __init__(
        self,
        message: str,
        *,
        batch: int | None = None,
        stage: int | None = None,
        partition: int | None = None,
        executor: str | None = None,
        attempts: int | None = None,
        remote_traceback: str = "",
        cause_type: str = "",
    ) -> None:
        super().__init__(message)
        self.batch = batch
        self.stage = stage
        self.partition = partition
        self.executor = executor
        self.attempts = attempts
        self.remote_traceback = remote_traceback
        self.cause_type = cause_type

    def __str__(self) -> str:
        text = super().__str__()
        if self.remote_traceback:
            text += "\n\nRemote traceback:\n" + self.remote_traceback.rstrip()
        return text
