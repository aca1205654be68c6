"""Gateway exceptions.

- ``GatewayError``: base of everything the gateway raises on purpose.
  - ``WatchFailed``: the snapshot handshake for an exam did not complete in time
    (router or status service unavailable); proctors get ``snapshot_timeout``.
  - ``Unavailable``: Kafka or Redis did not answer in time; clients get ``unavailable``
    and keep their unacknowledged events.

At start the gateway refuses settings whose ``events_partitions`` the event log does not
have, and a ``slot`` the deliveries topic has no partition for
(``adapters.kafka_topics.PartitionsMismatch``, raised out of the app's start-up): its exam
views would wait for partitions that are not there or miss some that are, and its inbox
would not exist.
"""

from __future__ import annotations


class GatewayError(Exception):
    pass


class WatchFailed(GatewayError):
    pass


class Unavailable(GatewayError):
    pass
