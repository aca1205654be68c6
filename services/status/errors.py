"""Errors of the status service.

- ``StatusError``: base of everything below.
  - ``ViewUnavailable``: a view store refused or timed out a write; the service retries it
    with backoff, commits nothing meanwhile, and reports not ready.
    - ``SnapshotUnavailable``: the Redis live snapshot (states plus watermarks).
    - ``FirstAttemptStoreUnavailable``: the DynamoDB first-attempt table.
  - ``StartupFailed``: Kafka, Redis or DynamoDB could not be reached at start.

Undecodable log records are not errors of the service: they are counted and skipped.
"""

from __future__ import annotations


class StatusError(Exception):
    pass


class ViewUnavailable(StatusError):
    pass


class SnapshotUnavailable(ViewUnavailable):
    pass


class FirstAttemptStoreUnavailable(ViewUnavailable):
    pass


class StartupFailed(StatusError):
    pass
