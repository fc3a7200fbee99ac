"""Relevance on the judged sets: nDCG@10 and @20 of the ranker and of feedback baselines.

    .venv/bin/python bench/relevance.py [--set tuning|reporting|both] [--kind keywords|a|b|all]
                                        [--seeds ../shared/seeds]
                                        [--hf ../shared/fixtures/hf_daily_papers]
                                        [--upvote-weight W] [--svm-min-df N] [--svm-max-df F]

Two judged sets, each a list of reader profiles and a 0/1/2 grade for every (profile, paper)
pair, made by reading (see their READMEs):

* **tuning**, tests/data/relevance/: 17 profiles over the 227 seed papers. The ranker's rules
  were chosen on it, so it flatters the ranker.
* **reporting**, tests/data/relevance-reporting/: 13 other profiles over the same 227 papers
  plus the 63 of the three Hugging Face Daily Papers captures in ../shared/fixtures. It was
  graded before any ranker was run on it and is never used to choose a weight or a rule.

Each set's papers are parsed with the project's parser (``digest.sources.parse_source``) and
ranked as one edition (``Edition``); upvotes are left out, as the seed lists carry none. Three
kinds of scenario per profile (``Scenario``): **keywords** (the profile's keywords, nothing
marked), **a** (keywords + 3 liked + 3 disliked papers) and **b** (5 liked papers, no keywords),
the latter two from each set's scenarios.json (see tests/data/relevance/make_scenarios.py).
Marked papers are removed from the ranking and from the judgments before scoring.

Methods (each a ``Method``: scenario and edition in, paper keys best first out):

* **ours**: the project's ranker (``digest.ranking.Index``), keywords through ``parse_keywords``,
  marked papers as ``seen``. It does not read liked or disliked papers; with no keywords
  (scenario b) it ranks nothing and scores 0.
* **bm25**: rank-bm25's ``BM25Okapi`` (k1 = 1.5, b = 0.75) over title + abstract, lowercase
  words, English stopwords removed, Snowball (PyStemmer) stems. The query is the keywords; with
  no keywords it is the liked papers' title + abstract. Feedback is otherwise ignored.
* **svm**: arxiv-sanity-lite's ranker (compute.py + serve.py ``svm_rank``): scikit-learn
  ``TfidfVectorizer`` with its settings (word 1-2-grams, ``sublinear_tf``, English stop words,
  ``max_features`` 20000, ``min_df`` 5, ``max_df`` 0.1, ...) fitted on the edition's title +
  abstract, and ``LinearSVC(class_weight="balanced", C=0.01, tol=1e-6, max_iter=10000)`` with
  the liked papers positive and every other paper negative (disliked ones included); papers
  ranked by the decision function. It ignores keywords: with no liked paper it ranks nothing.
* **blend**: 0.5 x ours + 0.5 x svm, each score min-max normalised to [0, 1] over the edition's
  unmarked papers (a paper the ranker leaves out scores 0 there). A missing side is all 0, so
  with no keywords it ranks as svm does, and with no liked paper as ours does.
* **rocchio**: Rocchio on BM25: q = 1.0 x q0 + 0.75 x mean(liked) - 0.15 x mean(disliked),
  negative weights dropped, where q0 is the keywords' term counts and each paper is its row of
  BM25 term weights, all L2-normalised; a paper scores the BM25 sum of q's weighted terms (so
  with keywords alone it ranks exactly as bm25). Standard weights, not tuned.

nDCG uses linear gains (grade 0/1/2, as trec_eval) and a log2 discount; the ideal ranking is
taken over every judged paper left after removing the marked ones. Papers a method leaves out
add nothing. Importable: tests/test_relevance.py holds floors on the keyword figures, and a new
ranker is one more ``Method`` passed to ``evaluate``.
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
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from digest.keywords import parse_keywords
from digest.ranking import Doc, Index, Profile
from digest.sources import parse_source

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "relevance"
REPORTING = ROOT / "tests" / "data" / "relevance-reporting"
SETS = {"tuning": DATA, "reporting": REPORTING}
SEEDS = ROOT.parent / "shared" / "seeds"
HF_PAPERS = ROOT.parent / "shared" / "fixtures" / "hf_daily_papers"
SEED_FILES = ("a", "b", "c")
DEPTHS = (10, 20)
KINDS = ("keywords", "a", "b")
KIND_LABELS = {
    "keywords": "keywords only",
    "a": "a: keywords + 3 liked + 3 disliked",
    "b": "b: 5 liked, no keywords",
}
ROCCHIO = (1.0, 0.75, 0.15)  # alpha, beta, gamma: the textbook weights

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
class Edition:
    """The papers of one judged set as a ranker sees them (keys are the judged paper ids).

    Not ``digest.edition.Edition`` (a day): here an edition is only its papers.
    """

    name: str
    docs: tuple[Doc, ...]


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """What one reader has told us: keywords, excluded words, papers liked and disliked."""

    profile: str
    kind: str  # "keywords", "a" or "b"
    keywords: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    liked: tuple[str, ...] = ()
    disliked: tuple[str, ...] = ()

    @property
    def marked(self) -> frozenset[str]:
        """The papers the reader marked: left out of the ranking and of the judgments."""
        return frozenset(self.liked) | frozenset(self.disliked)


Method = Callable[[Scenario, Edition], Sequence[str]]


@dataclass(frozen=True, kw_only=True)
class JudgedSet:
    """One judged set: its edition, its profiles, every grade and its scenarios by kind."""

    name: str
    edition: Edition
    profiles: list[tuple[str, tuple[str, ...]]]  # (profile id, parsed keywords)
    grades: dict[str, dict[str, int]]  # profile id -> paper id -> grade
    scenarios: dict[str, list[Scenario]] = field(default_factory=dict)  # kind -> one a profile

    @property
    def docs(self) -> tuple[Doc, ...]:
        """The edition's papers."""
        return self.edition.docs


