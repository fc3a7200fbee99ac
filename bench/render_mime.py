"""What inline-once CSS and the fast MIME builder buy, per message.

    .venv/bin/python bench/render_mime.py [--messages 200] [--runs 5] [--items 10]

Papers come from ../shared/seeds/daily-papers-*.txt (synthetic text when the seeds are absent).
Each reader gets --items papers drawn from an edition of --pool papers, with 2-3 of ten keywords
highlighted, as in a real edition. MIME building is also timed on an "all-unique" batch in which
no paper appears twice (the worst case for the line cache). Prints the median of --runs runs.

  render   Jinja only, CSS inlined once at load      vs  Jinja + premailer per message
  mime     build_message (binascii, cached lines)    vs  build_message_reference (EmailMessage)
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from digest.mailer import _QP, build_message, build_message_reference
from digest.render import DigestContext, DigestItem, Rendered, Renderer

SEEDS = Path(__file__).resolve().parent.parent.parent / "shared" / "seeds"
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


def rate(fn: Callable[[Any], object], inputs: Sequence[Any], runs: int) -> float:
    """Median items per second over ``runs`` passes through ``inputs``."""
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        for x in inputs:
            fn(x)
        rates.append(len(inputs) / (time.perf_counter() - start))
    return statistics.median(rates)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the four rates and the two ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--items", type=int, default=10)
    parser.add_argument("--pool", type=int, default=80, help="papers in the edition")
    args = parser.parse_args(argv)
    print("$ .venv/bin/python bench/render_mime.py " + shlex.join(sys.argv[1:]))

    renderer = Renderer.create()
    ctxs = contexts(args.messages, args.items, pool=args.pool)
    slow_n = max(10, args.messages // 10)  # premailer is slow: time a slice
    rendered = [renderer.render_digest(c) for c in ctxs]
    html_kb = statistics.mean(len(r.html.encode()) for r in rendered) / 1024
    print(
        f"{args.messages} digests of {args.items} papers from an edition of {args.pool}, "
        f"HTML {html_kb:.1f} KiB on average; median of {args.runs} runs"
    )
    fast = rate(renderer.render_digest, ctxs, args.runs)
    slow = rate(renderer.render_digest_reference, ctxs[:slow_n], args.runs)
    print(f"render  inline-once (Jinja only)     {fast:9,.0f} digests/s")
    print(
        f"render  premailer per message        {slow:9,.0f} digests/s   ratio {fast / slow:5.1f}x"
    )

    unique = [renderer.render_digest(c) for c in contexts(args.messages, args.items, pool=None)]
    for label, batch in (("edition", rendered), ("all-unique", unique)):
        kwargs = mime_kwargs(batch)
        _QP.lines.clear()
        fast = rate(lambda kw: build_message(**kw), kwargs, args.runs)
        slow = rate(lambda kw: build_message_reference(**kw), kwargs, args.runs)
        print(f"mime    build_message ({label:10s}) {fast:9,.0f} messages/s")
        print(
            f"mime    EmailMessage  ({label:10s}) {slow:9,.0f} messages/s ratio {fast / slow:5.1f}x"
        )


if __name__ == "__main__":
    main()
