"""Email commands: an aiosmtpd server that takes mail for the command addresses only.

Like arXiv's mail interface. Mail to ``[inbound] address`` carries commands in its subject or
one per line at the top of its body (quoted text, signatures and everything after the first line
that is not a command are skipped)::

    subscribe llm inference, quantization
    exclude survey
    weekly friday

The commands: ``subscribe [KEYWORDS]``, ``keywords KEYWORDS`` (replace), ``exclude [KEYWORDS]``
(an empty list clears it), ``weekly [DAY]``, ``daily``, ``unsubscribe``, ``help``. Mail to
``subscribe_address`` subscribes with the keywords in its subject; any mail to
``unsubscribe_address`` unsubscribes its sender.

Trust: the From address of a mail can be forged, so a mail alone never does what only the
owner of the address may do.

- A new, pending, unsubscribed or bounced address becomes (or stays) pending with the interests
  asked for and is mailed a confirmation link: the web form's own rule
  (:func:`digest.subscriptions.request`), sharing its one such mail per ``[web]
  confirm_interval_seconds`` and its cap on requests in all, and capped per sender domain
  (``[inbound] subscribe_per_domain_per_hour``; a mail over a cap gets no reply). Nothing else
  reaches it until the link is followed.
- An active subscription is never changed by mail: the reply carries the reader's signed
  preferences link (same slot), which only whoever reads that mailbox can follow.
- Unsubscribing by mail is accepted without a link: that is what a ``List-Unsubscribe:
  <mailto:…>`` header (RFC 2369) promises, and mail providers send such mails on a reader's
  click, some marked ``Auto-Submitted``. Whichever way it came, a mail that ends an active
  subscription earns its reader a notice with a come-back link, so a forged one always costs
  its victim a mail and one click, never their digests unawares.
- Replies go to the From address only (never to Reply-To, which would hand the links to a
  forger), at most ``[inbound] replies_per_hour`` to one address and ``REPLIES_PER_MINUTE``
  in all. A reply never quotes the mail (its keywords, its other lines): whoever forged the
  From would have it carry their words to that address. Mail that is automatic
  (Auto-Submitted, a bounce, a mailing list, Precedence bulk, a robot sender, our own replies)
  is never answered (RFC 3834), but for the notice of an automatic unsubscribe.

Mail to a signed bounce address (:mod:`digest.delivery.bounces`) is a report on a digest: it is
applied to its delivery and never answered.

The SMTP answer to a mail is the same whatever the state of its sender's address, and it is
given before the mail is read: one worker thread executes the commands and replies, so neither
the answer nor its timing tells anything. Messages are bounded (552 above ``[inbound]
max_message_bytes``), so are the lines and commands read, the MIME parts walked and their
depth; a mail that cannot be read is logged and dropped, or answered with help.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from email import policy
from email.errors import MessageError
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, BytesParser
from email.utils import format_datetime
from html.parser import HTMLParser
from typing import Any, Literal

import jinja2
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy.engine import Engine

from digest import subscriptions
from digest.config import Settings
from digest.delivery import bounces
from digest.delivery.bounces import delivery_of
from digest.delivery.transports import Envelope as MailEnvelope
from digest.delivery.transports import Mailroom, mailroom_for
from digest.errors import DigestError, SendError, SubscriberError, TooManyRequests
from digest.keywords import MAX_KEYWORD_LIST_CHARS
from digest.links import confirm_url, links_for, resubscribe_url
from digest.mailer import new_message_id
from digest.models import utcnow
from digest.render import one_line
from digest.resources import templates_dir
from digest.sink import free_port
from digest.subscriptions import WEEKDAYS, Interests, Origin, Outgoing
from digest.tokens import MAX_AGE

log = logging.getLogger("digest.inbound")

# What the address a mail came to means.
Role = Literal["commands", "subscribe", "unsubscribe"]

MAX_BODY_LINES = 40  # non-blank lines of the body looked at
MAX_COMMANDS = 10
MAX_UNKNOWN_SHOWN = 3
# Longer than any keyword list a command may carry, so that an over-long line is refused by
# that limit (the reply names it) rather than cut short into a list that passes.
MAX_LINE_CHARS = MAX_KEYWORD_LIST_CHARS + 100
MAX_TEXT_CHARS = 20_000
MAX_MULTIPARTS = 20  # more multipart containers than a mail client makes: a MIME bomb
MAX_PARTS = 50
MAX_DEPTH = 8
MAX_RECIPIENTS = 5
MAX_REPORT_BYTES = 2 << 20  # a bounce report may quote the whole digest
MAX_EMAIL_CHARS = 254
QUEUE_SIZE = 100
REPLIES_PER_MINUTE = 60
SMTP_TIMEOUT = 60.0
COMMAND_CALL_LIMIT = 100  # per command per SMTP session
SHOWN_CHARS = 80
KEYWORDS_SHOWN_CHARS = 600

REPLY_TEXT = "reply.txt.j2"
REPLY_HTML = "reply.html.j2"

_VERB = re.compile(
    r"(unsubscribe|subscribe|keywords?|exclude|weekly|daily|help)\b\s*:?\s*(.*)",
    re.IGNORECASE | re.DOTALL,
)
_REPLY_PREFIX = re.compile(r"\s*(?:(?:re|fwd?|aw|sv|wg|tr|antw)\s*(?:\[\d+\])?\s*:\s*)+", re.I)
# Where the reader's own text ends: a signature, an attribution of quoted text, a forward.
_END = re.compile(
    r"--|_{5,}|-{3,}\s*original message\s*-{3,}|-{3,}\s*forwarded message\s*-{3,}"
    r"|begin forwarded message:?|on\b.{0,300}\bwrote:|sent from my\b.*",
    re.IGNORECASE,
)
_ON = re.compile(r"^(?:on|every)\s+")
_MSG_ID = re.compile(r"<[^<>@\s]{1,200}@[^<>@\s]{1,200}>")
_ROBOT = re.compile(
    r"mailer-daemon|postmaster|listserv|majordomo|owner-.*|.*-request|.*-bounces?"
    r"|no-?reply|do-?not-?reply|bounces?",
    re.IGNORECASE,
)
_DAYS = {name.lower(): i for i, name in enumerate(WEEKDAYS)} | {
    name[:3].lower(): i for i, name in enumerate(WEEKDAYS)
}
_LIST_HEADERS = ("List-Id", "List-Post", "List-Help", "List-Unsubscribe", "Mailing-List")

HELP_COMMANDS = (
    (
        "subscribe llm inference, quantization",
        "subscribe with these keywords (confirmed by a link)",
    ),
    ("keywords diffusion, protein folding", "replace your keywords"),
    ("exclude survey, benchmark", "never send papers matching these (exclude alone clears them)"),
    ("weekly friday", "one digest a week, on that day (without one: as before, else Monday)"),
    ("daily", "one digest a day"),
    ("unsubscribe", "stop the digests"),
    ("help", "this text"),
)


# ---------------------------------------------------------------------------------------------
# reading a mail: commands, text, sender


@dataclasses.dataclass(frozen=True)
class Command:
    """One command line: a verb and what follows it."""

    verb: str
    argument: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Commands:
    """The commands a mail carries, and (when it has none) the first lines that were not
    commands (counted in the log; never quoted back)."""

    found: tuple[Command, ...]
    unknown: tuple[str, ...] = ()
    dropped: int = 0  # commands past MAX_COMMANDS, ignored

    def verbs(self) -> set[str]:
        """The verbs present."""
        return {c.verb for c in self.found}


def parse_command(line: str) -> Command | None:
    """The command on one line, or None when the line is not one."""
    match = _VERB.fullmatch(one_line(line, MAX_LINE_CHARS))
    if match is None:
        return None
    verb = match.group(1).lower()
    return Command("keywords" if verb == "keyword" else verb, match.group(2).strip())


def read_commands(subject: str, body: str, *, role: Role = "commands") -> Commands:
    """The commands in a subject and the top of a body; bounded in lines and commands.

    On ``subscribe`` addresses a subject that is not a command is the keyword list (unless it
    is a reply, ``Re: …``). In the body, blank and quoted (``>``) lines are skipped, a signature
    or an attribution line ends the text, and so does the first line that is not a command
    once commands have begun ("Thanks, Ada" is no command).
    """
    found: list[Command] = []
    unknown: list[str] = []
    raw_subject = one_line(subject, MAX_LINE_CHARS)
    prefix = _REPLY_PREFIX.match(raw_subject)
    stripped = raw_subject[prefix.end() :] if prefix else raw_subject
    command = parse_command(stripped)
    if command is not None:
        found.append(command)
    elif role == "subscribe" and stripped and prefix is None:
        found.append(Command("subscribe", stripped))
    in_commands = False
    looked = 0
    for raw in body[:MAX_TEXT_CHARS].splitlines():
        line = raw.strip()
        if not line or line.startswith(">"):
            continue
        if _END.fullmatch(line):
            break
        looked += 1
        if looked > MAX_BODY_LINES:
            break
        command = parse_command(line)
        if command is None:
            if in_commands:
                break
            if len(unknown) < MAX_UNKNOWN_SHOWN:
                unknown.append(one_line(line, SHOWN_CHARS))
            continue
        in_commands = True
        found.append(command)
    dropped = max(0, len(found) - MAX_COMMANDS)
    return Commands(
        found=tuple(found[:MAX_COMMANDS]),
        unknown=() if found else tuple(unknown),
        dropped=dropped,
    )


class _HtmlText(HTMLParser):
    """The readable text of an HTML body: block elements become line breaks; quotes, scripts
    and styles are dropped."""

    BLOCK = frozenset(
        [
            "p",
            "div",
            "br",
            "li",
            "tr",
            "table",
            "ul",
            "ol",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "pre",
            "hr",
            "section",
            "article",
        ]
    )
    SKIP = frozenset(["script", "style", "head", "title", "blockquote", "template"])

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """The text of an HTML mail body, a line per block."""
    parser = _HtmlText()
    parser.feed(html[: MAX_TEXT_CHARS * 4])
    parser.close()
    return "".join(parser.parts)[:MAX_TEXT_CHARS]


def _decoded(part: Message) -> str:
    """A text part's content; an unknown charset or a broken encoding is read as UTF-8 with
    replacement characters rather than refused."""
    try:
        content = part.get_content() if isinstance(part, EmailMessage) else None
    except (LookupError, UnicodeError, ValueError, TypeError):
        content = None
    if not isinstance(content, str):
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return content[:MAX_TEXT_CHARS]


def message_text(msg: Message) -> str:
    """The text the commands are read from: the first text/plain part (not an attachment, not
    inside a forwarded message), else the first text/html one as text. At most MAX_PARTS parts
    are looked at, MAX_DEPTH deep."""
    stack: list[tuple[Message, int]] = [(msg, 0)]
    looked = 0
    html: Message | None = None
    while stack and looked < MAX_PARTS:
        part, depth = stack.pop()
        looked += 1
        ctype = part.get_content_type()
        if ctype.startswith("message/"):
            continue
        if part.is_multipart():
            children = part.get_payload()
            if depth < MAX_DEPTH and isinstance(children, list):
                stack.extend(
                    (child, depth + 1)
                    for child in reversed(children[:MAX_PARTS])
                    if isinstance(child, Message)
                )
            continue
        if part.get_content_disposition() == "attachment":
            continue
        if ctype == "text/plain":
            return _decoded(part)
        if ctype == "text/html" and html is None:
            html = part
    return html_to_text(_decoded(html)) if html is not None else ""


def _address_in(msg: Message, name: str) -> str | None:
    """The one mailbox in header ``name``, normalised, or None (missing, several, invalid)."""
    try:
        values = msg.get_all(name) or []
        if len(values) != 1:
            return None
        mailboxes: tuple[Address, ...] = getattr(values[0], "addresses", ())
        if len(mailboxes) != 1:
            return None
        spec = str(mailboxes[0].addr_spec)
    except (MessageError, IndexError, ValueError, TypeError, AttributeError):  # parser defects
        return None
    return _valid(spec)


def _valid(address: str) -> str | None:
    if not address or len(address) > MAX_EMAIL_CHARS:
        return None
    try:
        return subscriptions.normalise_email(address)
    except SubscriberError:
        return None


def _header(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except (MessageError, IndexError, ValueError, TypeError, AttributeError):
        return ""
    return one_line(str(value), MAX_LINE_CHARS) if value is not None else ""


def automatic(msg: Message, mail_from: str, *, own: Iterable[str] = ()) -> str | None:
    """Why this mail must not be answered (RFC 3834: bounces, auto-replies, lists, robots,
    loops), or None for a person's mail."""
    if mail_from in ("", "<>"):
        return "bounce"
    sender = _address_in(msg, "From") or ""
    ours = {a.lower() for a in own}
    for address in (mail_from, sender):
        if address and _ROBOT.fullmatch(address.rpartition("@")[0]):
            return "robot sender"
        if address.lower() in ours:
            return "loop"
    if msg.get_content_type() == "multipart/report":
        return "bounce"
    submitted = _header(msg, "Auto-Submitted").lower()
    if submitted and not submitted.startswith("no"):
        return "auto-submitted"
    if _header(msg, "Precedence").lower() in ("bulk", "junk", "list"):
        return "bulk"
    if any(_header(msg, name) for name in _LIST_HEADERS):
        return "mailing list"
    if _header(msg, "X-Autoreply") or _header(msg, "X-Autorespond"):
        return "auto-submitted"
    suppress = _header(msg, "X-Auto-Response-Suppress").lower()
    if "all" in suppress or "autoreply" in suppress:
        return "auto-submitted"
    loop = _header(msg, "X-Loop").lower()
    if loop and any(a in loop for a in ours):
        return "loop"
    return None