@dataclass(frozen=True, kw_only=True)
class Figures:
    """nDCG@10 and @20 of one method on one set and scenario kind, per profile."""

    set: str
    kind: str
    method: str
    per_profile: dict[str, tuple[float, float]]

    @property
    def mean(self) -> tuple[float, float]:
        """The mean nDCG@10 and @20 over the profiles."""
        at10, at20 = means(self.per_profile)
        return at10, at20


def _seed_docs(seeds: Path, by_title: Mapping[str, str]) -> dict[str, Doc]:
    docs: dict[str, Doc] = {}
    for name in SEED_FILES:
        path = seeds / f"daily-papers-{name}.txt"
        parsed = parse_source(path.read_bytes(), location=str(path))
        if parsed.kind != "text":
            raise ValueError(f"{path}: parsed as {parsed.kind}, expected a text list")
        for paper in parsed.papers:
            pid = by_title.get(paper.title)
            if pid is None:
                raise ValueError(f"{path}: {paper.title!r} is not in papers.jsonl")
            docs.setdefault(pid, Doc(key=pid, title=paper.title, abstract=paper.abstract))
    return docs


def _hf_docs(hf: Path, files: Sequence[str], wanted: set[str]) -> dict[str, Doc]:
    docs: dict[str, Doc] = {}
    for name in files:
        path = hf / name
        parsed = parse_source(path.read_bytes(), location=str(path))
        if parsed.kind != "hf-daily":
            raise ValueError(f"{path}: parsed as {parsed.kind}, expected hf-daily")
        for paper in parsed.papers:
            pid = "hf-" + paper.key.removeprefix("arxiv:")
            if pid in wanted:
                docs.setdefault(pid, Doc(key=pid, title=paper.title, abstract=paper.abstract))
    return docs


