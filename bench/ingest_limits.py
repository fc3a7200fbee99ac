"""What hostile sources cost: a compression bomb's peak memory, a 100,000-entry feed's CPU.

    .venv/bin/python bench/ingest_limits.py [--bomb-mb 800] [--entries 100000] [--runs 3]

1. A loopback server sends gzip bombs (``--bomb-mb`` MB of zeros, gzipped once and twice); a
   fresh process fetches each with digest's fetcher and, as the baseline, with httpx decoding
   the body itself (``iter_bytes``, the size checked after each decoded chunk), both with the
   default 20 MB cap. Printed: the peak RSS growth of the fetch and the error it ended with.
2. An RSS feed of ``--entries`` short items (under the 20 MB cap) is parsed with the default
   ``[ingest] max_entries`` (2,000), against feedparser reading every entry (what parsing cost
   before the cap). Printed: CPU seconds (median of ``--runs``; the baseline once).
3. A plain-text list just under the cap, read once (its shape is checked over the whole text,
   so it is not cut before it is read). Printed: CPU seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import statistics
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import feedparser

from digest.config import IngestSettings
from digest.resources import bundled_path
from digest.sources import parse_source

MB = 1 << 20

_PROBE = """
import json, resource, sys
import httpx
from digest.config import IngestSettings
from digest.resources import bundled_path
from digest.errors import SourceError
from digest.fetch import fetch_url

def naive(url, cap):
    size = 0
    with httpx.stream("GET", url) as response:
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > cap:
                raise SourceError(f"larger than the {cap:,}-byte limit")

how, warm, url = sys.argv[1], sys.argv[2], sys.argv[3]
settings = IngestSettings()
fetch = (lambda u: fetch_url(u, settings=settings)) if how == "digest" else (
    lambda u: naive(u, settings.max_bytes))
fetch(warm)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    fetch(url)
    error = None
except SourceError as e:
    error = str(e)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"error": error, "growth": (after - before) * 1024}))
"""


def _gzip(chunks: Iterator[bytes]) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return b"".join([*(packer.compress(c) for c in chunks), packer.flush()])


def _serve(routes: dict[str, tuple[bytes, str]]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            body, encoding = routes[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Encoding", encoding)
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def bomb(megabytes: int) -> None:
    """Peak RSS growth of one bomb fetch: digest's fetcher against httpx decoding the body."""
    zeros = bytes(MB)
    single = _gzip(zeros for _ in range(megabytes))
    double = _gzip(iter([single]))
    routes = {
        "/warm": (_gzip(iter([b"<rss/>" * 100])), "gzip"),
        "/single": (single, "gzip"),
        "/double": (double, "gzip, gzip"),
    }
    server = _serve(routes)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    print(f"bomb: {megabytes} MB of zeros; gzip {len(single):,} bytes, gzip twice {len(double):,}")
    print(f"cap: [ingest] max_bytes = {IngestSettings().max_bytes:,}")
    for path in ("/single", "/double"):
        for how in ("digest", "httpx iter_bytes"):
            run = subprocess.run(
                [sys.executable, "-c", _PROBE, how.split()[0], base + "/warm", base + path],
                capture_output=True,
                text=True,
                check=True,
            )
            out = json.loads(run.stdout)
            print(
                f"  {routes[path][1]:<11} {how:<17} peak RSS +{out['growth'] / 1e6:7.1f} MB"
                f"  ({out['error']})"
            )
    server.shutdown()


def _feed(entries: int) -> bytes:
    items = "".join(
        f"<item><title>Paper {i}: a study of things</title>"
        f"<link>https://example.org/p/{i}</link><description>Abstract {i}.</description></item>"
        for i in range(entries)
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
        f"{items}</channel></rss>"
    ).encode()


def big_feed(entries: int, runs: int) -> None:
    """CPU seconds to parse a feed of ``entries`` items: capped, and feedparser on them all."""
    data = _feed(entries)
    print(f"feed: {entries:,} items, {len(data):,} bytes")
    capped: list[float] = []
    for _ in range(runs):
        start = time.process_time()
        parsed = parse_source(data, location="bench")
        capped.append(time.process_time() - start)
    print(
        f"  digest, max_entries {len(parsed.papers):,} (cut {parsed.cut:,}): "
        f"{statistics.median(capped):.2f} CPU-s (median of {runs})"
    )
    start = time.process_time()
    everything = feedparser.parse(io.BytesIO(data))
    whole = time.process_time() - start
    print(f"  feedparser, all {len(everything.entries):,} entries: {whole:.2f} CPU-s (once)")
    print(f"  ratio: {whole / statistics.median(capped):.0f}x")


def big_text(size: int) -> None:
    """CPU seconds to read a plain-text list of about ``size`` bytes (checked whole, not cut)."""
    sample = bundled_path("sample-papers.txt").read_text(encoding="utf-8")
    lines = sample.split("\n\n")[2:]  # title and abstract paragraphs, after the header
    pairs = list(zip(lines[0::2], lines[1::2], strict=False))
    chunks, total, i = ["Daily Papers"], 0, 0
    while total < size:
        title, abstract = pairs[i % len(pairs)]
        chunk = f"{title} (part {i})\n\n{abstract}"
        chunks.append(chunk)
        total, i = total + len(chunk) + 2, i + 1
    data = "\n\n".join(chunks).encode()
    start = time.process_time()
    parsed = parse_source(data, location="bench")
    spent = time.process_time() - start
    print(
        f"text list: {i:,} papers, {len(data):,} bytes: {spent:.2f} CPU-s "
        f"({len(parsed.papers):,} read, {parsed.cut:,} cut)"
    )


def main() -> None:
    """Run both measures and print their figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--bomb-mb", type=int, default=800)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print("$ " + shlex.join([".venv/bin/python", "bench/ingest_limits.py", *sys.argv[1:]]))
    bomb(args.bomb_mb)
    big_feed(args.entries, args.runs)
    big_text(19_000_000)


if __name__ == "__main__":
    main()