def _message_ids(value: str) -> list[str]:
    return [m for m in _MSG_ID.findall(value) if m.isascii()]


# ---------------------------------------------------------------------------------------------
# rate limits


class ReplyLimiter:
    """At most ``per_hour`` replies to one address in any hour, and ``per_minute`` in all."""

    def __init__(self, per_hour: int, *, per_minute: int = REPLIES_PER_MINUTE) -> None:
        self.per_hour = per_hour
        self.per_minute = per_minute
        self._by_address: dict[str, collections.deque[float]] = {}
        self._all: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def allow(self, address: str, now: float) -> bool:
        """Take a reply slot for ``address`` at ``now`` (seconds); false when none is left."""
        with self._lock:
            while self._all and self._all[0] <= now - 60:
                self._all.popleft()
            if len(self._all) >= self.per_minute:
                return False
            sent = self._by_address.setdefault(address, collections.deque())
            while sent and sent[0] <= now - 3600:
                sent.popleft()
            if len(sent) >= self.per_hour:
                return False
            sent.append(now)
            self._all.append(now)
            if len(self._by_address) > 10_000:  # forget the addresses whose hour is over
                self._by_address = {
                    a: q for a, q in self._by_address.items() if q and q[-1] > now - 3600
                }
            return True


# ---------------------------------------------------------------------------------------------
# executing commands


