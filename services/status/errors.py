"""Errors of the status service.

- ``StatusError``: base of everything below.
  - ``ViewUnavailable``: a view store refused or timed out a write; the service retries it
    with backoff, commits nothing meanwhile, and reports not ready.
    - ``SnapshotUnavailable``: the Redis live snapshot (states plus watermarks).
    - ``FirstAttemptStoreUnavailable``: the DynamoDB first-attempt table.
    - ``GaveUpAtStop``: a store was still failing when the service was asked to stop; what
      it did not take stays uncommitted in the log and is applied again at the next start,
      instead of the retries holding the shutdown past any deadline.
  - ``StartupFailed``: Kafka, Redis or DynamoDB could not be reached at start, or the event
    log's partitions are not the settings' (``PartitionsMismatch``).

A record or item that can never be applied (it does not decode; DynamoDB rejects the item,
e.g. a number out of its range) is not an error of the service: it is put aside on
``<log>.dead-letters`` (``status_dead_letters_total``) and the partition goes on.
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


class GaveUpAtStop(ViewUnavailable):
    pass