def load(
    seeds: Path = SEEDS, data: Path = DATA, *, hf: Path = HF_PAPERS, name: str | None = None
) -> JudgedSet:
    """Parse a set's papers with the project's parser and join them to its judgments."""
    by_title: dict[str, str] = {}
    hf_files: list[str] = []
    order: list[str] = []
    hf_ids: set[str] = set()
    for line in (data / "papers.jsonl").read_text(encoding="utf-8").splitlines():
        paper = json.loads(line)
        order.append(paper["id"])
        if paper.get("source", "seeds") == "hf":
            hf_ids.add(paper["id"])
            hf_files += [f for f in paper["files"] if f not in hf_files]
        else:
            by_title[paper["title"]] = paper["id"]
    docs = _seed_docs(seeds, by_title)
    if hf_ids:
        docs |= _hf_docs(hf, hf_files, hf_ids)
    missing = [pid for pid in order if pid not in docs]
    if missing:
        raise ValueError(f"{len(missing)} judged papers are missing from the sources: {missing}")
    typed = json.loads((data / "profiles.json").read_text(encoding="utf-8"))
    profiles = [(p["id"], parse_keywords(p["keywords"])) for p in typed]
    grades: dict[str, dict[str, int]] = {pid: {} for pid, _ in profiles}
    lines = (data / "qrels.tsv").read_text(encoding="utf-8").splitlines()
    for line in lines[1:]:
        profile_id, paper_id, grade = line.split("\t")
        grades[profile_id][paper_id] = int(grade)
    scenarios: dict[str, list[Scenario]] = {
        "keywords": [Scenario(profile=pid, kind="keywords", keywords=kws) for pid, kws in profiles]
    }
    stored = data / "scenarios.json"
    if stored.is_file():
        for item in json.loads(stored.read_text(encoding="utf-8"))["scenarios"]:
            scenario = Scenario(
                profile=item["profile"],
                kind=item["kind"],
                keywords=parse_keywords(item["keywords"]),
                liked=tuple(item["liked"]),
                disliked=tuple(item["disliked"]),
            )
            scenarios.setdefault(scenario.kind, []).append(scenario)
    edition = Edition(name=name or data.name, docs=tuple(docs[pid] for pid in order))
    return JudgedSet(
        name=name or data.name,
        edition=edition,
        profiles=profiles,
        grades=grades,
        scenarios=scenarios,
    )


def load_sets(
    seeds: Path = SEEDS, *, hf: Path = HF_PAPERS, names: Sequence[str] = tuple(SETS)
) -> dict[str, JudgedSet]:
    """The judged sets by name ("tuning", "reporting")."""
    return {n: load(seeds, SETS[n], hf=hf, name=n) for n in names}


def ndcg(ranking: Sequence[str], grades: Mapping[str, int], k: int) -> float:
    """nDCG@k with linear gains; 0 when nothing is relevant."""
    dcg = sum(grades.get(key, 0) / math.log2(i + 2) for i, key in enumerate(ranking[:k]))
    ideal = sorted(grades.values(), reverse=True)[:k]
    best = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / best if best else 0.0


def score(
    scenario: Scenario, ranking: Sequence[str], grades: Mapping[str, int]
) -> tuple[float, float]:
    """nDCG@10 and @20 with the marked papers taken out of the ranking and the judgments."""
    marked = scenario.marked
    seen: set[str] = set()
    kept = []
    for key in ranking:
        if key not in marked and key not in seen:
            seen.add(key)
            kept.append(key)
    left = {key: g for key, g in grades.items() if key not in marked}
    at10, at20 = (ndcg(kept, left, k) for k in DEPTHS)
    return at10, at20


def evaluate(method: Method, judged: JudgedSet, kind: str, *, name: str = "") -> Figures:
    """Run ``method`` on every scenario of ``kind`` in ``judged`` and score it."""
    per_profile = {
        s.profile: score(s, method(s, judged.edition), judged.grades[s.profile])
        for s in judged.scenarios[kind]
    }
    method_name = name or getattr(method, "__name__", "method")
    return Figures(set=judged.name, kind=kind, method=method_name, per_profile=per_profile)


def means(table: Mapping[str, Sequence[float]]) -> tuple[float, ...]:
    """The mean of each column over the profiles."""
    return tuple(statistics.fmean(col) for col in zip(*table.values(), strict=True))


def _order(keys: Sequence[str], scores: Any, *, positive_only: bool) -> list[str]:
    """Keys by score, best first, ties by key; only positive scores when asked."""
    idx = sorted(range(len(keys)), key=lambda i: (-float(scores[i]), keys[i]))
    return [keys[i] for i in idx if not positive_only or scores[i] > 0]


@lru_cache(maxsize=8)
def _index(edition: Edition, upvote_weight: float | None) -> Index:
    options = {} if upvote_weight is None else {"upvote_weight": upvote_weight}
    return Index.build(edition.docs, **options)


def keyword_scores(
    scenario: Scenario, edition: Edition, *, upvote_weight: float | None = None
) -> dict[str, float]:
    """The project ranker's score of every paper it ranks (unmarked ones) for the keywords."""
    if not scenario.keywords:
        return {}
    profile = Profile(
        id=scenario.profile,
        keywords=scenario.keywords,
        exclude=scenario.exclude,
        limit=len(edition.docs),
        seen=scenario.marked,
    )
    [(_, ranked)] = _index(edition, upvote_weight).rank([profile])
    return {r.key: r.score for r in ranked}


