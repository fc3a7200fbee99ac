"""Delivery: from "these readers are due" to messages accepted by a mail server, recorded.

planning    the due rule; one queued delivery per (reader, edition)
leases      take due deliveries for a while, renew, give back
compose     an edition's papers and a chunk of readers -> messages
composers   who composes: a thread here, or a composing process
transports  where messages go: the SMTP relay, the embedded sink, a recording list
record      what happened to each delivery, and the run's counts
senders     deliver(): the senders that tie these together; send(): plan, then deliver

The names below load their module on first use, so that what needs only one part (the inbound
mail server needs transports, not the ranker) imports only that part.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "edition_papers": "compose",
    "preview": "compose",
    "claim_ids": "leases",
    "count_due": "leases",
    "due": "planning",
    "plan": "planning",
    "plan_due": "planning",
    "unplanned": "planning",
    "RECORD_WINDOW": "record",
    "SendReport": "record",
    "record_send_run": "record",
    "CONNECTION_FAILURES_TO_ABORT": "senders",
    "deliver": "senders",
    "send": "senders",
    "tune_for_sending": "senders",
    "Envelope": "transports",
    "Mailroom": "transports",
    "RecordingMailroom": "transports",
    "Transport": "transports",
    "mailroom_for": "transports",
}

__all__ = [
    "CONNECTION_FAILURES_TO_ABORT",
    "Envelope",
    "Mailroom",
    "RECORD_WINDOW",
    "RecordingMailroom",
    "SendReport",
    "Transport",
    "claim_ids",
    "count_due",
    "deliver",
    "due",
    "edition_papers",
    "mailroom_for",
    "plan",
    "plan_due",
    "preview",
    "record_send_run",
    "send",
    "tune_for_sending",
    "unplanned",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'digest.delivery' has no attribute {name!r}")
    return getattr(importlib.import_module(f"digest.delivery.{_WHERE[name]}"), name)


if TYPE_CHECKING:
    from digest.delivery.compose import edition_papers, preview
    from digest.delivery.leases import claim_ids, count_due
    from digest.delivery.planning import due, plan, plan_due, unplanned
    from digest.delivery.record import RECORD_WINDOW, SendReport, record_send_run
    from digest.delivery.senders import (
        CONNECTION_FAILURES_TO_ABORT,
        deliver,
        send,
        tune_for_sending,
    )
    from digest.delivery.transports import (
        Envelope,
        Mailroom,
        RecordingMailroom,
        Transport,
        mailroom_for,
    )
