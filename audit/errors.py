"""Errors of the audit tool.

- ``AuditError``: base of everything below; the CLI prints it and exits with code 2.
  - ``BadArgument``: a time, zone or option the tool cannot use.
  - ``LogUnavailable``: Kafka could not be reached or the log topic does not exist.
  - ``StoreUnavailable``: DynamoDB or Redis could not be read or written.
  - ``FileProblem``: a file named on the command line could not be read or written.
"""

from __future__ import annotations


class AuditError(Exception):
    pass


class BadArgument(AuditError):
    pass


class LogUnavailable(AuditError):
    pass


class StoreUnavailable(AuditError):
    pass


class FileProblem(AuditError):
    pass