def keyword_ranker(*, upvote_weight: float | None = None, depth: int = max(DEPTHS)) -> Method:
    """The project's ranker as a method: its top ``depth`` for the keywords."""

    def ours(scenario: Scenario, edition: Edition) -> list[str]:
        if not scenario.keywords:
            return []
        profile = Profile(
            id=scenario.profile,
            keywords=scenario.keywords,
            exclude=scenario.exclude,
            limit=depth,
            seen=scenario.marked,
        )
        [(_, ranked)] = _index(edition, upvote_weight).rank([profile])
        return [r.key for r in ranked]

    return ours


def bm25_tokenizer() -> Callable[[str], list[str]]:
    """The baseline's tokenizer: lowercase words, no stopwords, Snowball English stems."""
    import Stemmer

    stem = Stemmer.Stemmer("english").stemWords

    def tokenize(text: str) -> list[str]:
        words = [w for w in _BM25_WORD.findall(text.lower()) if w not in BM25_STOPWORDS]
        return list(stem(words))

    return tokenize


@dataclass(frozen=True)
class _BM25Space:
    """BM25Okapi's term weights: row i, column t is paper i's BM25 contribution for term t."""

    keys: list[str]
    terms: dict[str, int]
    weights: Any  # numpy array, papers x terms
    tokenize: Callable[[str], list[str]]

    def counts(self, tokens: Sequence[str]) -> Any:
        """A query's term counts as a vector over the terms (unknown terms dropped)."""
        vec = np.zeros(len(self.terms))
        for tok in tokens:
            col = self.terms.get(tok)
            if col is not None:
                vec[col] += 1.0
        return vec


@lru_cache(maxsize=4)
def _bm25(edition: Edition) -> _BM25Space:
    from rank_bm25 import BM25Okapi

    tokenize = bm25_tokenizer()
    bm25 = BM25Okapi([tokenize(f"{d.title} {d.abstract}") for d in edition.docs])
    terms = {t: i for i, t in enumerate(sorted(bm25.idf))}
    weights = np.zeros((len(edition.docs), len(terms)))
    for row, (freqs, length) in enumerate(zip(bm25.doc_freqs, bm25.doc_len, strict=True)):
        norm = bm25.k1 * (1 - bm25.b + bm25.b * length / bm25.avgdl)
        for term, tf in freqs.items():
            weights[row, terms[term]] = bm25.idf[term] * tf * (bm25.k1 + 1) / (tf + norm)
    keys = [d.key for d in edition.docs]
    return _BM25Space(keys=keys, terms=terms, weights=weights, tokenize=tokenize)


def _text(edition: Edition, keys: Sequence[str]) -> str:
    by_key = {d.key: d for d in edition.docs}
    return " ".join(f"{by_key[k].title} {by_key[k].abstract}" for k in keys)


def bm25(scenario: Scenario, edition: Edition) -> list[str]:
    """Plain BM25: the keywords as the query, or the liked papers' text when there are none."""
    space = _bm25(edition)
    query = " ".join(scenario.keywords) or _text(edition, scenario.liked)
    scores = space.weights @ space.counts(space.tokenize(query))
    return _order(space.keys, scores, positive_only=True)


def rocchio(
    alpha: float = ROCCHIO[0], beta: float = ROCCHIO[1], gamma: float = ROCCHIO[2]
) -> Method:
    """Rocchio on BM25 with the given weights (see the module docstring)."""

    def unit(vec: Any) -> Any:
        norm = float(np.linalg.norm(vec))
        return vec / norm if norm else vec

    def mean_unit(space: _BM25Space, keys: Sequence[str]) -> Any:
        if not keys:
            return np.zeros(len(space.terms))
        rows = [space.keys.index(k) for k in keys]
        return np.mean([unit(space.weights[r]) for r in rows], axis=0)

    def rocchio(scenario: Scenario, edition: Edition) -> list[str]:
        space = _bm25(edition)
        q0 = unit(space.counts(space.tokenize(" ".join(scenario.keywords))))
        query = (
            alpha * q0
            + beta * mean_unit(space, scenario.liked)
            - gamma * mean_unit(space, scenario.disliked)
        )
        scores = space.weights @ np.clip(query, 0.0, None)
        return _order(space.keys, scores, positive_only=True)

    return rocchio


