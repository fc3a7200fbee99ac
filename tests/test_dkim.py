"""DKIM: with a key configured, every digest is signed, List-Unsubscribe headers included."""

from __future__ import annotations

import base64
import dataclasses
import re
import subprocess
from pathlib import Path
from typing import Any

import dkim
import pytest

from digest import outbox, subscriptions
from digest.config import Settings
from digest.db import make_engine
from digest.ingest import SourceSpec, ingest
from digest.render import Renderer


@pytest.fixture
def dkim_key(tmp_path: Path) -> tuple[Path, bytes]:
    """A fresh 2048-bit RSA key (PEM) and its public half as a DNS TXT record."""
    key = tmp_path / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    der = subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    return key, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def test_digests_are_signed_and_verify(
    settings: Settings, shared: Path, smtp_server: Any, dkim_key: tuple[Path, bytes]
) -> None:
    controller, handler = smtp_server
    key, record = dkim_key
    settings = dataclasses.replace(
        settings,
        smtp=dataclasses.replace(
            settings.smtp, host="127.0.0.1", port=controller.port, security="none"
        ),
        dkim=dataclasses.replace(
            settings.dkim, key_file=str(key), selector="mail", domain="example.org"
        ),
    )
    engine = make_engine(settings.database.url)
    ingest(
        engine, settings, [SourceSpec(name="a", location=str(shared / "seeds/daily-papers-a.txt"))]
    )
    subscriptions.add(engine, "ada@example.org", subscriptions.make_interests("quantization"))
    assert outbox.send(engine, settings, renderer=Renderer.create()).sent == 1
    [envelope] = handler.envelopes
    raw: bytes = envelope.original_content
    assert raw.startswith(b"DKIM-Signature:")
    signed = re.search(
        rb"h=([^;]+);", raw.split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b"").replace(b" ", b"")
    )
    assert signed is not None
    covered = {h.lower() for h in signed[1].split(b":")}
    assert {
        b"from",
        b"subject",
        b"list-unsubscribe",
        b"list-unsubscribe-post",
        b"message-id",
    } <= covered

    def dns(name: bytes, timeout: int = 5) -> bytes:
        # The receiver's DNS lookup of mail._domainkey.example.org, answered from the test's key.
        return record if name == b"mail._domainkey.example.org." else b""

    assert dkim.verify(raw, dnsfunc=dns)
    tampered = raw.replace(
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: nothing"
    )
    assert tampered != raw and not dkim.verify(tampered, dnsfunc=dns)


def test_missing_key_file_is_a_clear_error(settings: Settings, tmp_path: Path) -> None:
    from digest.errors import ConfigError
    from digest.mailer import DkimSigner

    with pytest.raises(ConfigError, match="key_file"):
        DkimSigner.from_settings(
            dataclasses.replace(
                settings.dkim, key_file=str(tmp_path / "nope.pem"), selector="s", domain="d"
            )
        )
