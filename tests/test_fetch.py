"""Fetching from hostile servers: real loopback HTTP servers that compress, trickle and redirect."""

from __future__ import annotations

import dataclasses
import gzip
import ipaddress
import json
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Iterable, Iterator, Sequence

import pytest
from conftest import FeedServer, Route

from digest.config import IngestSettings
from digest.errors import SourceError
from digest.fetch import (
    MAX_REDIRECTS,
    Address,
    crosses_into_private,
    fetch_url,
    is_public,
    system_addresses,
)

MB = 1 << 20
FEED = b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title></channel></rss>'


def _gzip_stream(chunks: Iterable[bytes]) -> Iterator[bytes]:
    packer = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    for chunk in chunks:
        out = packer.compress(chunk)
        if out:
            yield out
    yield packer.flush()


def _zero_bomb(megabytes: int) -> bytes:
    """gzip of ``megabytes`` MB of zeros, made a megabyte at a time (the test stays small)."""
    zeros = bytes(MB)
    return b"".join(_gzip_stream(zeros for _ in range(megabytes)))


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    """A 200 MB gzip bomb (about 200 kB), and the same gzipped again (about 500 bytes)."""
    single = _zero_bomb(200)
    return {"single": single, "double": b"".join(_gzip_stream([single]))}


def ingest_settings(**changes: object) -> IngestSettings:
    return dataclasses.replace(IngestSettings(), **changes)  # type: ignore[arg-type]


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


# --- compression ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", gzip.compress(FEED)),
        ("x-gzip", gzip.compress(FEED)),
        ("GZIP", gzip.compress(FEED[:40]) + gzip.compress(FEED[40:])),  # two gzip members
        ("deflate", zlib.compress(FEED)),
        ("deflate", _raw_deflate(FEED)),
        ("identity", FEED),
        ("gzip, identity", gzip.compress(FEED)),
    ],
)
def test_compressed_bodies_are_decoded(feed_server: FeedServer, encoding: str, body: bytes) -> None:
    feed_server.routes["/feed"] = Route(body=body, headers={"Content-Encoding": encoding})
    fetched = fetch_url(feed_server.url("/feed"), settings=IngestSettings())
    assert fetched.data == FEED
    assert feed_server.requests[0]["accept-encoding"] == "gzip, deflate"


@pytest.mark.parametrize(
    ("encoding", "message"),
    [
        ("gzip, gzip", "stacked content encodings"),
        ("deflate, gzip", "stacked content encodings"),
        ("br", "unsupported content encoding 'br'"),
        ("compress", "unsupported content encoding"),
    ],
)
def test_stacked_and_unknown_encodings_are_refused(
    feed_server: FeedServer, encoding: str, message: str
) -> None:
    feed_server.routes["/feed"] = Route(
        body=gzip.compress(gzip.compress(FEED)), headers={"Content-Encoding": encoding}
    )
    with pytest.raises(SourceError, match=message):
        fetch_url(feed_server.url("/feed"), settings=IngestSettings())


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_body_up_to_the_cap_is_read_whole(
    feed_server: FeedServer, encoding: str
) -> None:
    # Several megabytes inflated a piece at a time, with a piece ending exactly at a chunk's end.
    body = (FEED * 40_000)[: 3 * MB]
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    feed_server.routes["/feed"] = Route(body=packed, headers={"Content-Encoding": encoding})
    exact = fetch_url(feed_server.url("/feed"), settings=ingest_settings(max_bytes=3 * MB))
    assert exact.data == body
    with pytest.raises(SourceError, match="limit once decompressed"):
        fetch_url(feed_server.url("/feed"), settings=ingest_settings(max_bytes=3 * MB - 1))


def test_corrupt_compressed_body_is_a_source_error(feed_server: FeedServer) -> None:
    body = bytearray(gzip.compress(FEED * 50))
    body[30:40] = b"\xff" * 10
    feed_server.routes["/feed"] = Route(body=bytes(body), headers={"Content-Encoding": "gzip"})
    with pytest.raises(SourceError, match="corrupt"):
        fetch_url(feed_server.url("/feed"), settings=IngestSettings())


