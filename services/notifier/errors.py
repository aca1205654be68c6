"""Notifier exceptions.

- ``NotifierError``: base of everything the notifier raises on purpose.
  - ``StartupFailed``: presence, heartbeats or the log could not be replayed in time, or the
    event log's partitions are not the settings' (``PartitionsMismatch``).
  - ``WriteFailed``: Kafka would not even queue a record (producer buffer full for
    ``write_timeout_s``). ``Writer.write`` retries it; only the best-effort probe sees it.
"""

from __future__ import annotations


class NotifierError(Exception):
    pass


class StartupFailed(NotifierError):
    pass


class WriteFailed(NotifierError):
    pass
