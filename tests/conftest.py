"""Shared fixtures: a real SQLite file per test, settings built for it, the shared data folder."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from digest.config import Settings, load_settings
from digest.sink import free_port

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


@pytest.fixture(autouse=True)
def dispose_engines() -> Iterator[None]:
    """Dispose every engine that connected during the test once the test is over.

    A test drops its engines with their pooled connections still open; left to the garbage
    collector, each would warn (Python 3.13 warns of every unclosed sqlite3 connection) in
    whatever test happens to be running then. SQLAlchemy's engine_connect event, listened on
    the Engine class, names every engine however it was made (make_engine, create_engine, a
    fixture, a helper). The package disposes the engines it makes itself (test_cli checks
    that the commands do).
    """
    engines: dict[int, Engine] = {}

    def seen(conn: Connection) -> None:
        engines.setdefault(id(conn.engine), conn.engine)

    event.listen(Engine, "engine_connect", seen)
    try:
        yield
    finally:
        event.remove(Engine, "engine_connect", seen)
        for engine in engines.values():
            engine.dispose()


@pytest.fixture
def shared() -> Path:
    """The ../shared folder beside the project; tests that need it skip when it is absent."""
    if not (SHARED / "seeds").is_dir():
        pytest.skip("../shared (seeds and fixtures) is not beside the project root")
    return SHARED


@dataclasses.dataclass
class Route:
    """What the test HTTP server answers on one path."""

    body: bytes
    content_type: str = "application/xml"
    etag: str | None = None
    last_modified: str | None = None
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = dataclasses.field(default_factory=dict)  # Location, Content-Encoding
    trickle: float = 0.0  # seconds between bytes: the body is sent one byte at a time


class FeedServer:
    """A real HTTP server on loopback serving recorded feeds, honouring conditional GET."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[dict[str, str]] = []
        self.stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                server.requests.append(
                    {"path": self.path, **{k.lower(): v for k, v in self.headers.items()}}
                )
                route = server.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                if route.delay:
                    threading.Event().wait(route.delay)
                inm = self.headers.get("If-None-Match")
                ims = self.headers.get("If-Modified-Since")
                if (route.etag and inm == route.etag) or (
                    route.last_modified and not route.etag and ims == route.last_modified
                ):
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(route.body)))
                if route.etag:
                    self.send_header("ETag", route.etag)
                if route.last_modified:
                    self.send_header("Last-Modified", route.last_modified)
                for name, value in route.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    if not route.trickle:
                        self.wfile.write(route.body)
                        return
                    for i in range(len(route.body)):
                        if server.stopping.wait(route.trickle):
                            return
                        self.wfile.write(route.body[i : i + 1])
                        self.wfile.flush()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    """A loopback HTTP server; add Routes to ``.routes``."""
    server = FeedServer()
    server.thread.start()
    yield server
    server.stopping.set()
    server.httpd.shutdown()
    server.httpd.server_close()


class RecordingHandler:
    """An aiosmtpd handler that keeps every envelope it accepts."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        with self.lock:
            self.envelopes.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[tuple[Controller, RecordingHandler]]:
    """A real aiosmtpd server on a free loopback port that records what it receives."""
    handler = RecordingHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, handler
    controller.stop()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for a fresh SQLite file and Maildir under tmp_path, with no configured sources."""
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[database]
url = "sqlite:///{tmp_path}/subscribers.db"
[sink]
maildir = "{tmp_path}/mail"
[digest]
previews_dir = "{tmp_path}/previews"
[site]
base_url = "https://digest.example.org"
""",
        encoding="utf-8",
    )
    return load_settings(
        config, env={"DIGEST_SECRET_KEY": "test-secret-" + "x" * 32}, base_dir=tmp_path
    )


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh database on the PostgreSQL that .ci/run starts (DIGEST_TEST_POSTGRES_URL).

    Skips when no server is configured, unless DIGEST_REQUIRE_POSTGRES=1 (as in CI).
    """
    import os
    import uuid

    from sqlalchemy import create_engine, text

    base = os.environ.get("DIGEST_TEST_POSTGRES_URL")
    if not base:
        if os.environ.get("DIGEST_REQUIRE_POSTGRES") == "1":
            pytest.fail("DIGEST_REQUIRE_POSTGRES=1 but DIGEST_TEST_POSTGRES_URL is not set")
        pytest.skip('no PostgreSQL: run `eval "$(.ci/postgres)"` to start one (CI does)')
    name = f"digest_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.rsplit("/", 1)[0] + "/" + name
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
