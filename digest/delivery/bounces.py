"""Bounces after acceptance: delivery status notifications and complaints, traced to their digest.

A relay that accepted a digest may fail to deliver it later; the mail system then reports to the
message's envelope sender. Every digest leaves with an envelope sender of its own (VERP), the
``[delivery] bounce_address`` with the delivery's id and a signature in its local part::

    bounces+42-k3j4h5g6f7d8s9a0@example.org

The inbound server (:mod:`digest.inbound`) takes mail for such addresses only when the signature
holds, so a forged report changes nothing. What a report says:

- a delivery status notification (RFC 3464, ``multipart/report; report-type=delivery-status``):
  a permanent failure (``Action: failed``, status 5.x.x) marks the delivery ``bounced`` and
  counts against the reader's ``[delivery] bounce_limit``; a temporary one (``delayed``, 4.x.x)
  is noted on the delivery;
- a complaint (ARF, RFC 5965, ``report-type=feedback-report``, an abuse report: the reader
  pressed "this is spam") unsubscribes the reader;
- anything else is read by flufl.bounce, which knows the non-standard bounces of many mail
  systems (GNU Mailman's detectors).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import logging
import re
from collections.abc import Iterable
from datetime import datetime
from email import message_from_bytes
from email.message import Message
from typing import Literal

from sqlalchemy.engine import Engine
from sqlmodel import Session

from digest.config import Settings
from digest.models import Delivery, Subscriber

log = logging.getLogger("digest.delivery")

Kind = Literal["bounce", "delay", "complaint", "none"]

# The parts of a report read at most, and the characters of a detail kept.
MAX_PARTS = 50
MAX_NESTED = 20  # multipart and message parts in a report: a mail system's has a handful
DETAIL_CHARS = 300

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_REPLY_CODE = re.compile(r"\b([245])\d\d\b")
_TOKEN = re.compile(r"(\d{1,12})-([a-z2-7]{16})")


def _mac(settings: Settings, delivery_id: int) -> str:
    digest = hmac.new(
        settings.secret_key.encode(), f"bounce:{delivery_id}".encode(), hashlib.sha256
    ).digest()
    return base64.b32encode(digest[:10]).decode("ascii").lower()


def return_path(settings: Settings, delivery_id: int) -> str:
    """The envelope sender of one delivery's digest: where its bounces come back to (or
    ``[smtp] from_address`` when ``[delivery] bounce_address`` is empty)."""
    base = settings.delivery.bounce_address
    if not base:
        return settings.smtp.from_address
    local, _, domain = base.rpartition("@")
    return f"{local}+{delivery_id}-{_mac(settings, delivery_id)}@{domain}"


def delivery_of(settings: Settings, address: str) -> int | None:
    """The delivery a bounce address stands for, when its signature holds; else None."""
    base = settings.delivery.bounce_address.lower()
    if not base:
        return None
    local, _, domain = address.strip().lower().rpartition("@")
    base_local, _, base_domain = base.rpartition("@")
    prefix = f"{base_local}+"
    if domain != base_domain or not local.startswith(prefix):
        return None
    token = _TOKEN.fullmatch(local[len(prefix) :])
    if token is None:
        return None
    delivery_id = int(token[1])
    if not hmac.compare_digest(token[2], _mac(settings, delivery_id)):
        return None
    return delivery_id


@dataclasses.dataclass(frozen=True, kw_only=True)
class Report:
    """What a report says of the delivery: its kind, the status code, a line of detail."""

    kind: Kind
    status: str = ""
    detail: str = ""

    def describe(self) -> str:
        """A line for the delivery's last_error and the log."""
        what = {
            "bounce": "bounced after the relay accepted it",
            "delay": "delayed after the relay accepted it",
            "complaint": "reported as spam by the reader's mail provider",
            "none": "a report that asks for nothing",
        }[self.kind]
        return " ".join(p for p in (f"{what}:", self.status, self.detail) if p)[:1000]


def _one_line(value: object) -> str:
    return " ".join(str(value or "").split())[:DETAIL_CHARS]


def _parts(msg: Message) -> Iterable[Message]:
    for n, part in enumerate(msg.walk()):
        if n >= MAX_PARTS:
            return
        yield part


