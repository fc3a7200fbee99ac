"""The signed links mail carries for a reader: unsubscribe, preferences, view in browser, confirm,
come back.

Each link's token names one purpose and one subscriber at one token version
(:mod:`digest.tokens`): bumping the version revokes every link the reader holds but the
unsubscribe ones (:func:`digest.subscriptions.link_holds`).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from digest.config import Settings
from digest.tokens import Purpose, make_token, make_tokens


class LinkFields(Protocol):
    """What a link reads of a subscriber: a ``Subscriber`` row, or a plain record."""

    @property
    def id(self) -> int | None: ...
    @property
    def token_version(self) -> int: ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class Links:
    """The signed links a digest carries for its reader."""

    unsubscribe: str
    preferences: str
    view: str | None


def links_for(settings: Settings, subscriber: LinkFields, edition_id: str | None) -> Links:
    """Signed unsubscribe / preferences / view-in-browser URLs for one reader."""
    assert subscriber.id is not None
    base = settings.site.base_url.rstrip("/")
    purposes: tuple[Purpose, ...] = ("unsubscribe", "preferences")
    if edition_id:
        purposes += ("view",)
    tokens = make_tokens(
        settings.secret_key,
        purposes,
        subscriber_id=subscriber.id or 0,
        version=subscriber.token_version,
    )
    return Links(
        unsubscribe=f"{base}/unsubscribe/{tokens[0]}",
        preferences=f"{base}/preferences/{tokens[1]}",
        view=f"{base}/digest/{tokens[2]}/{edition_id}" if edition_id else None,
    )


def confirm_url(settings: Settings, subscriber: LinkFields) -> str:
    """The signed link that confirms this subscriber's address."""
    token = make_token(
        settings.secret_key,
        "confirm",
        subscriber_id=subscriber.id or 0,
        version=subscriber.token_version,
    )
    return f"{settings.site.base_url.rstrip('/')}/confirm/{token}"


def resubscribe_url(settings: Settings, subscriber: LinkFields) -> str:
    """The signed link that brings back a reader a mail unsubscribed (forged or not)."""
    token = make_token(
        settings.secret_key,
        "resubscribe",
        subscriber_id=subscriber.id or 0,
        version=subscriber.token_version,
    )
    return f"{settings.site.base_url.rstrip('/')}/resubscribe/{token}"
