"""Rendering personalised digests and building their MIME messages, against the naive way.

    .venv/bin/python bench/render_mime.py [--messages 400] [--runs 5] [--items 10] [--pool 80]

Papers come from ../shared/seeds/daily-papers-*.txt (synthetic text when the seeds are absent).
Each reader gets --items papers drawn from an edition of --pool papers, with 2-3 of ten keywords
highlighted, as in a real edition ("edition"). The same is timed on an "all-unique" batch in
which no paper appears twice, with a fresh Renderer each run: nothing is ever reused (the
worst case for the renderer's paper views and the MIME line cache).

  render   Jinja only, CSS inlined once at load      vs  Jinja + premailer per message
  mime     build_message (binascii, cached lines)    vs  EmailMessage

The baselines are tests/reference.py's, the oracles the test suite checks the fast path with.

Rates are per core: messages per CPU-second of this single-threaded process (time.process_time),
so that other load on the machine does not count; wall-clock rates are printed beside them.
Each is the median of --runs runs, after one warm-up pass. Every fast message is then parsed
back by the stdlib parser (policy.default) and checked: no defects, the two parts, bodies equal
to what was rendered. Peak memory is the process's peak RSS (ru_maxrss).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import random
import re
import resource
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from digest.mailer import _QP, build_message
from digest.render import DigestContext, DigestItem, Rendered, Renderer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the reference builders, shared with the tests
import reference  # noqa: E402

SEEDS = ROOT.parent / "shared" / "seeds"
DATE_LINE = re.compile(r"^[A-Z][a-z]{2} \d{1,2}$")
KEYWORDS = (
    "language model",
    "diffusion",
    "reasoning",
    "agent",
    "video",
    "benchmark",
    "inference",
    "reinforcement learning",
    "multimodal",
    "retrieval",
)


def seed_papers() -> list[tuple[str, str]]:
    """(title, abstract) pairs from the seed lists, or synthetic ones."""
    papers: list[tuple[str, str]] = []
    for path in sorted(SEEDS.glob("daily-papers-*.txt")):
        paragraphs = [p.strip() for p in path.read_text().split("\n\n") if p.strip()]
        start = next((i for i, p in enumerate(paragraphs) if DATE_LINE.match(p)), -1) + 1
        body = paragraphs[start:]
        papers.extend(zip(body[0::2], body[1::2], strict=False))
    if not papers:
        words = ["model", "diffusion", "reasoning", "agent", "video", "benchmark", "data"]
        rng = random.Random(1)
        papers = [
            (" ".join(rng.choices(words, k=8)).title(), " ".join(rng.choices(words, k=180)))
            for _ in range(50)
        ]
    return papers


def spans(text: str, keywords: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """Where ``keywords`` occur in ``text``."""
    found = []
    for kw in keywords:
        found += [(m.start(), m.end()) for m in re.finditer(re.escape(kw), text, re.IGNORECASE)]
    return tuple(sorted(found))


def paper(rng: random.Random, title: str, abstract: str, key: str) -> DigestItem:
    """One paper, its abstract sentences shuffled so that copies differ."""
    sentences = abstract.split(". ")
    rng.shuffle(sentences)
    return DigestItem(
        key=key,
        title=f"{title} ({key})",
        url=f"https://arxiv.org/abs/{key}",
        authors=tuple(f"Author {k} {key}" for k in range(rng.randint(1, 8))),
        abstract=". ".join(sentences),
        upvotes=rng.choice([None, rng.randint(0, 400)]),
        score=0.0,
        reason="matches “language model”, “reasoning”",
    )


def contexts(n: int, items: int, *, pool: int | None) -> list[DigestContext]:
    """``n`` digests of ``items`` papers: drawn from an edition of ``pool`` papers with 2-3
    keywords per reader, or (pool None) every paper of every digest different."""
    base = seed_papers()
    rng = random.Random(7)
    edition = [paper(rng, *base[k % len(base)], key=f"2611.{k:05d}") for k in range(pool or 0)]
    out = []
    for i in range(n):
        if pool:
            keywords = tuple(rng.sample(KEYWORDS, rng.randint(2, 3)))
            chosen = rng.sample(edition, items)
        else:
            keywords = KEYWORDS
            chosen = [
                paper(rng, *base[(i * items + j) % len(base)], key=f"{i}.{j}") for j in range(items)
            ]
        out.append(
            DigestContext(
                site_name="digest",
                base_url="https://digest.example.org",
                recipient=f"reader{i}@example.com",
                edition="2026-11-22",
                edition_label="Sunday 22 November 2026",
                items=tuple(
                    dataclasses.replace(p, highlight=spans(p.abstract, keywords)) for p in chosen
                ),
                keywords=keywords,
                unsubscribe_url=f"https://digest.example.org/unsubscribe/tok{i}.sig",
                preferences_url=f"https://digest.example.org/preferences/tok{i}.sig",
                view_url=f"https://digest.example.org/digest/tok{i}.sig/2026-11-22",
            )
        )
    return out


def mime_kwargs(rendered: Sequence[Rendered]) -> list[dict[str, Any]]:
    """build_message arguments for each rendered digest."""
    return [
        {
            "from_addr": "digest@example.org",
            "from_name": "Paper Digest",
            "to_addr": f"reader{i}@example.com",
            "subject": r.subject,
            "text": r.text,
            "html": r.html,
            "message_id": f"<digest.2026-11-22.{i}@example.org>",
            "date": datetime(2026, 11, 22, 7, 0, tzinfo=UTC),
            "list_id": "digest.example.org",
            "unsubscribe_url": f"https://digest.example.org/unsubscribe/tok{i}.sig",
            "unsubscribe_mailto": "unsubscribe@example.org",
        }
        for i, r in enumerate(rendered)
    ]


@dataclasses.dataclass(frozen=True)
class Rate:
    """Median items per CPU-second and per wall-second over some runs."""

    cpu: float
    wall: float


def rate(
    fn: Callable[[Any], object],
    inputs: Sequence[Any],
    runs: int,
    *,
    before_each: Callable[[], object] | None = None,
) -> Rate:
    """Median rates over ``runs`` passes through ``inputs`` (after one untimed warm-up pass)."""
    cpu, wall = [], []
    for run in range(runs + 1):
        if before_each:
            before_each()
        gc.collect()
        c0, w0 = time.process_time(), time.perf_counter()
        for x in inputs:
            fn(x)
        c1, w1 = time.process_time(), time.perf_counter()
        if run:
            cpu.append(len(inputs) / max(c1 - c0, 1e-9))
            wall.append(len(inputs) / (w1 - w0))
    return Rate(statistics.median(cpu), statistics.median(wall))


def check_parse_back(messages: Sequence[bytes], rendered: Sequence[Rendered]) -> int:
    """How many messages parse back clean, with the rendered bodies; raises on the first bad."""
    for data, r in zip(messages, rendered, strict=True):
        msg = message_from_bytes(data, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        parts = list(msg.iter_parts())
        defects = [*msg.defects, *(d for p in parts for d in p.defects)]
        if defects or [p.get_content_type() for p in parts] != ["text/plain", "text/html"]:
            raise AssertionError(f"bad message: {defects or [p.get_content_type() for p in parts]}")
        # CRLF is the canonical line end of text on the wire; the parser keeps it.
        text, html = (str(p.get_content()).replace("\r\n", "\n") for p in parts)
        if text != r.text.replace("\r\n", "\n") or html != r.html.replace("\r\n", "\n"):
            raise AssertionError("a parsed-back body differs from the rendered one")
        if msg["Subject"] != r.subject:
            raise AssertionError(f"subject {msg['Subject']!r} != {r.subject!r}")
    return len(messages)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the rates, the ratios, the parse-back check and the peak memory."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--items", type=int, default=10)
    parser.add_argument("--pool", type=int, default=80, help="papers in the edition")
    args = parser.parse_args(argv)
    print("$ " + shlex.join([".venv/bin/python", "bench/render_mime.py", *sys.argv[1:]]))

    renderer = Renderer.create()
    edition = contexts(args.messages, args.items, pool=args.pool)
    unique = contexts(args.messages, args.items, pool=None)
    slow_n = max(10, args.messages // 20)  # premailer is slow: time a slice
    rendered = [renderer.render_digest(c) for c in edition]
    html_kb = statistics.mean(len(r.html.encode()) for r in rendered) / 1024
    print(
        f"{args.messages} digests of {args.items} papers from an edition of {args.pool} "
        f"(HTML {html_kb:.1f} KiB on average); premailer timed on {slow_n} of them; "
        f"median of {args.runs} runs"
    )

    fresh: list[Renderer] = [renderer]

    def new_renderer() -> None:
        fresh[0] = Renderer.create()

    fast = rate(renderer.render_digest, edition, args.runs)
    cold = rate(lambda c: fresh[0].render_digest(c), unique, args.runs, before_each=new_renderer)
    slow = rate(reference.ReferenceRenderer(renderer).render_digest, edition[:slow_n], args.runs)
    line = "{:<44} {:>9,.0f} {:>11,.0f} {}"
    print(f"{'':44} {'per core':>9} {'wall':>11}")
    print(line.format("render  inline-once, edition", fast.cpu, fast.wall, "digests/s"))
    print(line.format("render  inline-once, all-unique", cold.cpu, cold.wall, "digests/s"))
    print(line.format("render  premailer per message (baseline)", slow.cpu, slow.wall, "digests/s"))
    print(
        f"ratio   edition / baseline {fast.cpu / slow.cpu:.1f}x, "
        f"all-unique / baseline {cold.cpu / slow.cpu:.1f}x (per core)"
    )

    unique_rendered = [renderer.render_digest(c) for c in unique]
    for label, batch in (("edition", rendered), ("all-unique", unique_rendered)):
        kwargs = mime_kwargs(batch)
        # The line cache starts empty; "edition" keeps it across runs, as a long send does.
        _QP.lines.clear()
        fast = rate(
            lambda kw: build_message(**kw),
            kwargs,
            args.runs,
            before_each=_QP.lines.clear if label == "all-unique" else None,
        )
        slow = rate(lambda kw: reference.build_message(**kw), kwargs, args.runs)
        print(line.format(f"mime    build_message, {label}", fast.cpu, fast.wall, "messages/s"))
        print(
            line.format(
                f"mime    EmailMessage, {label} (baseline)", slow.cpu, slow.wall, "messages/s"
            )
        )
        print(f"ratio   {label} {fast.cpu / slow.cpu:.1f}x (per core)")
        checked = check_parse_back([build_message(**kw) for kw in kwargs], batch)
        print(
            f"valid   {checked}/{len(batch)} parsed back by the stdlib parser: no defects, "
            "text + HTML parts, bodies and subject as rendered"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MB (the whole benchmark process)")


if __name__ == "__main__":
    main()
