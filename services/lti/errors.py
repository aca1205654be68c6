"""LTI tool exceptions.

- ``LtiError``: base of everything the tool raises on purpose.
  - ``PlatformUnavailable``: a platform's token or NRPS endpoint failed or answered nonsense;
    the roster is then unknown (the dashboard says so), nothing else depends on it.

A launch that breaks a rule is ``domain.lti.LaunchRefused`` (a code and a sentence for the
person launching); the tool answers it with an error page and writes nothing.
"""

from __future__ import annotations


class LtiError(Exception):
    pass


class PlatformUnavailable(LtiError):
    pass