def _status_fields(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status part (its per-recipient fields)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    return []


def _delivery_status(part: Message) -> Report | None:
    worst: Report | None = None
    for fields in _status_fields(part):
        action = str(fields.get("Action", "")).strip().lower()
        status = _one_line(fields.get("Status"))
        detail = _one_line(fields.get("Diagnostic-Code"))
        code = _STATUS.search(status) or _STATUS.search(detail)
        reply = _REPLY_CODE.search(status) or _REPLY_CODE.search(detail)
        klass = code[1] if code else (reply[1] if reply else "")
        if action.startswith("fail") or klass == "5":
            found = Report(kind="bounce", status=code[0] if code else status, detail=detail)
        elif action.startswith("delay") or klass == "4":
            found = Report(kind="delay", status=code[0] if code else status, detail=detail)
        else:  # delivered, relayed, expanded: nothing went wrong
            continue
        if worst is None or (found.kind == "bounce" and worst.kind != "bounce"):
            worst = found
    return worst


def _feedback(part: Message) -> Report | None:
    for fields in [part, *_status_fields(part)]:
        kind = str(fields.get("Feedback-Type", "")).strip().lower()
        if kind:
            if kind in ("abuse", "fraud"):
                return Report(kind="complaint", status=kind)
            return Report(kind="none", status=kind)
    return None


def read_report(msg: Message) -> Report:
    """What a report says: an RFC 3464 DSN or an RFC 5965 complaint when it is one, else
    flufl.bounce's reading of a non-standard bounce."""
    for part in _parts(msg):
        content = part.get_content_type()
        if content == "message/delivery-status":
            found = _delivery_status(part)
            if found is not None:
                return found
        elif content == "message/feedback-report":
            found = _feedback(part)
            if found is not None:
                return found
    from flufl.bounce import all_failures  # the heuristic detectors, for what is not a DSN

    try:
        temporary, permanent = all_failures(msg)
    except Exception as e:  # a detector that cannot read this mail: it says nothing
        log.info("event=bounce-unreadable error=%r", f"{type(e).__name__}: {e}")
        return Report(kind="none")
    if not (permanent or temporary):
        return Report(kind="none")
    code = _STATUS.search(_text_of(msg))
    return Report(
        kind="bounce" if permanent else "delay",
        status=code[0] if code else "",
        detail=_one_line(msg.get("Subject")),
    )


def _text_of(msg: Message) -> str:
    """The first plain-text part, where a non-standard bounce says what went wrong."""
    for part in _parts(msg):
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                return payload[:20_000].decode("utf-8", "replace")
    return ""


def record_report(
    engine: Engine, settings: Settings, delivery_id: int, report: Report, *, now: datetime
) -> str:
    """Apply a report to its delivery (once: a repeated report changes nothing more); what
    was done, for the log."""
    from digest import subscriptions

    with Session(engine) as session:
        d = session.get(Delivery, delivery_id)
        if d is None:
            return "no such delivery"
        sub = session.get(Subscriber, d.subscriber_id)
        if report.kind == "bounce":
            if d.status != "sent":
                return f"already {d.status}"
            d.status, d.last_error = "bounced", report.describe()
            session.add(d)
            if sub is not None:
                sub.bounce_count += 1
                if sub.bounce_count >= settings.delivery.bounce_limit and sub.status == "active":
                    sub.status = "bounced"
                sub.updated_at = now
                session.add(sub)
            session.commit()
            return "bounced"
        if report.kind == "delay":
            if d.status == "sent":
                d.last_error = report.describe()
                session.add(d)
                session.commit()
            return "noted"
        if report.kind == "complaint":
            d.last_error = report.describe()
            session.add(d)
            session.commit()
            if sub is not None and sub.status != "unsubscribed":
                subscriptions.unsubscribe(engine, sub.email, now=now)
                return "unsubscribed"
            return "noted"
    return "nothing"


def process(
    engine: Engine, settings: Settings, *, recipients: Iterable[str], data: bytes, now: datetime
) -> None:
    """Read a report that came to bounce addresses and apply it to each delivery it names."""
    lowered = data.lower()
    if lowered.count(b"multipart/") + lowered.count(b"message/") > MAX_NESTED:
        log.info("event=bounce-unreadable reason=too-many-mime-parts")  # not a mail system's
        return
    msg = message_from_bytes(data)
    report: Report | None = None
    for address in recipients:
        delivery_id = delivery_of(settings, address)
        if delivery_id is None:
            continue
        if report is None:
            report = read_report(msg)
        done = record_report(engine, settings, delivery_id, report, now=now)
        log.info(
            "event=bounce-report delivery=%s kind=%s status=%r done=%s",
            delivery_id,
            report.kind,
            report.status,
            done,
        )
