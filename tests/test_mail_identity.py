"""What a message says about itself: Message-IDs unique across installations and databases yet
stable across retries, the name digest greets a relay with, bulk only for digests."""

from __future__ import annotations

import dataclasses
import socket
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from conftest import RecordingHandler

from digest import delivery, subscriptions
from digest.config import Settings, load_settings
from digest.db import make_engine
from digest.ingest import SourceSpec, ingest
from digest.render import Renderer
from digest.sink import free_port


class GreetingRecorder(RecordingHandler):
    """Keeps the name each client greeted with (EHLO)."""

    def __init__(self) -> None:
        super().__init__()
        self.greetings: list[str] = []

    async def handle_EHLO(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self.greetings.append(hostname)
        session.host_name = hostname
        return responses


def _installation(tmp_path: Path, name: str, secret: str, port: int) -> Settings:
    """A fresh installation: its own database and secret, relaying to ``port``."""
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    config = folder / "config.toml"
    config.write_text(
        f"""[database]
url = "sqlite:///{folder}/subscribers.db"
[smtp]
host = "127.0.0.1"
port = {port}
security = "none"
from_address = "digest@example.org"
""",
        encoding="utf-8",
    )
    return load_settings(config, env={"DIGEST_SECRET_KEY": secret}, base_dir=folder)


def _send_one(settings: Settings, shared: Path) -> str:
    """Ingest, subscribe one reader, send: the Message-ID of the digest that went."""
    engine = make_engine(settings.database.url)
    ingest(
        engine, settings, [SourceSpec(name="a", location=str(shared / "seeds/daily-papers-a.txt"))]
    )
    subscriptions.add(engine, "ada@example.org", subscriptions.make_interests("quantization"))
    report = delivery.send(engine, settings, renderer=Renderer.create())
    assert report.sent == 1, report.errors
    with engine.connect() as conn:
        [(message_id,)] = conn.exec_driver_sql("SELECT message_id FROM delivery").all()
    engine.dispose()
    return str(message_id)


def test_message_ids_differ_across_installations_and_databases(
    tmp_path: Path, shared: Path, smtp_server: Any
) -> None:
    controller, handler = smtp_server
    one = _send_one(_installation(tmp_path, "one", "a" * 40, controller.port), shared)
    other = _send_one(_installation(tmp_path, "other", "b" * 40, controller.port), shared)
    # the same installation after its database was reset: the same secret, delivery 1 again
    reset = _installation(tmp_path, "one", "a" * 40, controller.port)
    Path(reset.database.url.removeprefix("sqlite:///")).unlink()
    again = _send_one(reset, shared)
    assert len({one, other, again}) == 3
    sent = [
        str(message_from_bytes(e.original_content, policy=policy.default)["Message-ID"])
        for e in handler.envelopes
    ]
    assert sent == [one, other, again]
    for mid in sent:  # each the same delivery of the same edition, told apart
        assert mid.startswith("<digest.") and mid.endswith("@example.org>")


def test_the_relay_is_greeted_with_the_host_name_or_the_configured_one(
    tmp_path: Path, shared: Path
) -> None:
    handler = GreetingRecorder()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        settings = _installation(tmp_path, "one", "a" * 40, controller.port)
        _send_one(settings, shared)
        named = dataclasses.replace(
            settings, smtp=dataclasses.replace(settings.smtp, ehlo_name="mail.example.org")
        )
        engine = make_engine(named.database.url)
        subscriptions.add(engine, "grace@example.org", subscriptions.make_interests("quantization"))
        assert delivery.send(engine, named, renderer=Renderer.create()).sent == 1
    finally:
        controller.stop()
    default, configured = handler.greetings
    assert not default.startswith("[")  # smtplib's own default is an IP literal here
    assert default in (socket.getfqdn(), socket.gethostname())
    assert configured == "mail.example.org"


def test_digests_are_bulk_mail(tmp_path: Path, shared: Path, smtp_server: Any) -> None:
    controller, handler = smtp_server
    _send_one(_installation(tmp_path, "one", "a" * 40, controller.port), shared)
    [envelope] = handler.envelopes
    assert b"\r\nPrecedence: bulk\r\n" in envelope.original_content
