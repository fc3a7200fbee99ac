"""Fetching one URL within bounds, whatever the server does.

The decoded body never grows past ``[ingest] max_bytes`` (each compressed chunk is inflated only
as far as the room left, and encodings stacked on one another are refused), one deadline covers
the whole fetch (connecting, every redirect, every read), and redirects are followed by hand: a
few at most, only to http(s), and never from a public host into a private network.
"""

from __future__ import annotations

import dataclasses
import io
import ipaddress
import socket
import time
import zlib
from collections.abc import Callable, Iterator, Sequence

import httpx

from digest.config import IngestSettings
from digest.errors import SourceError

MAX_REDIRECTS = 5
ACCEPT_ENCODING = "gzip, deflate"
_PIECE = 1 << 20  # inflated a megabyte at a time, so that peak memory stays near the cap

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], Sequence[Address]]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Fetched:
    """What one fetch brought back."""

    data: bytes | None  # None: not modified since the last fetch
    content_type: str | None = None
    etag: str | None = None
    last_modified: str | None = None


def system_addresses(host: str) -> list[Address]:
    """The addresses ``host`` resolves to; none when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    found: list[Address] = []
    for info in infos:
        try:
            address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        except ValueError:
            continue
        if address not in found:
            found.append(address)
    return found


def is_public(address: Address) -> bool:
    """True for an address on the public internet (not loopback, private, link-local, …)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is loopback, whatever ipaddress says
    return address.is_global


def crosses_into_private(origin: Sequence[Address], target: Sequence[Address]) -> bool:
    """True when a redirect from a host with ``origin`` addresses to one with ``target`` ones
    would lead from the public internet into a private network.

    The origin counts as private only when it has addresses and every one is private: a public
    host cannot make itself "private" by also listing 127.0.0.1, or by not resolving when asked.
    An operator's own feed on a private network may redirect within it.
    """
    origin_private = bool(origin) and not any(is_public(a) for a in origin)
    return not origin_private and any(not is_public(a) for a in target)


class _Deadline:
    """One time limit for a whole fetch; each wait inside it is cut to the time left."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def passed(self) -> bool:
        return self.left() <= 0

    def check(self, url: str) -> None:
        if self.passed():
            raise SourceError(self.message(url))

    def message(self, url: str) -> str:
        return f"took longer than the {self.seconds:g}-second deadline fetching {url}"


class _Decoder:
    """A Content-Encoding decoder that inflates no more than it is given room for."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self.started = False
        self._z = self._new()

    def _new(self) -> zlib._Decompress:
        if self.encoding == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        return zlib.decompressobj(zlib.MAX_WBITS)  # deflate: zlib-wrapped, or raw (see _inflate)

    def _inflate(self, data: bytes, most: int) -> bytes:
        first, self.started = not self.started, True
        try:
            return self._z.decompress(data, most)
        except zlib.error:
            if not (first and self.encoding == "deflate"):
                raise
            # Servers send "deflate" both zlib-wrapped (as the RFC says) and raw.
            self._z = zlib.decompressobj(-zlib.MAX_WBITS)
            return self._z.decompress(data, most)

    def decode(self, data: bytes, room: int) -> Iterator[bytes]:
        """Inflate ``data`` a piece at a time, stopping once ``room`` bytes are out (reaching it
        means the body is too big)."""
        pending = data
        while room > 0:
            most = min(room, _PIECE)
            out = self._inflate(pending, most)
            room -= len(out)
            if out:
                yield out
            pending = self._z.unconsumed_tail
            # gzip allows several members back to back; anything else after the end is ignored.
            if self.encoding == "gzip" and self._z.eof and not pending:
                pending = self._z.unused_data
                if not pending.startswith(b"\x1f\x8b"):
                    return
                self._z = self._new()
            elif not pending and len(out) < most:
                return  # all in, all out (a full piece may leave output still inside zlib)


