"""A relay that cannot be used (down, no STARTTLS, a refused login) stops the run at once and
burns nobody's attempts; `digest send` and `digest run` say so in their exit codes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from click.testing import CliRunner
from conftest import RecordingHandler
from sqlmodel import Session, select

from digest import subscriptions
from digest.cli import EXIT_FAILED, EXIT_INCOMPLETE, EXIT_STOPPED, main
from digest.db import make_engine
from digest.ingest import SourceSpec, ingest
from digest.models import Delivery
from digest.sink import free_port

READERS = [f"reader{i}@example.org" for i in range(4)]
# The login relay speaks plain SMTP on loopback, which aiosmtpd warns about.
PLAIN_AUTH = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
PASSWORD = "right horse battery staple"


class Relay(RecordingHandler):
    """A relay that refuses one recipient (550) and may drop every message's data."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse: set[str] = set()
        self.drop = False

    async def handle_RCPT(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.drop:
            server.transport.close()
            await asyncio.sleep(0)
            return "451 dropped"
        return await super().handle_DATA(server, session, envelope)


def _check_login(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    ok = isinstance(data, LoginPassword) and data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def relay() -> Iterator[tuple[int, Relay]]:
    handler = Relay()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller.port, handler
    controller.stop()


@pytest.fixture
def login_relay() -> Iterator[tuple[int, Relay]]:
    """A relay that wants a login (over plain SMTP: the test's loopback, security = "none")."""
    handler = Relay()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=_check_login,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    yield controller.port, handler
    controller.stop()


def _config(tmp_path: Path, shared: Path, smtp: str) -> Path:
    """A configuration with ``[smtp]`` as given, and the seed papers and four readers."""
    config = tmp_path / "config.toml"
    config.write_text(
        f"""[database]
url = "sqlite:///{tmp_path}/subscribers.db"
[sink]
maildir = "{tmp_path}/mail"
[smtp]
timeout = 5.0
{smtp}
[[sources]]
name = "seed"
location = "{shared / "seeds/daily-papers-a.txt"}"
""",
        encoding="utf-8",
    )
    engine = make_engine(f"sqlite:///{tmp_path}/subscribers.db")
    ingest(
        engine,
        _settings_for(config),
        [SourceSpec(name="seed", location=str(shared / "seeds/daily-papers-a.txt"))],
    )
    for email in READERS:
        subscriptions.add(engine, email, subscriptions.make_interests("quantization"))
    return config


def _settings_for(config: Path) -> Any:
    from digest.config import load_settings

    return load_settings(config, env={"DIGEST_SECRET_KEY": "k" * 40})


def _digest(config: Path, *args: str, password: str = "") -> tuple[int, str]:
    env = {"DIGEST_SECRET_KEY": "k" * 40, "DIGEST_SMTP_PASSWORD": password}
    result = CliRunner().invoke(main, ["--config", str(config), *args], env=env)
    return result.exit_code, result.output


def _rows(tmp_path: Path) -> list[Delivery]:
    with Session(make_engine(f"sqlite:///{tmp_path}/subscribers.db")) as session:
        return list(session.exec(select(Delivery)).all())


def _untouched(tmp_path: Path) -> bool:
    rows = _rows(tmp_path)
    return len(rows) == len(READERS) and all(
        d.status == "queued" and d.attempts == 0 and d.last_error is None for d in rows
    )


def test_a_relay_that_is_down_stops_the_run_at_once(tmp_path: Path, shared: Path) -> None:
    config = _config(tmp_path, shared, f'host = "127.0.0.1"\nport = {free_port()}')
    code, out = _digest(config, "send")
    assert code == EXIT_STOPPED
    assert "cannot connect to SMTP" in out and "back to the queue" in out
    assert _untouched(tmp_path)


@PLAIN_AUTH
def test_a_refused_login_stops_the_run_and_names_the_settings(
    tmp_path: Path, shared: Path, login_relay: tuple[int, Relay]
) -> None:
    port, handler = login_relay
    config = _config(
        tmp_path,
        shared,
        f'host = "127.0.0.1"\nport = {port}\nsecurity = "none"\nusername = "digest"',
    )
    code, out = _digest(config, "send", password="wrong")
    assert code == EXIT_STOPPED
    assert "535" in out and "[smtp] username" in out and "DIGEST_SMTP_PASSWORD" in out
    assert _untouched(tmp_path) and not handler.envelopes
    # with the right password, the same run sends everything
    code, out = _digest(config, "send", password=PASSWORD)
    assert code == 0, out
    assert sorted(r for e in handler.envelopes for r in e.rcpt_tos) == READERS


@PLAIN_AUTH
def test_a_relay_that_wants_a_login_we_do_not_give_stops_the_run(
    tmp_path: Path, shared: Path, login_relay: tuple[int, Relay]
) -> None:
    port, handler = login_relay
    config = _config(tmp_path, shared, f'host = "127.0.0.1"\nport = {port}\nsecurity = "none"')
    code, out = _digest(config, "send")
    assert code == EXIT_STOPPED
    assert "530" in out and "[smtp] username" in out and "DIGEST_SMTP_PASSWORD" in out
    assert _untouched(tmp_path) and not handler.envelopes


def test_starttls_is_required_when_configured(
    tmp_path: Path, shared: Path, relay: tuple[int, Relay]
) -> None:
    """A relay without STARTTLS gets no mail in clear, password or not."""
    port, handler = relay
    config = _config(tmp_path, shared, f'host = "127.0.0.1"\nport = {port}\nsecurity = "starttls"')
    code, out = _digest(config, "send")
    assert code == EXIT_STOPPED
    assert "offers no STARTTLS" in out and 'security = "none"' in out
    assert _untouched(tmp_path) and not handler.envelopes


def test_exit_codes_of_send_and_run(tmp_path: Path, shared: Path, relay: tuple[int, Relay]) -> None:
    port, handler = relay
    handler.refuse = {READERS[0]}
    config = _config(tmp_path, shared, f'host = "127.0.0.1"\nport = {port}\nsecurity = "none"')
    code, out = _digest(config, "send")
    assert code == EXIT_INCOMPLETE, out  # one reader bounced
    assert "1 bounced" in out
    code, out = _digest(config, "send")
    assert code == 0, out  # nothing due: nothing failed
    code, out = _digest(config, "run")
    assert code == 0, out  # every source read, nothing due
    broken = config.read_text(encoding="utf-8").replace(
        str(shared / "seeds/daily-papers-a.txt"), str(tmp_path / "missing.txt")
    )
    config.write_text(broken, encoding="utf-8")
    code, out = _digest(config, "run")
    assert code == EXIT_FAILED, out  # its one source failed: nothing was read


def test_messages_dropped_mid_data_burn_attempts_until_the_run_stops(
    tmp_path: Path, shared: Path, relay: tuple[int, Relay]
) -> None:
    """A drop in the middle of a message may have delivered it: that counts as an attempt, and
    three in a row stop the run."""
    port, handler = relay
    handler.drop = True
    config = _config(
        tmp_path,
        shared,
        f'host = "127.0.0.1"\nport = {port}\nsecurity = "none"\nconnections = 1',
    )
    code, out = _digest(config, "send")
    assert code == EXIT_STOPPED, out
    statuses = sorted((d.status, d.attempts) for d in _rows(tmp_path))
    assert statuses == [("failed", 1)] * 3 + [("queued", 0)]
