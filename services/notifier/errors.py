"""Notifier exceptions.

- ``NotifierError``: base of everything the notifier raises on purpose.
  - ``StartupFailed``: presence, heartbeats or the log could not be replayed in time.
  - ``WriteFailed``: Kafka did not take a batch of verdicts or alerts in time. The process
    stops; its restart rebuilds from presence and redoes the work with the same event ids.
"""

from __future__ import annotations


class NotifierError(Exception):
    pass


class StartupFailed(NotifierError):
    pass


class WriteFailed(NotifierError):
    pass