def _decoder(header: str | None, *, url: str) -> _Decoder | None:
    """The decoder for a Content-Encoding header; refuses stacked and unknown encodings."""
    codings = [c.strip().lower() for c in (header or "").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return None
    if len(codings) > 1:
        # Each layer multiplies what a few bytes can inflate to; no honest feed needs two.
        raise SourceError(f"{url}: stacked content encodings are refused: {header!r}"[:500])
    coding = {"x-gzip": "gzip"}.get(codings[0], codings[0])
    if coding not in ("gzip", "deflate"):
        raise SourceError(f"{url}: unsupported content encoding {codings[0]!r}"[:500])
    return _Decoder(coding)


def _read_body(response: httpx.Response, *, url: str, limit: int, deadline: _Deadline) -> bytes:
    """The body, decoded, refused as soon as it (or what was sent for it) passes ``limit``."""
    decoder = _decoder(response.headers.get("Content-Encoding"), url=url)
    too_large = f"{url} is larger than the {limit:,}-byte limit"
    if decoder is not None:
        too_large += " once decompressed"
    body = io.BytesIO()
    received = 0
    try:
        for raw in response.iter_raw():  # as received: a chunk size would wait to fill it
            deadline.check(url)
            received += len(raw)
            if received > limit:
                raise SourceError(too_large)
            pieces = [raw] if decoder is None else decoder.decode(raw, limit + 1 - body.tell())
            for piece in pieces:
                body.write(piece)
            if body.tell() > limit:
                raise SourceError(too_large)
    except zlib.error as e:
        raise SourceError(f"{url}: the compressed body is corrupt: {e}") from e
    deadline.check(url)
    return body.getvalue()


def _redirect_target(response: httpx.Response, *, url: str, first: str, resolve: Resolver) -> str:
    """Where a redirect leads, if digest may follow it."""
    target = response.next_request.url if response.next_request is not None else None
    if target is None:
        raise SourceError(f"HTTP {response.status_code} without a usable Location from {url}")
    shown = str(target)[:300]
    if target.scheme not in ("http", "https"):
        raise SourceError(f"{first}: refused a redirect to a non-http(s) URL: {shown}")
    origin = resolve(response.url.host)
    if crosses_into_private(origin, resolve(target.host)):
        # A feed URL must not become a way to reach services inside the operator's network.
        raise SourceError(
            f"{first}: refused a redirect from a public host to a private address: {shown}"
        )
    return str(target)


def fetch_url(
    url: str,
    *,
    settings: IngestSettings,
    etag: str | None = None,
    last_modified: str | None = None,
    client: httpx.Client | None = None,
    resolve: Resolver = system_addresses,
) -> Fetched:
    """A conditional GET of ``url`` within the size cap, the deadline and the redirect rules."""
    deadline = _Deadline(settings.deadline)
    headers = {
        "User-Agent": settings.user_agent,
        "Accept": "*/*",
        "Accept-Encoding": ACCEPT_ENCODING,
    }
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    own = client is None
    http = client or httpx.Client(follow_redirects=False)
    first = url
    try:
        for _ in range(MAX_REDIRECTS + 1):
            deadline.check(first)
            request = http.build_request(
                "GET", url, headers=headers, timeout=min(settings.timeout, deadline.left())
            )
            response = http.send(request, stream=True, follow_redirects=False)
            try:
                if response.has_redirect_location:
                    url = _redirect_target(response, url=url, first=first, resolve=resolve)
                    continue
                return _answer(
                    response,
                    url=url,
                    settings=settings,
                    deadline=deadline,
                    conditional=(etag, last_modified),
                )
            finally:
                response.close()
        raise SourceError(f"{first}: more than {MAX_REDIRECTS} redirects")
    except httpx.TimeoutException as e:
        if deadline.passed():
            raise SourceError(deadline.message(first)) from e
        raise SourceError(f"timed out after {settings.timeout:g} s fetching {url}") from e
    except (httpx.HTTPError, httpx.InvalidURL) as e:
        # InvalidURL: also a Location that cannot be made absolute ("data:,x").
        raise SourceError(f"cannot fetch {url}: {e}") from e
    finally:
        if own:
            http.close()


def _answer(
    response: httpx.Response,
    *,
    url: str,
    settings: IngestSettings,
    deadline: _Deadline,
    conditional: tuple[str | None, str | None],
) -> Fetched:
    if response.status_code == 304:
        return Fetched(data=None, etag=conditional[0], last_modified=conditional[1])
    if response.status_code >= 300:
        raise SourceError(f"HTTP {response.status_code} {response.reason_phrase} from {url}")
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > settings.max_bytes:
        raise SourceError(f"{url} is larger than the {settings.max_bytes:,}-byte limit")
    return Fetched(
        data=_read_body(response, url=url, limit=settings.max_bytes, deadline=deadline),
        content_type=response.headers.get("Content-Type"),
        etag=response.headers.get("ETag"),
        last_modified=response.headers.get("Last-Modified"),
    )
