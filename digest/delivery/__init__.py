"""Delivery: from "these readers are due" to messages accepted by a mail server, recorded.

plan        the due rule; one queued delivery per (reader, edition)
leases      take due deliveries for a while, renew, give back
compose     an edition's papers and a chunk of readers -> messages
composers   who composes: a thread here, or a composing process
transports  where messages go: the SMTP relay, the embedded sink, a recording list
record      what happened to each delivery, and the run's counts
send        deliver(): the senders that tie these together; send(): plan, then deliver
"""

from digest.delivery.compose import edition_papers, preview
from digest.delivery.leases import CHUNK, claim_ids, count_due
from digest.delivery.plan import due, plan, plan_due, unplanned
from digest.delivery.record import RECORD_WINDOW, SendReport, record_send_run
from digest.delivery.send import (
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

__all__ = [
    "CHUNK",
    "CONNECTION_FAILURES_TO_ABORT",
    "RECORD_WINDOW",
    "Envelope",
    "Mailroom",
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
