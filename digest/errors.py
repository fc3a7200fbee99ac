"""The exceptions digest raises, one tree.

DigestError                 every error digest reports to its user
├── ConfigError             a bad configuration file, key or value
├── SourceError             a source could not be fetched or parsed
├── SubscriberError         a bad address, a duplicate, an unknown subscriber
├── SendError               an SMTP failure; ``permanent`` tells a 5xx from a retryable one,
│                           ``relay`` a relay that cannot be used at all from one message's fault
└── TemplateError           a digest could not be rendered
"""

from __future__ import annotations


class DigestError(Exception):
    """Every error digest reports to its user."""


class ConfigError(DigestError):
    """A bad configuration file, key or value."""


class SourceError(DigestError):
    """A source could not be fetched or parsed."""


class SubscriberError(DigestError):
    """A bad address, a duplicate or an unknown subscriber."""


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