@lru_cache(maxsize=8)
def _tfidf(edition: Edition, min_df: float, max_df: float) -> Any:
    """arxiv-sanity-lite's compute.py features over the edition's title + abstract."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(
        input="content",
        encoding="utf-8",
        decode_error="replace",
        strip_accents="unicode",
        lowercase=True,
        analyzer="word",
        stop_words="english",
        token_pattern=r"(?u)\b[a-zA-Z_][a-zA-Z0-9_]+\b",
        ngram_range=(1, 2),
        max_features=20000,
        norm="l2",
        use_idf=True,
        smooth_idf=True,
        sublinear_tf=True,
        max_df=max_df,
        min_df=int(min_df) if min_df >= 1 else min_df,
    )
    corpus = [f"{d.title} {d.abstract}" for d in edition.docs]
    return vectorizer.fit_transform(corpus).astype(np.float32)


def svm_scores(
    scenario: Scenario, edition: Edition, *, min_df: float = 5, max_df: float = 0.1
) -> Any:
    """arxiv-sanity-lite's SVM decision values for every paper, or None with no liked paper."""
    from sklearn.svm import LinearSVC

    liked = set(scenario.liked)
    if not liked:
        return None
    x = _tfidf(edition, min_df, max_df)
    y = np.array([1.0 if d.key in liked else 0.0 for d in edition.docs], dtype=np.float32)
    # arxiv-sanity leaves random_state unset; fixing it makes reruns print the same figures.
    clf = LinearSVC(
        class_weight="balanced", verbose=False, max_iter=10000, tol=1e-6, C=0.01, random_state=0
    )
    clf.fit(x, y)
    return clf.decision_function(x)


def svm(*, min_df: float = 5, max_df: float = 0.1) -> Method:
    """arxiv-sanity-lite's ranker as a method (its compute.py settings by default)."""

    def svm(scenario: Scenario, edition: Edition) -> list[str]:
        scores = svm_scores(scenario, edition, min_df=min_df, max_df=max_df)
        if scores is None:
            return []
        return _order([d.key for d in edition.docs], scores, positive_only=False)

    return svm


def _minmax(values: Any) -> Any:
    low, high = float(np.min(values)), float(np.max(values))
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def blend(*, upvote_weight: float | None = None, min_df: float = 5, max_df: float = 0.1) -> Method:
    """0.5 x the project's ranker + 0.5 x the SVM, each min-max normalised over unmarked papers."""

    def blend(scenario: Scenario, edition: Edition) -> list[str]:
        marked = scenario.marked
        keys = [d.key for d in edition.docs if d.key not in marked]
        ours = keyword_scores(scenario, edition, upvote_weight=upvote_weight)
        kw = _minmax(np.array([ours.get(k, 0.0) for k in keys]))
        raw = svm_scores(scenario, edition, min_df=min_df, max_df=max_df)
        if raw is None:
            sv = np.zeros(len(keys))
        else:
            by_key = dict(zip([d.key for d in edition.docs], raw, strict=True))
            sv = _minmax(np.array([by_key[k] for k in keys]))
        combined = 0.5 * kw + 0.5 * sv
        return _order(keys, combined, positive_only=True)

    return blend


def methods(
    *, upvote_weight: float | None = None, min_df: float = 5, max_df: float = 0.1
) -> dict[str, Method]:
    """The methods compared, by name, in the order the tables show them."""
    return {
        "ours": keyword_ranker(upvote_weight=upvote_weight),
        "bm25": bm25,
        "svm": svm(min_df=min_df, max_df=max_df),
        "blend": blend(upvote_weight=upvote_weight, min_df=min_df, max_df=max_df),
        "rocchio": rocchio(),
    }


def project_rankings(
    judged: JudgedSet, *, depth: int = max(DEPTHS), upvote_weight: float | None = None
) -> Rankings:
    """Every profile's top ``depth`` by the project's ranker for its keywords alone."""
    ours = keyword_ranker(upvote_weight=upvote_weight, depth=depth)
    return {s.profile: list(ours(s, judged.edition)) for s in judged.scenarios["keywords"]}


def bm25_rankings(judged: JudgedSet, *, depth: int = max(DEPTHS)) -> Rankings:
    """Every profile's top ``depth`` by plain BM25 for its keywords alone (ties: smaller id)."""
    return {s.profile: bm25(s, judged.edition)[:depth] for s in judged.scenarios["keywords"]}


