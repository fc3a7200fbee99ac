"""The exceptions digest raises, one tree.

DigestError                 every error digest reports to its user
├── ConfigError             a bad configuration file, key or value
├── SchemaError             the database's schema is not the code's (`digest db upgrade`)
├── SourceError             a source could not be fetched or parsed
├── SubscriberError         a bad address or choice (``field`` names it), a duplicate, an
│                           unknown subscriber, a revoked link
├── TooManyRequests         a subscribe request over an hourly cap; ``retry_after`` seconds
├── SendError               an SMTP failure; ``permanent`` tells a 5xx from a retryable one,
│                           ``relay`` a relay that cannot be used at all from one message's fault
└── TemplateError           a digest could not be rendered
"""

from __future__ import annotations


class DigestError(Exception):
    """Every error digest reports to its user."""


class ConfigError(DigestError):
    """A bad configuration file, key or value."""


class SchemaError(DigestError):
    """The database's schema is not the one this code works with, or cannot be upgraded."""


class SourceError(DigestError):
    """A source could not be fetched or parsed."""


class SubscriberError(DigestError):
    """A bad address or choice, a duplicate, an unknown subscriber or a revoked link.

    ``field`` names the choice that was refused ("keywords", "exclude", "max_papers", …, the
    names of :class:`digest.subscriptions.Interests` and of the web form's fields), so that a
    form can show the message beside it; None when the error is about no one field.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class TooManyRequests(DigestError):
    """A subscribe request over an hourly cap: its origin's (``scope`` "origin": a web client's
    address, a mail's sender domain) or the one on every request (``scope`` "total").
    ``retry_after`` is the number of seconds until the cap has room again."""

    def __init__(self, message: str, *, scope: str, retry_after: int) -> None:
        super().__init__(message)
        self.scope = scope
        self.retry_after = retry_after


class SendError(DigestError):
    """An SMTP failure; ``permanent`` is true for a 5xx answer that retrying will not fix.

    ``relay`` is true when the relay could not be used at all (unreachable, no TLS, a refused
    login): no message was handed over, the fault is the configuration's or the relay's, and
    every other message would meet it too.
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        code: int | None = None,
        relay: bool = False,
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.code = code
        self.relay = relay


class TemplateError(DigestError):
    """A digest could not be rendered."""
