"""Relevance of the ranker on the judged set: nDCG@10 and nDCG@20, the project vs plain BM25.

    .venv/bin/python bench/relevance.py [--seeds ../shared/seeds] [--upvote-weight W]

The judged set is tests/data/relevance/ (17 reader profiles, 227 papers, a 0/1/2 grade for every
pair, made by reading; see its README). The papers are the three seed lists parsed with the
project's own parser (``digest.sources.parse_source``), matched to ``papers.jsonl`` by title, and
ranked as one edition. Each profile's keyword text goes through ``parse_keywords``.

The baseline is plain BM25 (rank-bm25's ``BM25Okapi``, k1 = 1.5, b = 0.75): title and abstract
concatenated, lowercase words, English stopwords removed, Snowball (PyStemmer) stems; the query is
the profile's keywords run through the same tokenizer. It is here only, never in the product.

nDCG uses linear gains (grade 0/1/2, as trec_eval) and a log2 discount; the ideal ranking is
taken over every judged paper. Papers a ranker leaves out (score 0) add nothing.
Importable: tests/test_relevance.py holds floors on these figures.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from digest.keywords import parse_keywords
from digest.ranking import Doc, Index, Profile
from digest.sources import parse_source

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "relevance"
SEEDS = ROOT.parent / "shared" / "seeds"
SEED_FILES = ("a", "b", "c")
DEPTHS = (10, 20)

# A common English stopword list (the baseline's own, independent of the ranker's).
_BM25_STOPWORD_TEXT = """a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers herself him himself his how i if in into is it its itself
    just me more most my myself no nor not now of off on once only or other our ours ourselves out
    over own same she should so some such than that the their theirs them themselves then there
    these they this those through to too under until up very was we were what when where which
    while who whom why will with would you your yours yourself yourselves"""
BM25_STOPWORDS = frozenset(_BM25_STOPWORD_TEXT.split())
_BM25_WORD = re.compile(r"\w+")

Rankings = dict[str, list[str]]


@dataclass(frozen=True, kw_only=True)
class JudgedSet:
    """The edition's papers (keyed by judged paper id), the profiles and every grade."""

    docs: list[Doc]
    profiles: list[tuple[str, tuple[str, ...]]]  # (profile id, parsed keywords)
    grades: dict[str, dict[str, int]]  # profile id -> paper id -> grade


def load(seeds: Path = SEEDS, data: Path = DATA) -> JudgedSet:
    """Parse the seeds with the project's parser and join them to the judged set by title."""
    ids = {}
    for line in (data / "papers.jsonl").read_text(encoding="utf-8").splitlines():
        paper = json.loads(line)
        ids[paper["title"]] = paper["id"]
    docs: dict[str, Doc] = {}
    for name in SEED_FILES:
        path = seeds / f"daily-papers-{name}.txt"
        parsed = parse_source(path.read_bytes(), location=str(path))
        if parsed.kind != "text":
            raise ValueError(f"{path}: parsed as {parsed.kind}, expected a text list")
        for paper in parsed.papers:
            pid = ids.get(paper.title)
            if pid is None:
                raise ValueError(f"{path}: {paper.title!r} is not in papers.jsonl")
            docs.setdefault(pid, Doc(key=pid, title=paper.title, abstract=paper.abstract))
    if len(docs) != len(ids):
        raise ValueError(f"{len(ids) - len(docs)} judged papers are missing from the seeds")
    profiles = [
        (p["id"], parse_keywords(p["keywords"]))
        for p in json.loads((data / "profiles.json").read_text(encoding="utf-8"))
    ]
    grades: dict[str, dict[str, int]] = {pid: {} for pid, _ in profiles}
    lines = (data / "qrels.tsv").read_text(encoding="utf-8").splitlines()
    for line in lines[1:]:
        profile_id, paper_id, grade = line.split("\t")
        grades[profile_id][paper_id] = int(grade)
    return JudgedSet(docs=list(docs.values()), profiles=profiles, grades=grades)


