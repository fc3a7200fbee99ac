"""The exceptions digest raises, one tree.

DigestError                 every error digest reports to its user
├── ConfigError             a bad configuration file, key or value
├── SchemaError             the database's schema is not the code's (`digest db upgrade`)
├── SourceError             a source could not be fetched or parsed
├── SubscriberError         a bad address, a duplicate, an unknown subscriber
├── SendError               an SMTP failure; ``permanent`` tells a 5xx from a retryable one
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
    """A bad address, a duplicate or an unknown subscriber."""


class SendError(DigestError):
    """An SMTP failure; ``permanent`` is true for a 5xx answer that retrying will not fix."""

    def __init__(self, message: str, *, permanent: bool = False, code: int | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.code = code


class TemplateError(DigestError):
    """A digest could not be rendered."""