@dataclasses.dataclass(kw_only=True)
class Reply:
    """What a reply says; rendered by templates/email/reply.*.j2."""

    subject: str
    headline: str
    lines: list[str] = dataclasses.field(default_factory=list)
    interests: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    action_url: str | None = None
    action_label: str = ""
    action_note: str | None = None
    show_help: bool = False
    footer: str = "If you did not send it, ignore this reply: nothing was changed."
    outgoing: Outgoing | None = None  # the confirmation slot this reply holds


@dataclasses.dataclass(frozen=True, kw_only=True)
class Incoming:
    """A mail the server accepted, waiting for the worker."""

    mail_from: str
    recipients: tuple[str, ...]
    data: bytes
    peer: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Wanted:
    """What a mail's subscribe/keywords/exclude/weekly/daily commands ask for."""

    subscribe: bool
    keywords: str | None
    exclude: str | None
    frequency: str | None
    weekday: int | None
    problems: tuple[str, ...]


def _keyword_problem(raw: str, field: subscriptions.KeywordField) -> str | None:
    """What is wrong with a mail's keyword list (the limit it goes over), as a reply line."""
    try:
        subscriptions.keyword_list(raw, field=field)
    except SubscriberError as e:
        return f"{field}: {e}."
    return None


def wanted_changes(commands: Commands, *, role: Role) -> _Wanted:
    """Gather the subscription commands of one mail (later ones win) and what is wrong."""
    problems: list[str] = []
    keywords: list[str] = []
    exclude: list[str] | None = None
    frequency: str | None = None
    weekday: int | None = None
    for c in commands.found:
        if c.verb in ("subscribe", "keywords"):
            if c.argument:
                keywords.append(c.argument)
            elif c.verb == "keywords":
                problems.append(
                    "keywords: give the list, e.g. keywords llm inference, quantization"
                )
        elif c.verb == "exclude":
            exclude = [*(exclude or []), *([c.argument] if c.argument else [])]
        elif c.verb == "daily":
            frequency, weekday = "daily", None
        elif c.verb == "weekly":
            day = _ON.sub("", c.argument.lower().rstrip(".")).removesuffix("s")
            if day and day not in _DAYS:
                problems.append("weekly: that is not a day of the week; write e.g. weekly friday")
            frequency, weekday = "weekly", _DAYS.get(day) if day else None
    joined = ", ".join(keywords) if keywords else None
    lists: tuple[tuple[subscriptions.KeywordField, str], ...] = (
        ("keywords", joined or ""),
        ("exclude", ", ".join(exclude or [])),
    )
    for field, raw in lists:
        problem = _keyword_problem(raw, field)
        if problem:
            problems.append(problem)
    return _Wanted(
        subscribe=role == "subscribe" or "subscribe" in commands.verbs(),
        keywords=joined,
        exclude=", ".join(exclude) if exclude is not None else None,
        frequency=frequency,
        weekday=weekday,
        problems=tuple(problems),
    )


