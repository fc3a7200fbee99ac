"""Signed links: a token names one purpose and one subscriber, and dies with its token version
(except an unsubscribe link: :func:`digest.subscriptions.link_holds`)."""

from __future__ import annotations

import functools
import hmac
import time
from collections.abc import Sequence
from typing import Literal

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode, int_to_bytes

from digest.errors import DigestError

Purpose = Literal["confirm", "unsubscribe", "preferences", "view", "resubscribe"]

# How long each kind of link stays good, in seconds (None: until the token version changes).
MAX_AGE: dict[str, int | None] = {
    "confirm": 7 * 24 * 3600,
    "unsubscribe": None,
    "preferences": None,
    "view": None,
    # the come-back link in the notice a mail unsubscribe earns
    "resubscribe": 30 * 24 * 3600,
}


class TokenError(DigestError):
    """A token that is malformed, tampered with, expired or revoked."""


@functools.lru_cache(maxsize=16)
def _serializer(secret: str, purpose: Purpose) -> URLSafeTimedSerializer:
    # The purpose is the salt: a token made for one purpose never verifies for another.
    return URLSafeTimedSerializer(secret, salt=f"digest.{purpose}")


@functools.lru_cache(maxsize=16)
def _signing_key(secret: str, purpose: Purpose) -> bytes:
    serializer = _serializer(secret, purpose)
    return serializer.make_signer(serializer.salt).derive_key()


def make_token(secret: str, purpose: Purpose, *, subscriber_id: int, version: int) -> str:
    """A URL-safe signed token for one subscriber and purpose.

    The token ``_serializer(secret, purpose).dumps([subscriber_id, version])`` makes, byte for
    byte (a test holds them equal), built here from its parts: the compact JSON payload, the
    timestamp and the HMAC-SHA1 of both under the serializer's derived key, each in URL-safe
    base64 and joined by ".". itsdangerous spends most of its time in Python layers around
    one HMAC, and a digest carries three tokens.
    """
    return make_tokens(secret, (purpose,), subscriber_id=subscriber_id, version=version)[0]


def make_tokens(
    secret: str, purposes: Sequence[Purpose], *, subscriber_id: int, version: int
) -> tuple[str, ...]:
    """:func:`make_token` for each of ``purposes``, made in the same second: the payload and
    the timestamp are encoded once, and only the signature (its key derived from the
    purpose) differs. A digest carries three."""
    if not secret:
        raise ValueError("no signing secret")
    value = (
        base64_encode(b"[%d,%d]" % (int(subscriber_id), int(version)))
        + b"."
        + base64_encode(int_to_bytes(int(time.time())))
    )
    return tuple(
        (value + b"." + base64_encode(hmac.digest(_signing_key(secret, p), value, "sha1"))).decode(
            "ascii"
        )
        for p in purposes
    )


def read_token(secret: str, purpose: Purpose, token: str) -> tuple[int, int]:
    """The (subscriber id, token version) in a token, or TokenError; check the version yourself."""
    if len(token) > 512:
        raise TokenError("this link is not valid")
    try:
        data = _serializer(secret, purpose).loads(token, max_age=MAX_AGE[purpose])
    except SignatureExpired as e:
        raise TokenError("this link has expired") from e
    except BadSignature as e:
        raise TokenError("this link is not valid") from e
    if (
        not isinstance(data, list)
        or len(data) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in data)
    ):
        raise TokenError("this link is not valid")
    return data[0], data[1]
