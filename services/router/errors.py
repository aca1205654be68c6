"""Errors of the router service.

- ``RouterError``: base of everything below.
  - ``StartupFailed``: Kafka could not be reached, or the presence topic could not be read
    to its end within ``presence_catchup_timeout_s`` (the router never routes with a
    partial table), or the event log's partitions are not the settings'
    (``PartitionsMismatch``).
  - ``DeliveryFailed``: a batch's delivery records did not land within
    ``delivery_timeout_s``; the worker stops before committing the batch so a restart
    routes it again.
  - ``TopicMissing``: the presence topic disappeared from the cluster's metadata for more
    than 10 s (deleted); the worker stops instead of retrying forever.

Undecodable presence records, and those naming a gateway slot the deliveries topic has no
partition for, are not errors of the service: they are counted
(``router_bad_presence_records_total``), logged and skipped. Log records routing cannot
read are put aside on ``<log>.dead-letters`` (``router_dead_letters_total``) and the partition
goes on; commit failures are retried.
"""

from __future__ import annotations


class RouterError(Exception):
    pass


class StartupFailed(RouterError):
    pass


class DeliveryFailed(RouterError):
    pass


class TopicMissing(RouterError):
    pass