def _keywords_shown(keywords: Sequence[str]) -> str:
    return one_line(", ".join(keywords), KEYWORDS_SHOWN_CHARS) or "none"


def interests_shown(interests: Interests) -> list[tuple[str, str]]:
    """The rows of the interests table in a reply."""
    when = f"around {interests.send_hour:02d}:00 ({interests.timezone})"
    schedule = (
        f"weekly, on {WEEKDAYS[interests.weekday % 7]} {when}"
        if interests.frequency == "weekly"
        else f"daily, {when}"
    )
    return [
        ("Keywords", _keywords_shown(interests.keywords)),
        ("Excluded", _keywords_shown(interests.exclude)),
        ("Schedule", schedule),
        ("Papers per digest", str(interests.max_papers)),
    ]


class CommandProcessor:
    """Executes the commands of accepted mail and sends the replies; one per server."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        clock: Callable[[], datetime] = utcnow,
        mailroom: Mailroom | None = None,
    ) -> None:
        if not settings.secret_key:
            raise ValueError("email commands need a signing secret (see config.ensure_secret)")
        self.settings = settings
        self.engine = engine
        self.clock = clock
        self.mailroom = mailroom or mailroom_for(settings)
        self.roles = command_addresses(settings)
        self.limiter = ReplyLimiter(settings.inbound.replies_per_hour)
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(templates_dir() / "email")),
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html.j2",), default_for_string=True, default=False
            ),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            auto_reload=False,
        )
        for name in (REPLY_TEXT, REPLY_HTML):
            self.env.get_template(name)  # fail at start-up, not at the first reply
        self.own = (*self.roles, settings.smtp.from_address.lower())

    @property
    def site(self) -> str:
        """The service's name as mail shows it."""
        return one_line(self.settings.site.name, 80) or "digest"

    # the pipeline of one mail

    def process(self, mail: Incoming) -> None:
        """Read one accepted mail, execute its commands, reply when that is safe and useful;
        a report on a digest (to a bounce address) is applied to its delivery."""
        reports = [r for r in mail.recipients if r not in self.roles]
        if reports:  # the handler took only signed bounce addresses beside ours
            bounces.process(
                self.engine, self.settings, recipients=reports, data=mail.data, now=self.clock()
            )
        roles = {self.roles[r] for r in mail.recipients if r in self.roles}
        order: tuple[Role, ...] = ("unsubscribe", "subscribe", "commands")
        role = next((r for r in order if r in roles), None)
        if role is None:  # the handler takes only our addresses; nothing to do otherwise
            return
        # Answer from the address the mail was written to.
        reply_from = next(a for a in mail.recipients if self.roles.get(a) == role)
        lowered = mail.data.lower()
        if lowered.count(b"multipart/") + lowered.count(b"message/") > MAX_MULTIPARTS:
            self._too_complex(mail, reply_from)
            return
        msg = BytesParser(policy=policy.default).parsebytes(mail.data)
        why = automatic(msg, mail.mail_from, own=self.own)
        sender = _address_in(msg, "From")
        if why is not None:
            # An automatic unsubscribe (a provider acting on List-Unsubscribe) is still one. It
            # is not answered, but an active reader it ends is told (the From can be forged).
            if (
                role == "unsubscribe"
                and sender
                and _header(msg, "Auto-Submitted").lower().startswith("auto-generated")
            ):
                notice = self._unsubscribe(sender, automatic=True)
                if notice is not None:
                    self.send(sender, notice, from_addr=reply_from, original=None)
            log.info(
                "event=ignored reason=%r mail_from=%r from=%r peer=%s",
                why,
                mail.mail_from,
                sender,
                mail.peer,
            )
            return
        if sender is None:
            self._no_sender(mail, msg, reply_from)
            return
        commands = read_commands(_header(msg, "Subject"), message_text(msg), role=role)
        reply = self.execute(sender, commands, role=role)
        log.info(
            "event=commands from=%s role=%s verbs=%s other_lines=%d reply=%r",
            sender,
            role,
            ",".join(c.verb for c in commands.found) or "-",
            len(commands.unknown),
            reply.headline if reply else None,
        )
        if reply is not None:
            self.send(sender, reply, from_addr=reply_from, original=msg)

    def execute(self, sender: str, commands: Commands, *, role: Role) -> Reply | None:
        """Do what the commands ask (as far as a mail may) and say what happened."""
        verbs = commands.verbs()
        if role == "unsubscribe" or "unsubscribe" in verbs:
            return self._unsubscribe(sender, ignored=bool(verbs - {"unsubscribe", "help"}))
        if role == "subscribe" or verbs & {"subscribe", "keywords", "exclude", "weekly", "daily"}:
            reply = self._subscribe(sender, commands, role=role)
        elif "help" in verbs:
            reply = Reply(subject=f"{self.site} email commands", headline="Email commands")
        else:
            reply = Reply(
                subject=f"{self.site} email commands",
                headline="Your mail had no command",
                lines=["Nothing was done. These are the commands this address understands."],
            )
        if reply is not None:
            reply.show_help = reply.show_help or "help" in verbs or not commands.found
            if commands.dropped:
                reply.lines.append(
                    f"Only the first {MAX_COMMANDS} commands were read; "
                    f"{commands.dropped} more were ignored."
                )
        return reply

    def _unsubscribe(
        self, sender: str, *, ignored: bool = False, automatic: bool = False
    ) -> Reply | None:
        """Unsubscribe by address, with no link (what RFC 2369's List-Unsubscribe mailto
        promises), and say so; for ``automatic`` mail, only a notice to an active reader it
        ended (None otherwise)."""
        try:
            ended = subscriptions.unsubscribe_address(self.engine, sender, now=self.clock())
        except SubscriberError:  # no subscriber has this address
            ended = None
        if automatic and ended != "active":
            return None
        commands = self.settings.inbound.address
        if ended is None:
            return Reply(
                subject=f"Your {self.site} subscription",
                headline="There was nothing to unsubscribe",
                lines=[f"{sender} has no {self.site} subscription."],
            )
        if automatic:
            lines = [
                f"A mail to our unsubscribe address, sent automatically (by your mail provider "
                f"or a program, perhaps), stopped the {self.site} digests of {sender}."
            ]
        else:
            lines = [f"{sender} gets no more {self.site} digests."]
        if ignored:
            lines.append("The other commands in your mail were ignored: unsubscribe comes first.")
        row = subscriptions.find(self.engine, sender) if ended == "active" else None
        if row is None:
            lines.append(
                f"Changed your mind? Send “subscribe” to {commands} and confirm with the link "
                "in the reply."
            )
            return Reply(
                subject=f"You are unsubscribed from {self.site}",
                headline="You are unsubscribed",
                lines=lines,
                footer=f"If you did not ask for this, send “subscribe” to {commands} to come back.",
            )
        # A reader whose digests it stopped: the sender of a mail can be forged, so one click
        # brings them back as they were.
        days = (MAX_AGE["resubscribe"] or 0) // 86400
        return Reply(
            subject=f"You are unsubscribed from {self.site}",
            headline="You are unsubscribed",
            lines=lines,
            action_url=resubscribe_url(self.settings, row),
            action_label="Subscribe again",
            action_note=f"The link works for {days} days; it brings back your keywords and "
            "schedule as they were."
            if days
            else None,
            footer="If you did not ask for this, the link above brings your digests back: "
            "the sender of a mail can be forged.",
        )

    def _defaults(self) -> Interests:
        zone = self.settings.digest.timezone
        return Interests(
            keywords=(),
            timezone=zone,
            max_papers=self.settings.digest.max_papers,
        )

    def _subscribe(self, sender: str, commands: Commands, *, role: Role) -> Reply | None:
        wanted = wanted_changes(commands, role=role)
        if wanted.problems:
            return Reply(
                subject=f"{self.site} email commands",
                headline="Nothing was changed",
                lines=["Your mail had a problem, so nothing was done:", *wanted.problems],
                show_help=True,
            )
        row = subscriptions.find(self.engine, sender)
        status = row.status if row is not None else None
        if status not in ("pending", "active") and not wanted.subscribe:
            return Reply(
                subject=f"{self.site} email commands",
                headline="This address has no subscription",
                lines=[
                    f"{sender} is not subscribed, so there is nothing to change. To subscribe, "
                    f"send “subscribe” and your keywords to {self.settings.inbound.address}."
                ],
                show_help=True,
            )
        base = self._defaults() if row is None else subscriptions.interests_of(row)
        keywords = (
            subscriptions.keyword_list(wanted.keywords)  # within the limits: checked above
            if wanted.keywords is not None
            else base.keywords
        )
        if not keywords:
            return Reply(
                subject=f"{self.site} email commands",
                headline="Which papers do you want?",
                lines=[
                    "Nothing was done: a subscription needs at least one keyword, e.g. "
                    "“subscribe llm inference, quantization”."
                ],
                show_help=True,
            )
        try:
            interests = subscriptions.make_interests(
                keywords,
                exclude=wanted.exclude if wanted.exclude is not None else base.exclude,
                frequency=wanted.frequency or base.frequency,
                weekday=wanted.weekday if wanted.weekday is not None else base.weekday,
                send_hour=base.send_hour,
                timezone=base.timezone,
                max_papers=base.max_papers,
            )
        except SubscriberError as e:
            return Reply(
                subject=f"{self.site} email commands",
                headline="Nothing was changed",
                lines=[f"Your mail had a problem, so nothing was done: {e}."],
                show_help=True,
            )
        origin = Origin(
            channel="mail",
            key=subscriptions.domain_origin(sender),
            per_hour=self.settings.inbound.subscribe_per_domain_per_hour,
            total_per_hour=self.settings.web.subscribe_per_hour,
        )
        try:
            outgoing = subscriptions.request(
                self.engine,
                sender,
                interests,
                now=self.clock(),
                interval_seconds=self.settings.web.confirm_interval_seconds,
                origin=origin,
            )
        except TooManyRequests as e:
            # No reply: the cap is there to stop the mail a flood of forged senders would earn.
            log.warning("event=throttled to=%s reason=subscribe-cap detail=%r", sender, str(e))
            return None
        if outgoing is None:
            # A link went to this address moments ago: say nothing new (a flood of forged
            # mails gets one mail through, like the web form).
            log.info("event=throttled to=%s reason=confirm-interval", sender)
            return None
        fresh = subscriptions.by_id(self.engine, outgoing.subscriber_id)
        if fresh is None:
            return None
        if outgoing.kind == "confirm":
            days = (MAX_AGE["confirm"] or 0) // 86400
            return Reply(
                subject=f"Confirm your subscription to {self.site}",
                headline="Confirm your subscription",
                lines=[
                    f"Someone, hopefully you, asked by mail for {self.site} digests at {sender}. "
                    "Nothing is sent until the address is confirmed: the link shows what was "
                    "asked for, and a button to confirm it."
                ],
                action_url=confirm_url(self.settings, fresh),
                action_label="Confirm subscription",
                action_note=f"The link works for {days} days." if days else None,
                footer="If you did not send it, ignore this reply: nothing is sent without "
                "the link.",
                outgoing=outgoing,
            )
        current = subscriptions.interests_of(fresh)
        preferences = links_for(self.settings, fresh, None).preferences
        if interests == current:
            lines = [f"{sender} already gets {self.site} digests with these settings."]
        else:
            lines = [
                "Your subscription was not changed. The sender of a mail can be forged, so an "
                "active subscription is changed only on its preferences page, whose link only "
                "you receive: make the change there."
            ]
        return Reply(
            subject=f"Your {self.site} subscription",
            headline="You are already subscribed"
            if interests == current
            else "Change it on your preferences page",
            lines=lines,
            interests=interests_shown(current),
            action_url=preferences,
            action_label="Open your preferences",
            outgoing=outgoing,
        )

    def _no_sender(self, mail: Incoming, msg: Message, reply_from: str) -> None:
        """A mail without one valid From: nothing to act on; tell the envelope sender."""
        log.info("event=no-sender mail_from=%r peer=%s", mail.mail_from, mail.peer)
        to = _valid(mail.mail_from)
        if to is None:
            return
        reply = Reply(
            subject=f"{self.site} email commands",
            headline="Your mail had no sender address",
            lines=[
                "Nothing was done: the mail had no single valid From address, and commands act "
                "on that address. Send them again from your own mail account."
            ],
            show_help=True,
        )
        self.send(to, reply, from_addr=reply_from, original=msg)

    def _too_complex(self, mail: Incoming, reply_from: str) -> None:
        """A MIME bomb (hundreds of nested parts): read the headers only, answer with help."""
        headers = BytesHeaderParser(policy=policy.default).parsebytes(mail.data)
        why = automatic(headers, mail.mail_from, own=self.own)
        sender = _address_in(headers, "From")
        log.info(
            "event=dropped reason=too-many-mime-parts mail_from=%r from=%r peer=%s",
            mail.mail_from,
            sender,
            mail.peer,
        )
        if why is not None or sender is None:
            return
        reply = Reply(
            subject=f"{self.site} email commands",
            headline="Your mail could not be read",
            lines=[
                "Nothing was done: the mail had more MIME parts than a command needs. "
                "Send your commands as plain text."
            ],
            show_help=True,
        )
        self.send(sender, reply, from_addr=reply_from, original=headers)

    # replying

    def render(self, reply: Reply, *, to: str) -> tuple[str, str]:
        """(plain text, HTML) of a reply."""
        inbound = self.settings.inbound
        values: dict[str, Any] = {
            **dataclasses.asdict(reply),
            "site_name": self.site,
            "base_url": self.settings.site.base_url,
            "recipient": to,
            "address": inbound.address,
            "subscribe_address": inbound.subscribe_address,
            "unsubscribe_address": inbound.unsubscribe_address,
            "commands": HELP_COMMANDS,
        }
        values.pop("outgoing")
        return (
            self.env.get_template(REPLY_TEXT).render(values),
            self.env.get_template(REPLY_HTML).render(values),
        )

    def build(self, reply: Reply, *, to: str, from_addr: str, original: Message | None) -> bytes:
        """The reply as wire bytes: headers by the email library, threaded to the original."""
        text, html = self.render(reply, to=to)
        msg = EmailMessage()
        msg["From"] = Address(display_name=self.site, addr_spec=from_addr)
        msg["To"] = to
        msg["Subject"] = one_line(reply.subject, 150)
        msg["Date"] = format_datetime(self.clock())
        msg["Message-ID"] = new_message_id(from_addr.rpartition("@")[2])
        if original is not None:
            parent = _message_ids(_header(original, "Message-ID"))[:1]
            if parent:
                earlier = _message_ids(_header(original, "References"))[-8:]
                msg["In-Reply-To"] = parent[0]
                msg["References"] = " ".join([*earlier, parent[0]])
        msg["Auto-Submitted"] = "auto-replied"
        msg["X-Auto-Response-Suppress"] = "All"
        msg["X-Loop"] = from_addr
        msg.set_content(text)
        msg.add_alternative(html, subtype="html")
        data = msg.as_bytes(policy=policy.SMTP)
        return data

    def send(self, to: str, reply: Reply, *, from_addr: str, original: Message | None) -> bool:
        """Send a reply unless the address had its share; a held confirmation slot is given
        back when nothing went out."""
        ascii_to = _ascii_address(to)
        sent = False
        if ascii_to is None:
            log.warning("event=not-replied to=%r reason=non-ascii-address", to)
        elif not self.limiter.allow(ascii_to, self.clock().timestamp()):
            log.info("event=throttled to=%s reason=replies-per-hour", ascii_to)
        else:
            try:
                data = self.build(reply, to=ascii_to, from_addr=from_addr, original=original)
                self.mailroom.send(MailEnvelope(self.settings.smtp.from_address, ascii_to), data)
            except SendError as e:
                log.error("event=reply-failed to=%s error=%r", ascii_to, str(e))
            else:
                sent = True
                log.info("event=replied to=%s subject=%r", ascii_to, reply.subject)
        if not sent and reply.outgoing is not None:
            subscriptions.release_mail_slot(self.engine, reply.outgoing)
        return sent