def ndcg(ranking: Sequence[str], grades: Mapping[str, int], k: int) -> float:
    """nDCG@k with linear gains; 0 when nothing is relevant."""
    dcg = sum(grades.get(key, 0) / math.log2(i + 2) for i, key in enumerate(ranking[:k]))
    ideal = sorted(grades.values(), reverse=True)[:k]
    best = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / best if best else 0.0


def project_rankings(
    judged: JudgedSet, *, depth: int = max(DEPTHS), upvote_weight: float | None = None
) -> Rankings:
    """Every profile's top ``depth`` by the project's ranker, all profiles in one pass."""
    options = {} if upvote_weight is None else {"upvote_weight": upvote_weight}
    index = Index.build(judged.docs, **options)
    profiles = [Profile(id=pid, keywords=kws, limit=depth) for pid, kws in judged.profiles]
    return {str(p.id): [r.key for r in ranked] for p, ranked in index.rank(profiles)}


def bm25_tokenizer() -> Callable[[str], list[str]]:
    """The baseline's tokenizer: lowercase words, no stopwords, Snowball English stems."""
    import Stemmer

    stem = Stemmer.Stemmer("english").stemWords

    def tokenize(text: str) -> list[str]:
        words = [w for w in _BM25_WORD.findall(text.lower()) if w not in BM25_STOPWORDS]
        return list(stem(words))

    return tokenize


def bm25_rankings(judged: JudgedSet, *, depth: int = max(DEPTHS)) -> Rankings:
    """Every profile's top ``depth`` by plain BM25 over title + abstract (ties: smaller id)."""
    from rank_bm25 import BM25Okapi

    tokenize = bm25_tokenizer()
    keys = [d.key for d in judged.docs]
    bm25 = BM25Okapi([tokenize(f"{d.title} {d.abstract}") for d in judged.docs])
    out: Rankings = {}
    for pid, keywords in judged.profiles:
        scores = bm25.get_scores(tokenize(" ".join(keywords)))
        order = sorted(range(len(keys)), key=lambda i: (-scores[i], keys[i]))
        out[pid] = [keys[i] for i in order[:depth] if scores[i] > 0]
    return out


def figures(judged: JudgedSet, rankings: Rankings) -> dict[str, tuple[float, ...]]:
    """Profile id -> (nDCG@10, nDCG@20)."""
    return {
        pid: tuple(ndcg(rankings[pid], judged.grades[pid], k) for k in DEPTHS)
        for pid, _ in judged.profiles
    }


def means(table: Mapping[str, tuple[float, ...]]) -> tuple[float, ...]:
    """The mean of each column over the profiles."""
    return tuple(statistics.fmean(col) for col in zip(*table.values(), strict=True))


def main() -> None:
    """Print nDCG@10/@20 per profile and on average for both rankers, and their difference."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=Path, default=SEEDS, help="folder of daily-papers-*.txt")
    parser.add_argument("--upvote-weight", type=float, default=None, help="the ranker's default")
    args = parser.parse_args()
    judged = load(args.seeds)
    ours = figures(judged, project_rankings(judged, upvote_weight=args.upvote_weight))
    base = figures(judged, bm25_rankings(judged))

    print(f"$ {shlex.join([sys.executable, *sys.argv])}")
    print(f"{len(judged.docs)} papers (one edition), {len(judged.profiles)} profiles")
    head = f"{'profile':28} {'keywords':44} {'ours@10':>7} {'bm25@10':>7} {'ours@20':>7} "
    print(head + f"{'bm25@20':>7} {'diff@20':>7}")
    for pid, keywords in judged.profiles:
        (o10, o20), (b10, b20) = ours[pid], base[pid]
        text = ", ".join(keywords)[:44]
        print(f"{pid:28} {text:44} {o10:7.3f} {b10:7.3f} {o20:7.3f} {b20:7.3f} {o20 - b20:+7.3f}")
    (o10, o20), (b10, b20) = means(ours), means(base)
    print(f"{'mean':73} {o10:7.3f} {b10:7.3f} {o20:7.3f} {b20:7.3f} {o20 - b20:+7.3f}")
    worse = [pid for pid in ours if ours[pid][1] < base[pid][1] - 1e-9]
    print(f"profiles below BM25 on nDCG@20: {', '.join(worse) or 'none'}")


if __name__ == "__main__":
    main()
