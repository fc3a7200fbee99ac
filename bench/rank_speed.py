"""How many subscribers per second ranking handles: 1,000 papers, N synthetic profiles.

    .venv/bin/python bench/rank_speed.py [--profiles 20000] [--docs 1000] [--chunk 4096]

Papers come from ../shared/seeds/daily-papers-*.txt (repeated with shuffled sentences to reach
--docs); each profile has 3-8 keywords drawn from the seeds' title unigrams and bigrams, sometimes
an exclusion and some already-seen papers. Prints the median of --runs runs: "cold" builds a fresh
index and compiles every keyword (the real cost of an edition), "warm" reuses the index.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import shlex
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from digest.ranking import STOPWORDS, Doc, Index, Profile

SEEDS = Path(__file__).resolve().parent.parent.parent / "shared" / "seeds"
DATE_LINE = re.compile(r"^[A-Z][a-z]{2} \d{1,2}$")


def seed_papers() -> list[tuple[str, str]]:
    """(title, abstract) pairs from the seed lists: paragraphs after the date header line."""
    papers = []
    for path in sorted(SEEDS.glob("daily-papers-*.txt")):
        paragraphs = [p.strip() for p in path.read_text().split("\n\n") if p.strip()]
        start = next(i for i, p in enumerate(paragraphs) if DATE_LINE.match(p)) + 1
        body = paragraphs[start:]
        papers.extend(zip(body[0::2], body[1::2], strict=False))
    return papers


def make_docs(n: int, rng: random.Random) -> list[Doc]:
    """``n`` papers: the seeds, then copies with shuffled abstract sentences."""
    base = seed_papers()
    docs = []
    for i in range(n):
        title, abstract = base[i % len(base)]
        if i >= len(base):
            sentences = abstract.split(". ")
            rng.shuffle(sentences)
            abstract = ". ".join(sentences)
        docs.append(
            Doc(key=f"bench:{i:05d}", title=title, abstract=abstract, upvotes=rng.randint(0, 300))
        )
    return docs


def vocabulary(docs: list[Doc]) -> tuple[list[str], list[float]]:
    """Title unigrams and bigrams (lowercase, no stopwords), weighted by sqrt(frequency)."""
    counts: Counter[str] = Counter()
    for doc in docs[:300]:
        words = [w for w in re.findall(r"[A-Za-z][A-Za-z0-9-]+", doc.title.lower())]
        words = [w for w in words if w not in STOPWORDS and len(w) > 2]
        counts.update(words)
        counts.update(f"{a} {b}" for a, b in zip(words, words[1:], strict=False))
    terms = list(counts)
    return terms, [math.sqrt(counts[t]) for t in terms]


def make_profiles(n: int, docs: list[Doc], rng: random.Random) -> list[Profile]:
    """``n`` profiles with 3-8 keywords, 10% with an exclusion, 30% with seen papers."""
    terms, weights = vocabulary(docs)
    keys = [d.key for d in docs]
    profiles = []
    for i in range(n):
        keywords = tuple(dict.fromkeys(rng.choices(terms, weights, k=rng.randint(3, 8))))
        exclude = (rng.choice(terms),) if rng.random() < 0.1 else ()
        seen = frozenset(rng.sample(keys, 20)) if rng.random() < 0.3 else frozenset()
        profiles.append(
            Profile(
                id=i, keywords=keywords, exclude=exclude, limit=rng.choice((5, 10, 20)), seen=seen
            )
        )
    return profiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=20_000)
    parser.add_argument("--docs", type=int, default=1_000)
    parser.add_argument("--chunk", type=int, default=4096)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    docs = make_docs(args.docs, rng)
    profiles = make_profiles(args.profiles, docs, rng)

    builds, cold, warm = [], [], []
    returned = 0
    for _ in range(args.runs):
        t0 = time.perf_counter()
        index = Index.build(docs)
        t1 = time.perf_counter()
        returned = sum(len(r) for _, r in index.rank(profiles, chunk=args.chunk))
        t2 = time.perf_counter()
        for _ in index.rank(profiles, chunk=args.chunk):
            pass
        t3 = time.perf_counter()
        builds.append(t1 - t0)
        cold.append(t2 - t0)
        warm.append(t3 - t2)

    n = len(profiles)
    print(f"$ {shlex.join([sys.executable, *sys.argv])}")
    print(f"{len(docs)} papers, {n} profiles, chunk {args.chunk}, median of {args.runs} runs")
    print(f"index build          {statistics.median(builds) * 1000:8.0f} ms")
    print(f"cold (build + rank)  {n / statistics.median(cold):8.0f} subscribers/s")
    print(f"warm (rank only)     {n / statistics.median(warm):8.0f} subscribers/s")
    print(f"papers returned      {returned / n:8.1f} per subscriber")


if __name__ == "__main__":
    main()