def _ascii_address(address: str) -> str | None:
    """The address with its domain in IDNA form; None when the local part is not ASCII (our
    SMTP client does not speak SMTPUTF8)."""
    local, _, domain = address.rpartition("@")
    if not local.isascii():
        return None
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    return f"{local}@{domain}"


# ---------------------------------------------------------------------------------------------
# the SMTP server


def command_addresses(settings: Settings) -> dict[str, Role]:
    """The configured command addresses (lowercased) and what mail to each means."""
    inbound = settings.inbound
    roles: dict[str, Role] = {
        inbound.address: "commands",
        inbound.subscribe_address: "subscribe",
        inbound.unsubscribe_address: "unsubscribe",
    }
    return {address.strip().lower(): role for address, role in roles.items() if address}


class InboundHandler:
    """The aiosmtpd handler: our addresses only, then queue the message for the worker.

    ``bounces`` tells a signed bounce address (digest.delivery.bounces) from any other: mail
    for those is a report on a digest, read by the worker and never answered.
    """

    def __init__(
        self,
        addresses: Mapping[str, Role],
        mail: queue.Queue[Incoming | None],
        *,
        bounces: Callable[[str], bool] = lambda address: False,
        max_command_bytes: int | None = None,
    ) -> None:
        self.addresses = addresses
        self.mail = mail
        self.bounces = bounces
        self.max_command_bytes = max_command_bytes

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook names
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        """A report on a digest comes from the null sender (RFC 3464): mail from anyone else is
        a command mail, whose declared size is held to the command limit at once."""
        size = next(
            (int(o[5:]) for o in mail_options if o[:5].upper() == "SIZE=" and o[5:].isdigit()), 0
        )
        if address not in ("", "<>") and self.max_command_bytes and size > self.max_command_bytes:
            return "552 5.3.4 Message too big for a command mail"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook names
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Accept our command addresses; every other recipient is refused (never a relay)."""
        key = address.strip().lower()
        if key not in self.addresses and not self.bounces(key):
            log.info("event=refused-recipient rcpt=%r peer=%s", address[:254], session.peer)
            return (
                "550 5.7.1 Relaying denied: this server takes mail for its command addresses only"
            )
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        if key not in envelope.rcpt_tos:
            envelope.rcpt_tos.append(key)
        return "250 2.1.5 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook names
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        """Queue the message; the answer never depends on who sent it or what it says."""
        data = envelope.original_content or b""
        # Reports on digests may quote the digest, so the server takes up to its bounce size;
        # mail with commands keeps the smaller limit.
        commands = any(r in self.addresses for r in envelope.rcpt_tos)
        if commands and self.max_command_bytes and len(data) > self.max_command_bytes:
            return "552 5.3.4 Message too big for a command mail"
        mail = Incoming(
            mail_from=str(envelope.mail_from or ""),
            recipients=tuple(envelope.rcpt_tos),
            data=bytes(data) if not isinstance(data, str) else data.encode("utf-8", "replace"),
            peer=str(session.peer),
        )
        try:
            self.mail.put_nowait(mail)
        except queue.Full:
            log.warning("event=busy peer=%s", session.peer)
            return "451 4.3.2 Too busy: try again later"
        return "250 2.0.0 OK: queued"


class InboundServer:
    """A running inbound server: an aiosmtpd Controller and the worker thread behind it."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        clock: Callable[[], datetime] = utcnow,
        mailroom: Mailroom | None = None,
    ) -> None:
        inbound = settings.inbound
        self.processor = CommandProcessor(settings, engine, clock=clock, mailroom=mailroom)
        self.addresses = tuple(self.processor.roles)
        self.host = inbound.host
        self.port = inbound.port or free_port(inbound.host)
        self._mail: queue.Queue[Incoming | None] = queue.Queue(maxsize=QUEUE_SIZE)
        self._controller = Controller(
            InboundHandler(
                self.processor.roles,
                self._mail,
                bounces=lambda address: delivery_of(settings, address) is not None,
                max_command_bytes=inbound.max_message_bytes,
            ),
            hostname=self.host,
            port=self.port,
            server_hostname=inbound.address.rpartition("@")[2] or "localhost",
            ident="digest inbound",
            data_size_limit=max(inbound.max_message_bytes, MAX_REPORT_BYTES),
            timeout=SMTP_TIMEOUT,
            command_call_limit=COMMAND_CALL_LIMIT,
        )
        self._worker: threading.Thread | None = None

    def start(self) -> InboundServer:
        """Listen, and start the worker; DigestError when the port cannot be had."""
        self.processor.mailroom.start()
        self._worker = threading.Thread(target=self._work, name="digest-inbound", daemon=True)
        self._worker.start()
        try:
            self._controller.start()
        except (OSError, RuntimeError, TimeoutError) as e:
            self._stop_worker()
            self.processor.mailroom.stop()
            raise DigestError(
                f"cannot run the inbound SMTP server on {self.host}:{self.port}: {e}"
            ) from e
        log.info("event=listening host=%s port=%d", self.host, self.port)
        return self

    def stop(self) -> None:
        """Stop listening, finish the queued mail, stop the worker."""
        self._controller.stop()
        self._stop_worker()
        self.processor.mailroom.stop()

    def _stop_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        self._mail.put(None)
        worker.join(timeout=60)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every accepted mail has been handled; false on timeout."""
        deadline = time.monotonic() + timeout
        with self._mail.all_tasks_done:
            while self._mail.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._mail.all_tasks_done.wait(left)
        return True

    def _work(self) -> None:
        while True:
            mail = self._mail.get()
            try:
                if mail is None:
                    return
                try:
                    self.processor.process(mail)
                except Exception:  # one bad mail must never stop the server: log, drop, go on
                    log.exception(
                        "event=dropped reason=error mail_from=%r peer=%s",
                        mail.mail_from,
                        mail.peer,
                    )
            finally:
                self._mail.task_done()

    def __enter__(self) -> InboundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def create_server(
    settings: Settings,
    engine: Engine,
    *,
    clock: Callable[[], datetime] = utcnow,
    mailroom: Mailroom | None = None,
) -> InboundServer:
    """The inbound server for one configuration and database (not started); replies go
    through ``mailroom``, else the settings' own."""
    return InboundServer(settings, engine, clock=clock, mailroom=mailroom)
