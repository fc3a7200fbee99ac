"""Ranking speed: subscribers/s over 1,000 papers, against rank-bm25 per subscriber, one run.

    .venv/bin/python bench/rank_speed.py [--profiles 100000] [--docs 1000] [--runs 3]
                                         [--baseline-sample 1000] [--chunk 4096]
                                         [--gc-thresholds 100000,50,1000]

Papers come from ../shared/seeds/daily-papers-*.txt (parsed with the project's parser), then
copies with shuffled abstract sentences up to --docs. Each subscriber has 3-8 keywords drawn
(Zipf-like, so popular topics recur as they do among real readers) from a vocabulary of research
topics: the judged set's profiles, the acronyms and expansions the ranker knows, and the seeds'
title words and two-word phrases; 10% have an exclusion, 30% have already seen 20 papers; the
digest size is 5, 10 or 20.

Figures, each the median of --runs repetitions:

* index build: tokenising the edition (once per edition);
* cold: a fresh index, every keyword weighed on it, all subscribers ranked (the cost of an
  edition in a long-running process: the scheduler or a worker, whose caches of compiled
  keywords and stemmed words outlive an edition);
* cold, fresh process: the same with those caches emptied first, as in a one-off
  ``digest run`` (the keywords compiled, the words stemmed anew);
* cold, index built; cold, fresh, index built: the same two without the index build, which
  is timed apart, as the baseline's is (its rate counts ``get_scores`` only, not building
  ``BM25Okapi``): every keyword still weighed (and, fresh, compiled) anew;
* warm: the same index again, its keywords already compiled (what each further batch costs);
* warm + explanations: also building every ``Ranked`` object with its matches, which ``rank``
  otherwise leaves to the moment a digest reads them;
* baseline: rank-bm25's ``BM25Okapi.get_scores`` for one subscriber's keywords, then the same
  top-k, timed on a sample of --baseline-sample subscribers and extrapolated to all of them.

The ranker runs with Python's default collector thresholds unless --gc-thresholds sets others
(the processes that exist to compose set theirs at their entry points; the library sets none).

Peak memory: the process's peak RSS (``resource.getrusage``) after the ranker's runs, before the
baseline is built, and tracemalloc's peak of Python and numpy allocations during one extra warm
pass (not timed).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import random
import re
import resource
import shlex
import statistics
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np

from digest import ranking
from digest.ranking import EQUIVALENTS, STOPWORDS, Doc, Index, Profile
from digest.sources import parse_source

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT.parent / "shared" / "seeds"
PROFILES = ROOT / "tests" / "data" / "relevance" / "profiles.json"
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9-]+")


def seed_papers(seeds: Path = SEEDS) -> list[tuple[str, str]]:
    """(title, abstract) of every paper of the seed lists, parsed as the project parses them."""
    papers = []
    for path in sorted(seeds.glob("daily-papers-*.txt")):
        parsed = parse_source(path.read_bytes(), location=str(path))
        papers.extend((p.title, p.abstract) for p in parsed.papers)
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


def vocabulary(docs: list[Doc]) -> list[str]:
    """Research topics as readers type them, most popular first."""
    import json

    from digest.keywords import parse_keywords

    typed = [kw for p in json.loads(PROFILES.read_text()) for kw in parse_keywords(p["keywords"])]
    known = [form for forms in EQUIVALENTS for form in forms]
    counts: Counter[str] = Counter()
    for doc in docs[:300]:
        words = [w for w in _WORD.findall(doc.title.lower()) if w not in STOPWORDS and len(w) > 2]
        counts.update(words)
        counts.update(f"{a} {b}" for a, b in zip(words, words[1:], strict=False))
    titles = [term for term, _ in counts.most_common()]
    return list(dict.fromkeys([*typed, *known, *titles]))


def make_profiles(n: int, docs: list[Doc], rng: random.Random) -> list[Profile]:
    """``n`` subscribers with 3-8 keywords (Zipf-like over the vocabulary)."""
    terms = vocabulary(docs)
    weights = [1 / math.sqrt(rank + 1) for rank in range(len(terms))]
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


def peak_rss_mb() -> float:
    """The process's peak resident set size so far, in MB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# The ranking module's caches that outlive an index: compiled keywords, stemmed words.
_PROCESS_CACHES = (ranking._compile, ranking._own_terms, ranking._word_term)


def time_ranker(
    docs: list[Doc], profiles: list[Profile], *, runs: int, chunk: int
) -> dict[str, list[float]]:
    """Seconds per repetition of each ranking figure."""
    out: dict[str, list[float]] = {
        "build": [],
        "fresh": [],
        "fresh_rank": [],
        "cold": [],
        "cold_rank": [],
        "warm": [],
        "explained": [],
    }
    returned = 0
    for _ in range(runs):
        for cache in _PROCESS_CACHES:
            cache.cache_clear()
        gc.collect()
        fresh, build_s, rank_s = _build_and_rank(docs, profiles, chunk=chunk)
        out["fresh"].append(build_s + rank_s)
        out["fresh_rank"].append(rank_s)
        del fresh
        gc.collect()
        index, build_s, rank_s = _build_and_rank(docs, profiles, chunk=chunk)
        t2 = time.perf_counter()
        for _ in index.rank(profiles, chunk=chunk):
            pass
        t3 = time.perf_counter()
        returned = 0
        for _, ranked in index.rank(profiles, chunk=chunk):
            for r in ranked:
                returned += len(r.matches) > 0
        t4 = time.perf_counter()
        out["build"].append(build_s)
        out["cold"].append(build_s + rank_s)
        out["cold_rank"].append(rank_s)
        out["warm"].append(t3 - t2)
        out["explained"].append(t4 - t3)
        del index
    out["returned"] = [returned / len(profiles)]
    return out