_PROBE = textwrap.dedent(
    """
    import json, resource, sys
    from digest.config import IngestSettings
    from digest.errors import SourceError
    from digest.fetch import fetch_url
    settings = IngestSettings(max_bytes=int(sys.argv[1]))
    fetch_url(sys.argv[2], settings=settings)  # imports, TLS context and decoder warmed up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        fetch_url(sys.argv[3], settings=settings)
        error = None
    except SourceError as e:
        error = str(e)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"error": error, "growth": (after - before) * 1024}))
    """
)


def _peak_growth(feed_server: FeedServer, path: str, *, cap: int) -> tuple[str | None, int]:
    """Fetch ``path`` in a fresh process; its error and how far its peak RSS grew doing so."""
    feed_server.routes["/warm"] = Route(
        body=gzip.compress(FEED * 100), headers={"Content-Encoding": "gzip"}
    )
    run = subprocess.run(
        [sys.executable, "-c", _PROBE, str(cap), feed_server.url("/warm"), feed_server.url(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    out = json.loads(run.stdout)
    return out["error"], int(out["growth"])


@pytest.mark.parametrize(
    ("bomb", "encoding", "message"),
    [
        ("single", "gzip", "larger than the 5,242,880-byte limit once decompressed"),
        ("double", "gzip, gzip", "stacked content encodings"),
    ],
)
def test_compression_bomb_keeps_memory_near_the_cap(
    feed_server: FeedServer, bombs: dict[str, bytes], bomb: str, encoding: str, message: str
) -> None:
    # 200 MB once inflated; the fetch must stop near the 5 MB cap, not decode first and count after.
    feed_server.routes["/bomb"] = Route(body=bombs[bomb], headers={"Content-Encoding": encoding})
    cap = 5 * MB
    error, growth = _peak_growth(feed_server, "/bomb", cap=cap)
    assert error is not None and message in error
    assert growth < 4 * cap


# --- the deadline -----------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_deadline_bounds_a_trickling_server(feed_server: FeedServer) -> None:
    # A byte every 0.2 s never trips the 3 s timeout between reads; the deadline ends it.
    feed_server.routes["/slow"] = Route(body=FEED * 10, trickle=0.2)
    with pytest.raises(SourceError, match="took longer than the 1-second deadline"):
        fetch_url(feed_server.url("/slow"), settings=ingest_settings(timeout=3.0, deadline=1.0))


@pytest.mark.timeout(30)
def test_deadline_covers_a_server_that_answers_late(feed_server: FeedServer) -> None:
    feed_server.routes["/late"] = Route(body=FEED, delay=5.0)
    with pytest.raises(SourceError, match="took longer than the 1-second deadline"):
        fetch_url(feed_server.url("/late"), settings=ingest_settings(timeout=3.0, deadline=1.0))


def test_timeout_is_still_each_wait(feed_server: FeedServer) -> None:
    feed_server.routes["/late"] = Route(body=FEED, delay=2.0)
    with pytest.raises(SourceError, match="timed out after 0.5 s"):
        fetch_url(feed_server.url("/late"), settings=ingest_settings(timeout=0.5, deadline=30.0))


# --- redirects --------------------------------------------------------------------------------


def _redirect(location: str, status: int = 302) -> Route:
    return Route(body=b"", status=status, headers={"Location": location})


def test_redirects_are_followed(feed_server: FeedServer) -> None:
    feed_server.routes["/old"] = _redirect("/moved", status=301)
    feed_server.routes["/moved"] = _redirect(feed_server.url("/feed"), status=308)
    feed_server.routes["/feed"] = Route(body=FEED, etag='"v1"')
    fetched = fetch_url(feed_server.url("/old"), settings=IngestSettings())
    assert fetched.data == FEED and fetched.etag == '"v1"'
    assert [r["path"] for r in feed_server.requests] == ["/old", "/moved", "/feed"]


def test_redirects_are_limited(feed_server: FeedServer) -> None:
    for i in range(MAX_REDIRECTS + 1):
        feed_server.routes[f"/hop{i}"] = _redirect(f"/hop{i + 1}")
    feed_server.routes[f"/hop{MAX_REDIRECTS}"] = Route(body=FEED)
    assert fetch_url(feed_server.url("/hop0"), settings=IngestSettings()).data == FEED

    feed_server.routes["/loop"] = _redirect("/loop")
    with pytest.raises(SourceError, match=f"more than {MAX_REDIRECTS} redirects"):
        fetch_url(feed_server.url("/loop"), settings=IngestSettings())


@pytest.mark.parametrize(
    "location",
    ["file:///etc/passwd", "ftp://127.0.0.1/feed.xml", "gopher://127.0.0.1:70/", "data:/,x"],
)
def test_redirects_only_to_http(feed_server: FeedServer, location: str) -> None:
    feed_server.routes["/feed"] = _redirect(location)
    with pytest.raises(SourceError, match="refused a redirect to a non-http"):
        fetch_url(feed_server.url("/feed"), settings=IngestSettings())


def _resolver(table: dict[str, str]) -> object:
    def resolve(host: str) -> Sequence[Address]:
        return [ipaddress.ip_address(a) for a in table[host].split()] if table[host] else []

    return resolve


def test_redirect_from_public_host_to_private_address_is_refused(feed_server: FeedServer) -> None:
    # The server is on loopback; the injected resolver says the feed's host is public (as it is
    # for a real feed on the internet) and the redirect's target is a loopback name.
    feed_server.routes["/feed"] = _redirect("http://internal.test:8080/admin")
    resolve = _resolver({"127.0.0.1": "93.184.215.14", "internal.test": "127.0.0.1"})
    with pytest.raises(SourceError, match="redirect from a public host to a private address"):
        fetch_url(feed_server.url("/feed"), settings=IngestSettings(), resolve=resolve)  # type: ignore[arg-type]
    assert [r["path"] for r in feed_server.requests] == ["/feed"]


def test_operator_feed_on_loopback_may_redirect_on_loopback(feed_server: FeedServer) -> None:
    port = feed_server.httpd.server_address[1]
    feed_server.routes["/feed"] = _redirect(f"http://localhost:{port}/moved")
    feed_server.routes["/moved"] = Route(body=FEED)
    # The system resolver: 127.0.0.1 and localhost are both loopback.
    assert fetch_url(feed_server.url("/feed"), settings=IngestSettings()).data == FEED


@pytest.mark.parametrize(
    ("origin", "target", "crosses"),
    [
        ("93.184.215.14", "127.0.0.1", True),
        ("93.184.215.14", "10.0.0.5", True),
        ("93.184.215.14", "192.168.1.1", True),
        ("93.184.215.14", "169.254.169.254", True),  # cloud metadata
        ("93.184.215.14", "::1", True),
        ("93.184.215.14", "fd00::1", True),
        ("93.184.215.14", "fe80::1", True),
        ("93.184.215.14", "::ffff:127.0.0.1", True),
        ("93.184.215.14", "0.0.0.0", True),
        ("93.184.215.14", "151.101.1.69 10.1.2.3", True),  # any private address counts
        ("93.184.215.14", "151.101.1.69", False),
        ("93.184.215.14", "", False),  # does not resolve: the connect fails on its own
        ("127.0.0.1", "127.0.0.1", False),  # the operator's own feed on loopback
        ("10.0.0.2", "192.168.1.1", False),
        ("127.0.0.1 ::1", "10.0.0.5", False),
        ("127.0.0.1", "151.101.1.69", False),
        ("127.0.0.1 93.184.215.14", "127.0.0.1", True),  # a public host listing loopback too
        ("", "127.0.0.1", True),  # an origin that stopped resolving counts as public
    ],
)
def test_crosses_into_private(origin: str, target: str, crosses: bool) -> None:
    def addresses(text: str) -> list[Address]:
        return [ipaddress.ip_address(a) for a in text.split()]

    assert crosses_into_private(addresses(origin), addresses(target)) is crosses


def test_is_public_and_system_addresses() -> None:
    assert is_public(ipaddress.ip_address("151.101.1.69"))
    assert not is_public(ipaddress.ip_address("::ffff:10.0.0.1"))
    assert ipaddress.ip_address("127.0.0.1") in system_addresses("localhost")
    assert system_addresses("no-such-host.invalid") == []


def test_unusable_location_is_a_source_error(feed_server: FeedServer) -> None:
    feed_server.routes["/feed"] = _redirect("data:,hello")
    with pytest.raises(SourceError, match="cannot fetch"):
        fetch_url(feed_server.url("/feed"), settings=IngestSettings())