def figures(judged: JudgedSet, rankings: Rankings) -> dict[str, tuple[float, float]]:
    """Profile id -> (nDCG@10, nDCG@20) of keyword-only rankings."""
    return {
        s.profile: score(s, rankings[s.profile], judged.grades[s.profile])
        for s in judged.scenarios["keywords"]
    }


def _table(judged: JudgedSet, kind: str, results: Sequence[Figures]) -> None:
    cols = " ".join(f"{f.method + '@10':>10} {f.method + '@20':>10}" for f in results)
    print(f"\n[{judged.name}] {KIND_LABELS[kind]}")
    print(f"{'profile':26} {cols}")
    for s in judged.scenarios[kind]:
        row = " ".join(
            f"{f.per_profile[s.profile][0]:10.3f} {f.per_profile[s.profile][1]:10.3f}"
            for f in results
        )
        print(f"{s.profile:26} {row}")
    print(f"{'mean':26} " + " ".join(f"{f.mean[0]:10.3f} {f.mean[1]:10.3f}" for f in results))


def _summary(results: Sequence[Figures], names: Sequence[str]) -> None:
    print("\nmean nDCG@20 (@10 in brackets)")
    print(f"{'set':10} {'scenario':10} " + " ".join(f"{n:>15}" for n in names))
    rows: dict[tuple[str, str], dict[str, Figures]] = {}
    for f in results:
        rows.setdefault((f.set, f.kind), {})[f.method] = f
    for (set_name, kind), by_method in rows.items():
        cells = []
        for n in names:
            at10, at20 = by_method[n].mean
            cells.append(f"{at20:.3f} ({at10:.3f})".rjust(15))
        print(f"{set_name:10} {kind:10} " + " ".join(cells))


def _targets(results: Sequence[Figures]) -> None:
    """The issue's bars for a learned ranker, from the reporting set's nDCG@20."""
    at20 = {(f.kind, f.method): f.mean[1] for f in results if f.set == "reporting"}
    if not at20:
        return
    print("\nbars for a new ranker on the reporting set (mean nDCG@20, issue 17):")
    for kind in ("a", "b"):
        baselines = {m: v for (k, m), v in at20.items() if k == kind and m != "ours"}
        if not baselines:
            continue
        best = max(baselines, key=lambda m: baselines[m])
        print(
            f"  scenario {kind}: best baseline {best} {baselines[best]:.3f} -> >= "
            f"{baselines[best] + 0.04:.3f}; svm {baselines['svm']:.3f} -> >= "
            f"{baselines['svm'] + 0.05:.3f}"
        )
    if ("keywords", "ours") in at20:
        ours = at20[("keywords", "ours")]
        print(f"  keywords alone: today's ranker {ours:.3f} -> >= {ours + 0.02:.3f}")


def main() -> None:
    """Print nDCG@10/@20 per profile and on average for every method, set and scenario kind."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--set", choices=(*SETS, "both"), default="both")
    parser.add_argument("--kind", choices=(*KINDS, "all"), default="all")
    parser.add_argument("--seeds", type=Path, default=SEEDS, help="folder of daily-papers-*.txt")
    parser.add_argument("--hf", type=Path, default=HF_PAPERS, help="folder of HF daily_papers")
    parser.add_argument("--upvote-weight", type=float, default=None, help="the ranker's default")
    parser.add_argument("--svm-min-df", type=float, default=5, help="arxiv-sanity: 5")
    parser.add_argument("--svm-max-df", type=float, default=0.1, help="arxiv-sanity: 0.1")
    args = parser.parse_args()
    names = tuple(SETS) if args.set == "both" else (args.set,)
    kinds = KINDS if args.kind == "all" else (args.kind,)
    sets = load_sets(args.seeds, hf=args.hf, names=names)
    compared = methods(
        upvote_weight=args.upvote_weight, min_df=args.svm_min_df, max_df=args.svm_max_df
    )

    print(f"$ {shlex.join([sys.executable, *sys.argv])}")
    for judged in sets.values():
        print(f"{judged.name}: {len(judged.docs)} papers, {len(judged.profiles)} profiles")
    results: list[Figures] = []
    for judged in sets.values():
        for kind in kinds:
            row = [evaluate(m, judged, kind, name=n) for n, m in compared.items()]
            _table(judged, kind, row)
            results += row
    _summary(results, list(compared))
    _targets(results)


if __name__ == "__main__":
    main()