def _build_and_rank(
    docs: list[Doc], profiles: list[Profile], *, chunk: int
) -> tuple[Index, float, float]:
    """A new index, the seconds to build it, and the seconds to rank every profile on it."""
    t0 = time.perf_counter()
    index = Index.build(docs)
    t1 = time.perf_counter()
    for _ in index.rank(profiles, chunk=chunk):
        pass
    return index, t1 - t0, time.perf_counter() - t1


def traced_peak_mb(docs: list[Doc], profiles: list[Profile], *, chunk: int) -> float:
    """tracemalloc's peak during one warm pass (index built and compiled beforehand)."""
    index = Index.build(docs)
    for _ in index.rank(profiles, chunk=chunk):
        pass
    gc.collect()
    tracemalloc.start()
    for _ in index.rank(profiles, chunk=chunk):
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 1e6


def time_baseline(
    docs: list[Doc], profiles: list[Profile], *, runs: int, sample: int
) -> tuple[float, list[float]]:
    """rank-bm25: build time, and seconds per subscriber (get_scores + top-k) per repetition."""
    import Stemmer
    from rank_bm25 import BM25Okapi

    stem = Stemmer.Stemmer("english").stemWords
    word = re.compile(r"\w+")

    def tokenize(text: str) -> list[str]:
        return list(stem([w for w in word.findall(text.lower()) if w not in STOPWORDS]))

    t0 = time.perf_counter()
    bm25 = BM25Okapi([tokenize(f"{d.title} {d.abstract}") for d in docs])
    build = time.perf_counter() - t0
    keys = np.array([d.key for d in docs])
    chosen = profiles[:sample]
    per_subscriber = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for profile in chosen:
            scores = bm25.get_scores(tokenize(" ".join(profile.keywords)))
            top = np.argsort(-scores, kind="stable")[: profile.limit]
            _ = [keys[i] for i in top if scores[i] > 0]
        per_subscriber.append((time.perf_counter() - t0) / len(chosen))
    return build, per_subscriber


def main() -> None:
    """Build the population, time the ranker and the baseline in one run, print the figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--docs", type=int, default=1_000)
    parser.add_argument("--chunk", type=int, default=4096)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline-sample", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--gc-thresholds",
        type=lambda text: tuple(int(x) for x in text.split(",")),
        default=None,
        help="the cyclic collector's thresholds for the run, e.g. 100000,50,1000",
    )
    args = parser.parse_args()
    if args.gc_thresholds is not None:
        gc.set_threshold(*args.gc_thresholds)
    rng = random.Random(args.seed)
    docs = make_docs(args.docs, rng)
    profiles = make_profiles(args.profiles, docs, rng)
    n = len(profiles)
    distinct = len({k for p in profiles for k in p.keywords})
    mean_keywords = statistics.fmean(len(p.keywords) for p in profiles)

    ours = time_ranker(docs, profiles, runs=args.runs, chunk=args.chunk)
    rss_ours = peak_rss_mb()
    traced = traced_peak_mb(docs, profiles, chunk=args.chunk)
    build, per_sub = time_baseline(docs, profiles, runs=args.runs, sample=args.baseline_sample)
    med = {name: statistics.median(times) for name, times in ours.items()}
    base_rate = 1 / statistics.median(per_sub)

    print(f"$ {shlex.join([sys.executable, *sys.argv])}")
    print(
        f"{len(docs)} papers, {n} subscribers ({mean_keywords:.1f} keywords each on average, "
        f"{distinct} distinct), chunk {args.chunk}, median of {args.runs} runs, "
        f"collector thresholds {gc.get_threshold()}"
    )
    print(f"index build                     {med['build'] * 1000:9.0f} ms")
    print(f"cold (build + weigh + rank)     {n / med['cold']:9.0f} subscribers/s")
    print(f"cold, index built (weigh + rank){n / med['cold_rank']:9.0f} subscribers/s")
    print(f"cold, fresh process             {n / med['fresh']:9.0f} subscribers/s")
    print(f"cold, fresh, index built        {n / med['fresh_rank']:9.0f} subscribers/s")
    print(f"warm (rank)                     {n / med['warm']:9.0f} subscribers/s")
    print(f"warm + every Ranked explained   {n / med['explained']:9.0f} subscribers/s")
    print(f"papers returned                 {med['returned']:9.1f} per subscriber")
    print(
        f"baseline rank-bm25 get_scores   {base_rate:9.0f} subscribers/s "
        f"(a sample of {min(args.baseline_sample, n)}, extrapolated; index {build * 1000:.0f} ms)"
    )
    print(f"ratio warm / baseline           {n / med['warm'] / base_rate:9.1f}x")
    print(f"ratio cold / baseline           {n / med['cold'] / base_rate:9.1f}x")
    print(f"ratio cold, index built / base  {n / med['cold_rank'] / base_rate:9.1f}x")
    print(f"ratio cold, fresh / baseline    {n / med['fresh'] / base_rate:9.1f}x")
    print(f"ratio cold, fresh, built / base {n / med['fresh_rank'] / base_rate:9.1f}x")
    print(f"ratio warm+explained / baseline {n / med['explained'] / base_rate:9.1f}x")
    print(f"peak RSS after the ranker runs  {rss_ours:9.0f} MB")
    print(f"tracemalloc peak, one warm pass {traced:9.0f} MB")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average at the end         {load} (other work on the machine skews the figures)")


if __name__ == "__main__":
    main()
